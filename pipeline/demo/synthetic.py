"""Deterministic synthetic multi-provider STAC catalog with a known ground truth.

:func:`generate_catalog` writes a static, self-contained STAC catalog of three
"providers" (collections) with deliberately different conventions, whose
Cloud-Optimized GeoTIFF assets are rendered from one analytic surface
reflectance field, :func:`truth_reflectance`:

``north``
    Sentinel-2-L2A-like: EPSG:32632, 10 m, one single-band uint16 COG per band
    (``B02`` ``B03`` ``B04`` ``B08``), ``DN * 1e-4 - 0.1``, nodata 0; scene
    classification ``SCL`` (uint8, **20 m**, classification:classes);
    projection extension v1.1.0 (``proj:epsg``).
``south``
    Landsat-Collection-2-L2-like: EPSG:32632, 30 m, single-band uint16 COGs
    (``blue`` ``green`` ``red`` ``nir08``), ``DN * 2.75e-5 - 0.2``, nodata 0;
    ``qa_pixel`` (uint16 bit flags, classification:bitfields); projection
    extension v2.0.0 (``proj:code``).
``east``
    PlanetScope-like: **EPSG:32633** (the neighbouring UTM zone), 20 m, one
    4-band uint16 COG ``analytic`` (blue, green, red, nir), ``DN * 5e-5``,
    nodata 65535; ``udm`` (uint8, classification:classes); projection
    extension v1.1.0 (``proj:epsg``).

Every raster pixel value is a pure function of the pixel centre (transformed to
EPSG:32632 metres) and of the scene's parameters (:class:`SyntheticScene`):
the truth, darkened x0.5 inside cloud shadows, plus a thin additive haze
(:data:`HAZE_MAX` at a cloud's edge, fading linearly to 0 at :data:`HAZE_M`
metres from it), replaced by a bright textured cloud reflectance inside
clouds, and nodata beyond the scene's swath edge. The QA assets flag clouds
and shadows dilated by :data:`QA_DILATION_M` metres so that, after
nearest-neighbour resampling onto a 10 m grid, every cloudy band pixel is
covered by a flagged QA pixel; the haze is deliberately *not* flagged beyond
that ring (like the thin cloud edges real quality masks miss), so a QA-clear
pixel between ``QA_DILATION_M`` and ``HAZE_M`` from a cloud is brighter than
the truth by up to ``HAZE_MAX * (1 - QA_DILATION_M / HAZE_M)``.
:class:`SyntheticCatalog` exposes the same functions as oracles (``truth``,
``cloudy``, ``valid``, ``qa_clear``, ``pixel_reflectance``, ``hazy``,
``contamination``, ``clear_observations``) for end-to-end tests.

Units: coordinates in metres of the named CRS (EPSG:32632 unless stated);
reflectance is unitless surface reflectance (0..1); angles in degrees.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.transform import Affine
from shapely.geometry import Polygon, box, mapping
from shapely.geometry.polygon import orient

__all__ = [
    "AREA_CRS",
    "BANDS",
    "COG_MEDIA_TYPE",
    "HAZE_M",
    "HAZE_MAX",
    "PRESETS",
    "PROVIDERS",
    "QA_DILATION_M",
    "STAC_VERSION",
    "TRUTH_MAX_GRADIENT",
    "ALL_PROVIDERS",
    "CloudDisc",
    "DN_PROVIDERS",
    "HLS_V2_MSI_TO_OLI",
    "Preset",
    "ProviderSpec",
    "SyntheticCatalog",
    "SyntheticScene",
    "generate_catalog",
    "truth_gradient_bound",
    "truth_reflectance",
]

AREA_CRS = "EPSG:32632"
"""CRS of the target area, of :func:`truth_reflectance` and of cloud geometry."""

BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")
"""Common band names rendered by every provider."""

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

COG_DEFLATE_LEVEL = 4
"""DEFLATE level of the COGs: half the CPU of GDAL's default 6 for ~20 % larger files."""

QA_DILATION_M = 60.0
"""Metres by which clouds and shadows are dilated in the QA assets."""

TRUTH_MAX_GRADIENT = 3e-4
"""Upper bound of |grad truth_reflectance| for every band, reflectance per metre."""

SHADOW_FACTOR = 0.5
"""Band reflectance multiplier inside (undilated) cloud shadows."""

CLOUD_REFLECTANCE_RANGE = (0.55, 0.85)
"""Cloud reflectance is clipped into this range (all bands)."""

HAZE_M = 200.0
"""Reach (m) of the thin haze around every cloud: a band pixel outside all cloud discs
whose centre is d metres (0 < d <= HAZE_M) from the nearest disc edge gets additive
haze ``HAZE_MAX * (1 - d / HAZE_M)`` in every band. The QA assets do not flag it
beyond :data:`QA_DILATION_M`."""

HAZE_MAX = 0.012
"""Additive haze reflectance at a cloud's edge (all bands).

Chosen so that a per-pixel median over >= 2 observations of which at most one is
hazy still errs by <= HAZE_MAX / 2 = 0.006 < 0.01 (the issue-2 accuracy guarantee
of median composites), while a mosaic that picks a hazy observation errs by up to
0.012 -- measurably contaminated at a 0.003 threshold (haze > 0.003 within 150 m of
a cloud edge, i.e. also 90 m beyond the flagged ring)."""

_STAC_EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "proj-1.1.0": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "proj-2.0.0": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
}

_MONTH_START = datetime(2025, 6, 1, tzinfo=UTC)
_MONTH_DAYS = 30

# --------------------------------------------------------------------------- truth


@dataclass(frozen=True)
class _Wave:
    """A plane sinusoid ``amplitude * sin(k . (x, y) + phase)``; wavelength in metres."""

    amplitude: float
    wavelength_m: float
    angle_deg: float
    phase_rad: float

    @property
    def k(self) -> tuple[float, float]:
        """Wave vector (radians per metre) in x (east) and y (north)."""
        a = math.radians(self.angle_deg)
        w = 2.0 * math.pi / self.wavelength_m
        return w * math.cos(a), w * math.sin(a)


@dataclass(frozen=True)
class _Bump:
    """An isotropic gaussian ``amplitude * exp(-r^2 / (2 sigma^2))`` at (x0, y0) EPSG:32632 m."""

    amplitude: float
    x0: float
    y0: float
    sigma_m: float


@dataclass(frozen=True)
class _Field:
    base: float
    waves: tuple[_Wave, ...]
    bumps: tuple[_Bump, ...]


_TRUTH: dict[str, _Field] = {
    "blue": _Field(
        0.05,
        (_Wave(0.012, 5000.0, 20.0, 0.3), _Wave(0.008, 2600.0, 115.0, 1.1)),
        (_Bump(0.012, 507000.0, 5012000.0, 2500.0),),
    ),
    "green": _Field(
        0.08,
        (_Wave(0.020, 7000.0, 50.0, 0.0), _Wave(0.012, 3000.0, 160.0, 2.0)),
        (_Bump(0.015, 513000.0, 5006000.0, 2000.0),),
    ),
    "red": _Field(
        0.07,
        (_Wave(0.025, 4000.0, 75.0, 0.7), _Wave(0.012, 2200.0, 10.0, 2.5)),
        (_Bump(-0.015, 502500.0, 5002500.0, 1800.0),),
    ),
    "nir": _Field(
        0.30,
        (
            _Wave(0.080, 6000.0, 30.0, 0.5),
            _Wave(0.050, 2500.0, 100.0, 1.7),
            _Wave(0.030, 8000.0, 135.0, 0.9),
        ),
        (_Bump(0.080, 510000.0, 5010000.0, 3000.0),),
    ),
}


def truth_reflectance(band: str, x: NDArray[Any], y: NDArray[Any]) -> NDArray[np.float64]:
    """True surface reflectance (unitless) of ``band`` at EPSG:32632 coordinates.

    Args:
        band: one of :data:`BANDS` ("blue", "green", "red", "nir").
        x, y: easting / northing in EPSG:32632 metres; broadcastable arrays.

    Returns:
        float64 array of the broadcast shape. Constant in time, within
        [0.01, 0.6], with gradient magnitude <= :data:`TRUTH_MAX_GRADIENT`
        (3e-4 per metre) everywhere.
    """
    f = _TRUTH[band]
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    out = np.full(np.broadcast_shapes(xa.shape, ya.shape), f.base, dtype=np.float64)
    for w in f.waves:
        kx, ky = w.k
        out += w.amplitude * np.sin(kx * xa + ky * ya + w.phase_rad)
    for b in f.bumps:
        r2 = (xa - b.x0) ** 2 + (ya - b.y0) ** 2
        out += b.amplitude * np.exp(-r2 / (2.0 * b.sigma_m**2))
    return out


def _truth_grid(band: str, xs: NDArray[np.float64], ys: NDArray[np.float64]) -> NDArray[np.float64]:
    """:func:`truth_reflectance` on the grid ``ys[:, None] x xs[None, :]``, separably.

    Equal to ``truth_reflectance(band, xs[None, :], ys[:, None])`` up to float64
    rounding (~1e-15), about 10x cheaper for large grids.
    """
    f = _TRUTH[band]
    out = np.full((ys.size, xs.size), f.base, dtype=np.float64)
    for w in f.waves:
        kx, ky = w.k
        # sin(a + b) = sin(a) cos(b) + cos(a) sin(b), a = kx x, b = ky y + phase
        ay = ky * ys + w.phase_rad
        ax = kx * xs
        out += np.multiply.outer(w.amplitude * np.cos(ay), np.sin(ax))
        out += np.multiply.outer(w.amplitude * np.sin(ay), np.cos(ax))
    for b in f.bumps:
        gy = np.exp(-((ys - b.y0) ** 2) / (2.0 * b.sigma_m**2))
        gx = np.exp(-((xs - b.x0) ** 2) / (2.0 * b.sigma_m**2))
        out += np.multiply.outer(b.amplitude * gy, gx)
    return out


def truth_gradient_bound(band: str) -> float:
    """Analytic upper bound of |grad truth_reflectance(band)| in reflectance per metre."""
    f = _TRUTH[band]
    g = sum(abs(w.amplitude) * 2.0 * math.pi / w.wavelength_m for w in f.waves)
    # max |d/dr A exp(-r^2/2s^2)| = |A| exp(-1/2) / s at r = s
    g += sum(abs(b.amplitude) * math.exp(-0.5) / b.sigma_m for b in f.bumps)
    return g


# ------------------------------------------------------------------------ providers


@dataclass(frozen=True)
class ProviderSpec:
    """Conventions of one synthetic provider (one STAC collection).

    ``band_assets`` maps common band name -> (asset key, 1-based band index in
    that asset). ``dn = round((reflectance - offset) / scale)`` clipped to
    ``dn_range``; nodata pixels hold ``nodata``.
    """

    collection: str
    title: str
    crs: str
    resolution: float
    qa_resolution: float
    band_assets: dict[str, tuple[str, int]]
    band_names: dict[str, str]  # common name -> eo:bands name
    scale: float
    offset: float
    nodata: int
    dn_range: tuple[int, int]
    qa_key: str
    qa_dtype: str
    qa_nodata: int
    proj_version: str  # "1.1.0" (proj:epsg) or "2.0.0" (proj:code)
    transform_len: int  # 6 or 9 elements in proj:transform
    overpass_utc: tuple[int, int]  # (hour, minute)
    platforms: tuple[str, ...]
    constellation: str
    instruments: tuple[str, ...]
    max_off_nadir: float
    swath_sides: tuple[str, ...]  # cycled per scene: side of the area the swath edge cuts
    # how the DN -> value constants are published: "raster:bands" (in the item), "mtd" (DN only;
    # a Sentinel-2 MTD_MSIL1C.xml beside it) or "mtl" (DN only; a Landsat MTL.txt beside it)
    published: str = "raster:bands"
    common_names: tuple[tuple[str, str], ...] = ()  # band -> eo:bands common_name, if not band
    qa_style: str = ""  # "scl" | "qa_pixel" | "udm"; "" = by collection (north, south, east)
    sun_in_item: bool = True  # view:sun_elevation in the item (False: only in the MTL)


PROVIDERS: dict[str, ProviderSpec] = {
    "north": ProviderSpec(
        collection="north",
        title="North: Sentinel-2-L2A-like (synthetic)",
        crs="EPSG:32632",
        resolution=10.0,
        qa_resolution=20.0,
        band_assets={"blue": ("B02", 1), "green": ("B03", 1), "red": ("B04", 1), "nir": ("B08", 1)},
        band_names={"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"},
        scale=0.0001,
        offset=-0.1,
        nodata=0,
        dn_range=(1, 65535),
        qa_key="SCL",
        qa_dtype="uint8",
        qa_nodata=0,
        proj_version="1.1.0",
        transform_len=6,
        overpass_utc=(10, 20),
        platforms=("sentinel-2a", "sentinel-2b", "sentinel-2c"),
        constellation="sentinel-2",
        instruments=("msi",),
        max_off_nadir=6.0,
        swath_sides=("W", "E", "S", "N"),
    ),
    "south": ProviderSpec(
        collection="south",
        title="South: Landsat-Collection-2-L2-like (synthetic)",
        crs="EPSG:32632",
        resolution=30.0,
        qa_resolution=30.0,
        band_assets={
            "blue": ("blue", 1),
            "green": ("green", 1),
            "red": ("red", 1),
            "nir": ("nir08", 1),
        },
        band_names={"blue": "B2", "green": "B3", "red": "B4", "nir": "B5"},
        scale=2.75e-05,
        offset=-0.2,
        nodata=0,
        dn_range=(1, 65535),
        qa_key="qa_pixel",
        qa_dtype="uint16",
        qa_nodata=1,
        proj_version="2.0.0",
        transform_len=9,
        overpass_utc=(10, 5),
        platforms=("landsat-8", "landsat-9"),
        constellation="landsat",
        instruments=("oli", "tirs"),
        max_off_nadir=7.5,
        swath_sides=("E", "W", "N", "S"),
    ),
    "east": ProviderSpec(
        collection="east",
        title="East: PlanetScope-like (synthetic)",
        crs="EPSG:32633",
        resolution=20.0,
        qa_resolution=20.0,
        band_assets={
            "blue": ("analytic", 1),
            "green": ("analytic", 2),
            "red": ("analytic", 3),
            "nir": ("analytic", 4),
        },
        band_names={"blue": "b1", "green": "b2", "red": "b3", "nir": "b4"},
        scale=5e-05,
        offset=0.0,
        nodata=65535,
        dn_range=(0, 65534),
        qa_key="udm",
        qa_dtype="uint8",
        qa_nodata=255,
        proj_version="1.1.0",
        transform_len=6,
        overpass_utc=(9, 50),
        platforms=("2474", "24a3", "2483", "249b"),
        constellation="planetscope",
        instruments=("PSB.SD",),
        max_off_nadir=5.0,
        swath_sides=("S", "N", "E", "W"),
    ),
}
"""The three providers, keyed by collection id."""

DN_PROVIDERS: dict[str, ProviderSpec] = {
    "west": ProviderSpec(
        collection="west",
        title="West: Sentinel-2-L1C-like, DN only (synthetic)",
        crs="EPSG:32632",
        resolution=20.0,
        qa_resolution=20.0,
        band_assets={"blue": ("B02", 1), "green": ("B03", 1), "red": ("B04", 1), "nir": ("B8A", 1)},
        band_names={"blue": "B02", "green": "B03", "red": "B04", "nir": "B8A"},
        scale=0.0001,
        offset=-0.1,
        nodata=0,
        dn_range=(1, 65535),
        qa_key="cloud_mask",
        qa_dtype="uint8",
        qa_nodata=255,
        proj_version="1.1.0",
        transform_len=6,
        overpass_utc=(10, 25),
        platforms=("sentinel-2a", "sentinel-2b"),
        constellation="sentinel-2",
        instruments=("msi",),
        max_off_nadir=6.0,
        swath_sides=("N", "S", "W", "E"),
        published="mtd",
        common_names=(("nir", "nir08"),),
        qa_style="udm",
    ),
    "centre": ProviderSpec(
        collection="centre",
        title="Centre: Landsat-8/9-Level-1-like, DN only (synthetic)",
        crs="EPSG:32632",
        resolution=30.0,
        qa_resolution=30.0,
        band_assets={"blue": ("B2", 1), "green": ("B3", 1), "red": ("B4", 1), "nir": ("B5", 1)},
        band_names={"blue": "B2", "green": "B3", "red": "B4", "nir": "B5"},
        scale=2.0e-05,
        offset=-0.1,
        nodata=0,
        dn_range=(1, 65535),
        qa_key="qa_pixel",
        qa_dtype="uint16",
        qa_nodata=1,
        proj_version="2.0.0",
        transform_len=9,
        overpass_utc=(10, 10),
        platforms=("landsat-8", "landsat-9"),
        constellation="landsat",
        instruments=("oli", "tirs"),
        max_off_nadir=7.5,
        swath_sides=("S", "N", "E", "W"),
        published="mtl",
        common_names=(("nir", "nir08"),),
        qa_style="qa_pixel",
        sun_in_item=False,
    ),
}
"""Providers that publish DN only (generated on request: ``providers=``). Their items carry no
scale/offset; the constants are in a vendor metadata file beside the COGs. Their truth is TOA
reflectance as Landsat 8 OLI sees it: ``centre`` renders it as Level-1 DN, ``west`` renders the
MSI reflectance whose HLS v2.0 adjustment to OLI is the truth."""

ALL_PROVIDERS: dict[str, ProviderSpec] = {**PROVIDERS, **DN_PROVIDERS}
PROVIDER_INDEX = {name: i for i, name in enumerate(ALL_PROVIDERS)}  # RNG stream per provider

#: HLS v2.0 bandpass adjustment MSI -> OLI, copied from the published table
#: (https://hls.gsfc.nasa.gov/algorithms/bandpass-adjustment/): OLI = slope * MSI + intercept.
#: OLI NIR (B5) pairs with MSI B8A. Independent of the sensor profile that the pipeline reads.
# fmt: off
HLS_V2_MSI_TO_OLI: dict[str, dict[str, tuple[float, float]]] = {
    "sentinel-2a": {"blue": (0.9778, -0.004), "green": (1.0053, -0.0009),
                    "red": (0.9765, 0.0009), "nir": (0.9983, -0.0001)},
    "sentinel-2b": {"blue": (0.9778, -0.004), "green": (1.0075, -0.0008),
                    "red": (0.9761, 0.001), "nir": (0.9966, 0.0)},
}
# fmt: on

# QA encodings: value for (clear, shadow, cloud ring, cloud core, nodata)
_SCL = {"clear": 4, "shadow": 3, "cloud_ring": 8, "cloud_core": 9, "nodata": 0}
_QA_PIXEL = {"clear": 21824, "shadow": 23824, "cloud_ring": 22280, "cloud_core": 22280, "nodata": 1}
_UDM = {"clear": 0, "shadow": 2, "cloud_ring": 1, "cloud_core": 1, "nodata": 255}
_QA_CODES = {
    "north": _SCL,
    "south": _QA_PIXEL,
    "east": _UDM,
    "scl": _SCL,
    "qa_pixel": _QA_PIXEL,
    "udm": _UDM,
}


# -------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """A named catalog size: the target area (EPSG:32632 m) and scenes per provider."""

    name: str
    area_bounds: tuple[float, float, float, float]
    scenes_per_provider: int
    description: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny", (500000.0, 5000000.0, 504000.0, 5004000.0), 2, "4 km x 4 km, fast tests"
    ),
    "demo": Preset("demo", (500000.0, 5000000.0, 520000.0, 5020000.0), 4, "20 km x 20 km demo"),
    "medium": Preset(
        "medium", (500000.0, 5000000.0, 520000.0, 5020000.0), 12, "20 km x 20 km, 36 scenes"
    ),
}


# --------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class CloudDisc:
    """One disc of a cloud: centre (EPSG:32632 m) and radius (m). Clouds are unions of discs."""

    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class SyntheticScene:
    """Everything that determines one item's pixels.

    ``bounds`` are the raster bounds (xmin, ymin, xmax, ymax) in ``crs`` metres;
    the band grid is north-up with ``resolution`` m pixels, the QA grid has the
    same bounds and ``qa_resolution`` m pixels. ``swath`` = (a, b, c): a pixel is
    data iff ``a*X + b*Y + c >= 0`` at its centre (X, Y) in EPSG:32632 m ((a, b) is
    a unit normal, so a*X + b*Y + c is the signed distance in metres). ``clouds``
    are discs in EPSG:32632; shadows are the same discs shifted by
    ``shadow_offset`` (m). ``cloud_fraction`` is the fraction (0..1) of data band
    pixels whose centre lies in a cloud (``eo:cloud_cover`` / 100).
    """

    item_id: str
    collection: str
    datetime: datetime
    crs: str
    resolution: float
    bounds: tuple[float, float, float, float]
    clouds: tuple[CloudDisc, ...]
    cloud_fraction: float
    qa_resolution: float = 0.0
    swath: tuple[float, float, float] = (0.0, 0.0, 1.0)
    shadow_offset: tuple[float, float] = (0.0, 0.0)
    cloud_brightness: float = 0.68
    texture_phase: tuple[float, float] = (0.0, 0.0)
    platform: str = ""
    sun_elevation: float = 60.0
    sun_azimuth: float = 140.0
    off_nadir: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the band grid."""
        return _grid_shape(self.bounds, self.resolution)

    @property
    def qa_shape(self) -> tuple[int, int]:
        """(rows, cols) of the QA grid."""
        return _grid_shape(self.bounds, self.qa_resolution)

    @property
    def transform(self) -> Affine:
        """Affine transform of the band grid (pixel corner -> ``crs`` metres)."""
        return Affine(self.resolution, 0.0, self.bounds[0], 0.0, -self.resolution, self.bounds[3])

    @property
    def qa_transform(self) -> Affine:
        """Affine transform of the QA grid."""
        r = self.qa_resolution
        return Affine(r, 0.0, self.bounds[0], 0.0, -r, self.bounds[3])


def _grid_shape(bounds: tuple[float, float, float, float], res: float) -> tuple[int, int]:
    return round((bounds[3] - bounds[1]) / res), round((bounds[2] - bounds[0]) / res)


_tls = threading.local()


def _transformer(src: str, dst: str) -> Transformer:
    """A per-thread cached always_xy transformer (pyproj transformers are not thread-safe)."""
    cache: dict[tuple[str, str], Transformer] | None = getattr(_tls, "cache", None)
    if cache is None:
        cache = {}
        _tls.cache = cache
    key = (src, dst)
    if key not in cache:
        cache[key] = Transformer.from_crs(src, dst, always_xy=True)
    return cache[key]


def _to_area(crs: str, u: NDArray[Any], v: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Transform coordinates from ``crs`` to EPSG:32632 (identity for EPSG:32632)."""
    if crs == AREA_CRS:
        return np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    x, y = _transformer(crs, AREA_CRS).transform(u, v)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _from_area(crs: str, x: NDArray[Any], y: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Transform EPSG:32632 coordinates into ``crs``."""
    if crs == AREA_CRS:
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    u, v = _transformer(AREA_CRS, crs).transform(x, y)
    return np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)


# ---------------------------------------------------- pixel model (shared by oracles)


def _discs_mask(
    x: NDArray[Any],
    y: NDArray[Any],
    discs: Sequence[CloudDisc],
    extra: float,
    shift: tuple[float, float] = (0.0, 0.0),
) -> NDArray[np.bool_]:
    """Points (broadcastable x, y in EPSG:32632) within ``extra`` m of any (shifted) disc."""
    out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)), dtype=bool)
    for d in discs:
        r = d.radius + extra
        dx = x - (d.x + shift[0])
        dy = y - (d.y + shift[1])
        out |= dx * dx + dy * dy <= r * r
    return out


def _discs_mask_grid(
    xs: NDArray[np.float64],
    ys: NDArray[np.float64],
    discs: Sequence[CloudDisc],
    extra: float,
    shift: tuple[float, float] = (0.0, 0.0),
) -> NDArray[np.bool_]:
    """:func:`_discs_mask` on the grid ``ys[:, None] x xs[None, :]`` (xs ascending,
    ys descending), evaluated only inside each disc's bounding window."""
    out = np.zeros((ys.size, xs.size), dtype=bool)
    nys = -ys
    for d in discs:
        r = d.radius + extra
        cx, cy = d.x + shift[0], d.y + shift[1]
        c0 = np.searchsorted(xs, cx - r, side="left")
        c1 = np.searchsorted(xs, cx + r, side="right")
        r0 = np.searchsorted(nys, -(cy + r), side="left")
        r1 = np.searchsorted(nys, -(cy - r), side="right")
        if c0 >= c1 or r0 >= r1:
            continue
        dx = xs[c0:c1][None, :] - cx
        dy = ys[r0:r1][:, None] - cy
        out[r0:r1, c0:c1] |= dx * dx + dy * dy <= r * r
    return out


def _edge_distance(x: NDArray[Any], y: NDArray[Any], disc: CloudDisc) -> NDArray[np.float64]:
    """Signed distance (m) from EPSG:32632 points to the edge of ``disc`` (< 0 inside).

    The render path and the oracles both evaluate it through this function, element
    by element with the same operations, so their results are bit-identical."""
    dx = x - disc.x
    dy = y - disc.y
    return np.asarray(np.sqrt(dx * dx + dy * dy) - disc.radius, dtype=np.float64)


def _haze_from_distance(dist: NDArray[np.float64], cloud: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Additive haze reflectance for distances ``dist`` (m) to the nearest cloud-disc
    edge: ``HAZE_MAX * (1 - dist / HAZE_M)`` where 0 < dist <= HAZE_M and not ``cloud``,
    else 0."""
    hazy = ~cloud & (dist > 0.0) & (dist <= HAZE_M)
    out = np.zeros(dist.shape, dtype=np.float64)
    out[hazy] = HAZE_MAX * (1.0 - dist[hazy] / HAZE_M)
    return out


def _haze(
    x: NDArray[Any], y: NDArray[Any], discs: Sequence[CloudDisc], cloud: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Additive haze at EPSG:32632 points (broadcastable); ``cloud`` = the points inside
    ``discs`` (:func:`_discs_mask` with ``extra=0``) of the broadcast shape."""
    dist = np.full(np.broadcast_shapes(np.shape(x), np.shape(y)), np.inf)
    for d in discs:
        np.minimum(dist, _edge_distance(x, y, d), out=dist)
    return _haze_from_distance(dist, cloud)


def _haze_windows(
    us: NDArray[np.float64],
    vs: NDArray[np.float64],
    crs: str,
    res: float,
    discs: Sequence[CloudDisc],
) -> list[tuple[int, int, int, int] | None]:
    """Per disc, the (row0, row1, col0, col1) window of the grid with pixel centres
    ``us`` (ascending) x ``vs`` (descending) in ``crs`` that holds every pixel whose
    EPSG:32632 centre is within ``radius + HAZE_M`` of the disc's centre (None if empty).

    The window is the disc's EPSG:32632 bounding box (grown by ``HAZE_M`` and one
    pixel), transformed corner by corner into ``crs``: over a few km a straight
    edge bends by far less than a millimetre between neighbouring UTM zones, so the
    one-pixel margin makes the window a strict superset.
    """
    out: list[tuple[int, int, int, int] | None] = []
    nvs = -vs
    for d in discs:
        reach = d.radius + HAZE_M + res
        if crs == AREA_CRS:
            u0, v0, u1, v1 = d.x - reach, d.y - reach, d.x + reach, d.y + reach
        else:
            cu, cv = _from_area(
                crs,
                np.array([d.x - reach, d.x + reach, d.x + reach, d.x - reach]),
                np.array([d.y - reach, d.y - reach, d.y + reach, d.y + reach]),
            )
            u0, v0 = float(cu.min()) - res, float(cv.min()) - res
            u1, v1 = float(cu.max()) + res, float(cv.max()) + res
        c0 = int(np.searchsorted(us, u0, side="left"))
        c1 = int(np.searchsorted(us, u1, side="right"))
        r0 = int(np.searchsorted(nvs, -v1, side="left"))
        r1 = int(np.searchsorted(nvs, -v0, side="right"))
        out.append((r0, r1, c0, c1) if c0 < c1 and r0 < r1 else None)
    return out


def _haze_render(
    discs: Sequence[CloudDisc],
    windows: Sequence[tuple[int, int, int, int] | None],
    coords: Callable[[int, int, int, int], tuple[NDArray[Any], NDArray[Any]]],
    cloud: NDArray[np.bool_],
) -> tuple[tuple[slice, slice], NDArray[np.float64]] | None:
    """Haze of a rendered grid, computed only inside the discs' windows.

    ``coords(r0, r1, c0, c1)`` returns the EPSG:32632 pixel centres (x, y) of that
    window, broadcastable to its shape; ``cloud`` is the grid's cloud mask. Returns
    (the union window as a pair of slices, the haze there), or None without windows.
    Equal to :func:`_haze` at every pixel: a disc whose window misses a pixel is
    more than ``HAZE_M`` from it, so it cannot change a haze value.
    """
    wins = [(d, w) for d, w in zip(discs, windows, strict=True) if w is not None]
    if not wins:
        return None
    top = min(w[0] for _, w in wins)
    bottom = max(w[1] for _, w in wins)
    left = min(w[2] for _, w in wins)
    right = max(w[3] for _, w in wins)
    dist = np.full((bottom - top, right - left), np.inf)
    for d, (r0, r1, c0, c1) in wins:
        x, y = coords(r0, r1, c0, c1)
        sub = dist[r0 - top : r1 - top, c0 - left : c1 - left]
        np.minimum(sub, _edge_distance(x, y, d), out=sub)
    win = (slice(top, bottom), slice(left, right))
    return win, _haze_from_distance(dist, cloud[win])


def _valid_mask(scene: SyntheticScene, x: NDArray[Any], y: NDArray[Any]) -> NDArray[np.bool_]:
    """Data (not swath-cut) test at pixel centres x, y (EPSG:32632, broadcastable)."""
    a, b, c = scene.swath
    return np.asarray(a * x + b * y + c >= 0.0)


def _cloud_reflectance(
    scene: SyntheticScene, band: str, x: NDArray[Any], y: NDArray[Any]
) -> NDArray[np.float64]:
    """Bright, mildly textured cloud-top reflectance at EPSG:32632 points."""
    p1, p2 = scene.texture_phase
    band_offset = {"blue": 0.04, "green": 0.03, "red": 0.02, "nir": 0.0}[band]
    t = (
        scene.cloud_brightness
        + band_offset
        + 0.06 * np.sin(2.0 * math.pi * x / 1300.0 + p1) * np.cos(2.0 * math.pi * y / 1700.0 + p2)
    )
    return np.clip(t, *CLOUD_REFLECTANCE_RANGE)


def _apply_atmosphere(
    scene: SyntheticScene,
    band: str,
    refl: NDArray[np.float64],
    cloud: NDArray[np.bool_],
    shadow: NDArray[np.bool_],
    cloud_xy: tuple[NDArray[Any], NDArray[Any]],
) -> NDArray[np.float64]:
    """Darken shadows and replace cloud pixels (in place); ``cloud_xy`` = coords of ``cloud``.

    Haze (0 inside clouds) is added by the callers afterwards, before encoding."""
    refl[shadow & ~cloud] *= SHADOW_FACTOR
    if cloud_xy[0].size:
        refl[cloud] = _cloud_reflectance(scene, band, *cloud_xy)
    return refl


def _as_published(
    spec: ProviderSpec, scene: SyntheticScene, band: str, refl: NDArray[np.float64]
) -> NDArray[np.float64]:
    """What the provider's DN encode, from the (TOA, OLI-equivalent) reflectance: ``mtd``: the
    MSI reflectance that HLS adjusts to it; ``mtl``: Level-1 ρ·sin(sun elevation) (the MTL's
    REFLECTANCE_MULT/ADD give reflectance before the sun-angle correction); else itself."""
    if spec.published == "mtd":
        slope, intercept = HLS_V2_MSI_TO_OLI[scene.platform][band]
        return (refl - intercept) / slope
    if spec.published == "mtl":
        return refl * math.sin(math.radians(scene.sun_elevation))
    return refl


def _encode(spec: ProviderSpec, refl: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray:
    """Reflectance -> DN (uint16), nodata where not valid."""
    dn = np.rint((refl - spec.offset) / spec.scale)
    np.clip(dn, spec.dn_range[0], spec.dn_range[1], out=dn)
    out = dn.astype(np.uint16)
    out[~valid] = spec.nodata
    return out


def _encode_qa(
    spec: ProviderSpec,
    valid: NDArray[np.bool_],
    cloud_core: NDArray[np.bool_],
    cloud_dil: NDArray[np.bool_],
    shadow_dil: NDArray[np.bool_],
) -> NDArray:
    codes = _QA_CODES[spec.qa_style or spec.collection]
    qa = np.full(valid.shape, codes["clear"], dtype=spec.qa_dtype)
    qa[shadow_dil] = codes["shadow"]
    qa[cloud_dil] = codes["cloud_ring"]
    qa[cloud_core] = codes["cloud_core"]
    qa[~valid] = codes["nodata"]
    return qa


# ----------------------------------------------------------------------- rendering


@dataclass
class _Rendered:
    bands: dict[str, NDArray]  # common name -> uint16 DN (rows, cols)
    qa: NDArray
    cloud_fraction: float


def _render(scene: SyntheticScene, spec: ProviderSpec) -> _Rendered:
    """Rasterise one scene: DN arrays for every band and the QA array."""
    rows, cols = scene.shape
    x0, _, _, y1 = scene.bounds
    res = scene.resolution
    us = x0 + (np.arange(cols, dtype=np.float64) + 0.5) * res
    vs = y1 - (np.arange(rows, dtype=np.float64) + 0.5) * res
    d = QA_DILATION_M
    sh = scene.shadow_offset
    bands: dict[str, NDArray] = {}
    if scene.crs == AREA_CRS:
        valid = _valid_mask(scene, us[None, :], vs[:, None])
        cloud = _discs_mask_grid(us, vs, scene.clouds, 0.0)
        shadow = _discs_mask_grid(us, vs, scene.clouds, 0.0, sh)
        rr, cc = np.nonzero(cloud)
        cxy = (us[cc], vs[rr])
        haze = _haze_render(
            scene.clouds,
            _haze_windows(us, vs, scene.crs, res, scene.clouds),
            lambda r0, r1, c0, c1: (us[None, c0:c1], vs[r0:r1, None]),
            cloud,
        )
        for band in BANDS:
            refl = _apply_atmosphere(scene, band, _truth_grid(band, us, vs), cloud, shadow, cxy)
            if haze is not None:
                refl[haze[0]] += haze[1]
            bands[band] = _encode(spec, _as_published(spec, scene, band, refl), valid)
        qres = scene.qa_resolution
        qrows, qcols = scene.qa_shape
        qus = x0 + (np.arange(qcols, dtype=np.float64) + 0.5) * qres
        qvs = y1 - (np.arange(qrows, dtype=np.float64) + 0.5) * qres
        if qres == res:
            qvalid, qcore = valid, cloud
        else:
            qvalid = _valid_mask(scene, qus[None, :], qvs[:, None])
            qcore = _discs_mask_grid(qus, qvs, scene.clouds, 0.0)
        qa = _encode_qa(
            spec,
            qvalid,
            qcore,
            _discs_mask_grid(qus, qvs, scene.clouds, d),
            _discs_mask_grid(qus, qvs, scene.clouds, d, sh),
        )
    else:
        if scene.qa_resolution != res:  # pragma: no cover - no such provider
            raise NotImplementedError("QA grid must equal the band grid for non-area CRSs")
        uu, vv = np.meshgrid(us, vs)
        xx, yy = _to_area(scene.crs, uu, vv)
        del uu, vv
        valid = _valid_mask(scene, xx, yy)
        cloud = _discs_mask(xx, yy, scene.clouds, 0.0)
        shadow = _discs_mask(xx, yy, scene.clouds, 0.0, sh)
        cxy = (xx[cloud], yy[cloud])
        haze = _haze_render(
            scene.clouds,
            _haze_windows(us, vs, scene.crs, res, scene.clouds),
            lambda r0, r1, c0, c1: (xx[r0:r1, c0:c1], yy[r0:r1, c0:c1]),
            cloud,
        )
        for band in BANDS:
            refl = _apply_atmosphere(
                scene, band, truth_reflectance(band, xx, yy), cloud, shadow, cxy
            )
            if haze is not None:
                refl[haze[0]] += haze[1]
            bands[band] = _encode(spec, _as_published(spec, scene, band, refl), valid)
        qa = _encode_qa(
            spec,
            valid,
            cloud,
            _discs_mask(xx, yy, scene.clouds, d),
            _discs_mask(xx, yy, scene.clouds, d, sh),
        )
    n_valid = int(valid.sum())
    frac = float((cloud & valid).sum()) / n_valid if n_valid else 0.0
    return _Rendered(bands=bands, qa=qa, cloud_fraction=frac)


def _write_cog(
    path: Path,
    data: NDArray,
    transform: Affine,
    crs: str,
    nodata: float,
    *,
    categorical: bool = False,
) -> None:
    """Write a (count, rows, cols) or (rows, cols) array as a DEFLATE/predictor-2 COG
    with 512 px tiles.

    Overviews are left to the COG driver's default levels; categorical (QA) rasters
    get NEAREST overview resampling instead of the driver's default (CUBIC).
    """
    arr = data if data.ndim == 3 else data[None]
    opts: dict[str, Any] = {
        "driver": "COG",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "DEFLATE",
        "level": COG_DEFLATE_LEVEL,
        "predictor": 2,
        "blocksize": 512,
        "num_threads": "ALL_CPUS",
    }
    if categorical:
        opts["overview_resampling"] = "NEAREST"
    with rasterio.open(path, "w", **opts) as ds:
        ds.write(arr)


# ------------------------------------------------------------------------ geometry


def _area_polygon_in(crs: str, area: tuple[float, float, float, float], step: float) -> Polygon:
    poly = shapely.segmentize(box(*area), step)
    if crs == AREA_CRS:
        return poly
    return shapely.transform(poly, lambda c: np.column_stack(_from_area(crs, c[:, 0], c[:, 1])))


_FOOTPRINT_STEP_M = 1000.0
"""Densification step of item footprints (m): UTM<->lon/lat curvature error << 1 cm."""


def _valid_polygon(scene: SyntheticScene) -> Polygon:
    """Data footprint in EPSG:32632: raster extent intersected with the swath half-plane."""
    raster = box(*scene.bounds)
    if scene.crs != AREA_CRS:
        # straight 1 km edges in the neighbouring UTM zone bend by far less than 1 mm
        raster = shapely.transform(
            shapely.segmentize(raster, _FOOTPRINT_STEP_M),
            lambda c: np.column_stack(_to_area(scene.crs, c[:, 0], c[:, 1])),
        )
    a, b, c = scene.swath
    # the line point nearest the raster centre, the line direction, and the valid side +(a, b)
    centre = np.array(raster.centroid.coords[0])
    p0 = centre - (a * centre[0] + b * centre[1] + c) * np.array([a, b])
    t = np.array([-b, a])
    n = np.array([a, b])
    big = 1e6
    half = Polygon([p0 - big * t, p0 + big * t, p0 + big * t + big * n, p0 - big * t + big * n])
    poly = raster.intersection(half)
    if not isinstance(poly, Polygon):  # pragma: no cover - swath never misses the raster
        raise RuntimeError(f"unexpected footprint geometry for {scene.item_id}")
    return poly


def _lonlat_geometry(poly_area: Polygon) -> tuple[dict[str, Any], list[float]]:
    """EPSG:32632 polygon -> GeoJSON polygon in lon/lat (densified) and its bbox."""
    dense = shapely.segmentize(poly_area, _FOOTPRINT_STEP_M)
    ll = shapely.transform(
        dense,
        lambda c: np.round(
            np.column_stack(_transformer(AREA_CRS, "EPSG:4326").transform(c[:, 0], c[:, 1])), 9
        ),
    )
    ll = orient(ll, 1.0)
    geom = mapping(ll)
    geom = {
        "type": "Polygon",
        "coordinates": [[list(p) for p in ring] for ring in geom["coordinates"]],
    }
    return geom, [float(v) for v in ll.bounds]


# ------------------------------------------------------------------------ planning


def _sun_position(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """Approximate (NOAA) solar elevation and azimuth (degrees, azimuth clockwise from north)."""
    doy = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60.0 + when.second / 3600.0
    g = 2.0 * math.pi / 365.0 * (doy - 1 + (hour - 12.0) / 24.0)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    tst = hour * 60.0 + eqtime + 4.0 * lon
    ha = math.radians(tst / 4.0 - 180.0)
    phi = math.radians(lat)
    cosz = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cosz)))
    az = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return 90.0 - math.degrees(zen), (az + 180.0) % 360.0


def _align_out(bounds: tuple[float, float, float, float], step: float) -> tuple[float, ...]:
    x0, y0, x1, y1 = bounds
    return (
        math.floor(x0 / step) * step,
        math.floor(y0 / step) * step,
        math.ceil(x1 / step) * step,
        math.ceil(y1 / step) * step,
    )


_SIDE_NORMALS = {"W": (1.0, 0.0), "E": (-1.0, 0.0), "S": (0.0, 1.0), "N": (0.0, -1.0)}


def _swath(
    side: str, area: tuple[float, float, float, float], depth: float, tilt_deg: float
) -> tuple[float, float, float]:
    """Half-plane (a, b, c) cutting ``depth`` (fraction of the area size) off ``side``,
    tilted by ``tilt_deg``; valid where ``a*x + b*y + c >= 0``."""
    ax0, ay0, ax1, ay1 = area
    cx, cy = (ax0 + ax1) / 2, (ay0 + ay1) / 2
    nx, ny = _SIDE_NORMALS[side]
    size = (ax1 - ax0) if nx else (ay1 - ay0)
    p0 = (cx - nx * size * (0.5 - depth), cy - ny * size * (0.5 - depth))
    t = math.radians(tilt_deg)
    a = nx * math.cos(t) - ny * math.sin(t)
    b = nx * math.sin(t) + ny * math.cos(t)
    return a, b, -(a * p0[0] + b * p0[1])


def _plan_clouds(
    rng: np.random.Generator, area: tuple[float, float, float, float], fraction: float
) -> tuple[CloudDisc, ...]:
    """1-3 clusters of discs covering roughly ``fraction`` of the area (overlaps and
    clusters reaching beyond the area make the achieved fraction somewhat lower)."""
    ax0, ay0, ax1, ay1 = area
    total = fraction * (ax1 - ax0) * (ay1 - ay0)
    k = int(rng.integers(1, 4))
    big_r = 1.2 * math.sqrt(total / k / math.pi)
    discs: list[CloudDisc] = []
    for _ in range(k):
        cx = float(rng.uniform(ax0, ax1))
        cy = float(rng.uniform(ay0, ay1))
        discs.append(CloudDisc(cx, cy, 0.75 * big_r))
        for _ in range(int(rng.integers(3, 7))):
            ang = float(rng.uniform(0.0, 2.0 * math.pi))
            dist = float(rng.uniform(0.5, 0.9)) * big_r
            rad = float(rng.uniform(0.3, 0.55)) * big_r
            discs.append(CloudDisc(cx + dist * math.cos(ang), cy + dist * math.sin(ang), rad))
    return tuple(CloudDisc(round(d.x, 3), round(d.y, 3), round(d.radius, 3)) for d in discs)


def _item_id(spec: ProviderSpec, when: datetime, platform: str, index: int) -> str:
    if spec.collection == "north":
        return f"S2{platform[-1].upper()}_32TNR_{when:%Y%m%d}_{index}_L2A"
    if spec.collection == "south":
        proc = when + timedelta(days=9)
        return f"LC0{platform[-1]}_L2SP_194028_{when:%Y%m%d}_{proc:%Y%m%d}_02_T1"
    if spec.collection == "west":
        return f"S2{platform[-1].upper()}_MSIL1C_{when:%Y%m%dT%H%M%S}_N0510_R022_T32TNR_{index}"
    if spec.collection == "centre":
        proc = when + timedelta(days=8)
        return f"LC0{platform[-1]}_L1TP_194029_{when:%Y%m%d}_{proc:%Y%m%d}_02_T1"
    return f"{when:%Y%m%d_%H%M%S}_{index % 100:02d}_{platform}"


def _plan_provider(
    spec: ProviderSpec,
    provider_index: int,
    area: tuple[float, float, float, float],
    n: int,
    seed: int,
) -> list[SyntheticScene]:
    """Scene parameters (no pixels yet; ``cloud_fraction`` is filled in after rendering)."""
    prng = np.random.default_rng([seed, provider_index])
    days = prng.choice(_MONTH_DAYS, size=n, replace=n > _MONTH_DAYS)
    days = np.sort(days)
    ax0, ay0, ax1, ay1 = area
    size_x, size_y = ax1 - ax0, ay1 - ay0
    cx, cy = (ax0 + ax1) / 2, (ay0 + ay1) / 2
    lon, lat = _transformer(AREA_CRS, "EPSG:4326").transform(cx, cy)
    align = max(spec.resolution, spec.qa_resolution)
    # the area's bounding box in the provider's CRS
    base = area if spec.crs == AREA_CRS else _area_polygon_in(spec.crs, area, 100.0).bounds
    scenes: list[SyntheticScene] = []
    seen: set[str] = set()
    for i in range(n):
        rng = np.random.default_rng([seed, provider_index, i])
        hh, mm = spec.overpass_utc
        when = (
            _MONTH_START
            + timedelta(days=int(days[i]), hours=hh, minutes=mm)
            + timedelta(seconds=int(rng.integers(-360, 361)))
        )
        platform = str(spec.platforms[int(rng.integers(len(spec.platforms)))])
        m = rng.uniform(0.03, 0.12, size=4)
        raster = _align_out(
            (
                base[0] - m[0] * size_x,
                base[1] - m[1] * size_y,
                base[2] + m[2] * size_x,
                base[3] + m[3] * size_y,
            ),
            align,
        )
        side = spec.swath_sides[i % len(spec.swath_sides)]
        swath = _swath(side, area, float(rng.uniform(0.08, 0.28)), float(rng.uniform(-10, 10)))
        cloudy = (i + provider_index) % 2 == 1
        clouds = _plan_clouds(rng, area, float(rng.uniform(0.05, 0.40))) if cloudy else ()
        elev, az = _sun_position(when, lon, lat)
        height = float(rng.uniform(800.0, 2500.0))
        reach = height / math.tan(math.radians(elev))
        shadow = (
            round(-reach * math.sin(math.radians(az)), 3),
            round(-reach * math.cos(math.radians(az)), 3),
        )
        item_id = _item_id(spec, when, platform, i)
        if item_id in seen:
            item_id = f"{item_id}_{i}"
        seen.add(item_id)
        scenes.append(
            SyntheticScene(
                item_id=item_id,
                collection=spec.collection,
                datetime=when,
                crs=spec.crs,
                resolution=spec.resolution,
                bounds=(float(raster[0]), float(raster[1]), float(raster[2]), float(raster[3])),
                clouds=clouds,
                cloud_fraction=0.0,
                qa_resolution=spec.qa_resolution,
                swath=swath,
                shadow_offset=shadow,
                cloud_brightness=float(rng.uniform(0.62, 0.72)),
                texture_phase=(
                    float(rng.uniform(0, 2 * math.pi)),
                    float(rng.uniform(0, 2 * math.pi)),
                ),
                platform=platform,
                sun_elevation=round(elev, 4),
                sun_azimuth=round(az, 4),
                off_nadir=round(float(rng.uniform(0.0, spec.max_off_nadir)), 3),
            )
        )
    return scenes


# ---------------------------------------------------------------------------- STAC


def _proj_fields(spec: ProviderSpec, transform: Affine, shape: tuple[int, int]) -> dict[str, Any]:
    """``proj:shape`` [rows, cols] and ``proj:transform`` (6 or 9 affine coefficients)."""
    t = list(transform)[: spec.transform_len]
    return {"proj:shape": [shape[0], shape[1]], "proj:transform": [float(v) for v in t]}


def _qa_asset_fields(spec: ProviderSpec) -> dict[str, Any]:
    style = spec.qa_style or {"north": "scl", "south": "qa_pixel"}.get(spec.collection, "udm")
    if style == "scl":
        classes = [
            {"value": 0, "name": "no_data", "description": "No data", "nodata": True},
            {"value": 3, "name": "cloud_shadows", "description": "Cloud shadows"},
            {"value": 4, "name": "vegetation", "description": "Vegetation (clear)"},
            {"value": 8, "name": "cloud_medium_probability", "description": "Clouds, medium"},
            {"value": 9, "name": "cloud_high_probability", "description": "Clouds, high"},
        ]
        return {"title": "Scene classification map (SCL)", "classification:classes": classes}
    if style == "qa_pixel":

        def flag(name: str, offset: int, desc: str, nodata: bool = False) -> dict[str, Any]:
            yes: dict[str, Any] = {"value": 1, "name": name, "description": desc}
            if nodata:
                yes["nodata"] = True
            return {
                "name": name,
                "offset": offset,
                "length": 1,
                "description": desc,
                "classes": [{"value": 0, "name": f"not_{name}"}, yes],
            }

        bitfields = [
            flag("fill", 0, "Image or fill data", nodata=True),
            flag("cloud", 3, "High confidence cloud or not"),
            flag("cloud_shadow", 4, "High confidence cloud shadow or not"),
            flag("clear", 6, "Clear (no cloud, no dilated cloud) or not"),
        ]
        return {"title": "Pixel quality assessment band", "classification:bitfields": bitfields}
    classes = [
        {"value": 0, "name": "clear", "description": "Clear"},
        {"value": 1, "name": "cloud", "description": "Cloud"},
        {"value": 2, "name": "cloud_shadow", "description": "Cloud shadow"},
        {"value": 255, "name": "no_data", "description": "No data", "nodata": True},
    ]
    return {"title": "Usable data mask (UDM)", "classification:classes": classes}


_BAND_TITLES = {"blue": "Blue", "green": "Green", "red": "Red", "nir": "Near infrared"}

STAC_VERSION = "1.0.0"
"""``stac_version`` written into every catalog, collection and item."""


class _StacIO(pystac.stac_io.DefaultStacIO):
    """Default IO writing ``stac_version`` :data:`STAC_VERSION` (pystac writes its latest)."""

    def save_json(self, dest: Any, json_dict: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        d = dict(json_dict)
        d["stac_version"] = STAC_VERSION
        super().save_json(dest, d, *args, **kwargs)


def _build_item(scene: SyntheticScene, spec: ProviderSpec, rendered: _Rendered) -> pystac.Item:
    poly = _valid_polygon(scene)
    geometry, bbox = _lonlat_geometry(poly)
    epsg = int(scene.crs.split(":")[1])
    props: dict[str, Any] = {
        "platform": scene.platform,
        "constellation": spec.constellation,
        "instruments": list(spec.instruments),
        "gsd": spec.resolution,
        "eo:cloud_cover": round(100.0 * rendered.cloud_fraction, 2),
        "view:sun_elevation": scene.sun_elevation,
        "view:sun_azimuth": scene.sun_azimuth,
        "view:off_nadir": scene.off_nadir,
    }
    if not spec.sun_in_item:
        del props["view:sun_elevation"], props["view:sun_azimuth"]
    if spec.proj_version == "2.0.0":
        props["proj:code"] = scene.crs
    else:
        props["proj:epsg"] = epsg
    props.update(_proj_fields(spec, scene.transform, scene.shape))
    props["proj:bbox"] = [float(v) for v in scene.bounds]
    exts = [
        _STAC_EXT["eo"],
        _STAC_EXT["raster"],
        _STAC_EXT[f"proj-{spec.proj_version}"],
        _STAC_EXT["view"],
        _STAC_EXT["classification"],
    ]
    item = pystac.Item(
        id=scene.item_id,
        geometry=geometry,
        bbox=bbox,
        datetime=scene.datetime,
        properties=props,
        stac_extensions=exts,
        collection=spec.collection,
    )
    band_raster: dict[str, Any] = {"data_type": "uint16", "nodata": spec.nodata}
    if spec.published == "raster:bands":
        band_raster.update(scale=spec.scale, offset=spec.offset)
    common = dict(spec.common_names)
    assets: dict[str, list[str]] = {}
    for band in BANDS:
        key, _ = spec.band_assets[band]
        assets.setdefault(key, []).append(band)
    for key, bands in assets.items():
        fields: dict[str, Any] = {
            "eo:bands": [
                {"name": spec.band_names[b], "common_name": common.get(b, b)} for b in bands
            ],
            "raster:bands": [dict(band_raster) for _ in bands],
        }
        title = (
            f"{_BAND_TITLES[bands[0]]} ({spec.band_names[bands[0]]})"
            if len(bands) == 1
            else "Analytic surface reflectance (" + ", ".join(bands) + ")"
        )
        item.add_asset(
            key,
            pystac.Asset(
                href=f"./{key}.tif",
                media_type=COG_MEDIA_TYPE,
                title=title,
                roles=["data"],
                extra_fields=fields,
            ),
        )
    if spec.published != "raster:bands":
        name, title = _METADATA_FILES[spec.published]
        item.add_asset(
            _METADATA_ASSETS[spec.published],
            pystac.Asset(
                href=f"./{name}",
                media_type="text/plain" if name.endswith(".txt") else "application/xml",
                title=title,
                roles=["metadata"],
            ),
        )
    qa_fields: dict[str, Any] = _qa_asset_fields(spec)
    title = qa_fields.pop("title")
    qa_fields["raster:bands"] = [{"data_type": spec.qa_dtype, "nodata": spec.qa_nodata}]
    if scene.qa_resolution != scene.resolution:
        qa_fields.update(_proj_fields(spec, scene.qa_transform, scene.qa_shape))
    item.add_asset(
        spec.qa_key,
        pystac.Asset(
            href=f"./{spec.qa_key}.tif",
            media_type=COG_MEDIA_TYPE,
            title=title,
            roles=["data-mask"],
            extra_fields=qa_fields,
        ),
    )
    return item


def _write_scene(
    scene: SyntheticScene, spec: ProviderSpec, item_dir: Path
) -> tuple[SyntheticScene, pystac.Item]:
    """Render, write the COGs into ``item_dir`` and build the (unsaved) STAC item."""
    rendered = _render(scene, spec)
    scene = replace(scene, cloud_fraction=round(rendered.cloud_fraction, 6))
    item_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[str]] = {}
    for band in BANDS:
        groups.setdefault(spec.band_assets[band][0], []).append(band)
    for key, bands in groups.items():
        data = np.stack([rendered.bands[b] for b in bands])
        _write_cog(item_dir / f"{key}.tif", data, scene.transform, scene.crs, spec.nodata)
    _write_cog(
        item_dir / f"{spec.qa_key}.tif",
        rendered.qa,
        scene.qa_transform,
        scene.crs,
        spec.qa_nodata,
        categorical=True,
    )
    if spec.published != "raster:bands":
        name, _ = _METADATA_FILES[spec.published]
        text = _mtd_text(scene) if spec.published == "mtd" else _mtl_text(scene, spec)
        (item_dir / name).write_text(text, encoding="utf-8")
    return scene, _build_item(scene, spec, rendered)


_METADATA_FILES = {
    "mtd": ("MTD_MSIL1C.xml", "Product metadata (Sentinel-2 MTD_MSIL1C)"),
    "mtl": ("MTL.txt", "Level-1 metadata (Landsat MTL, ODL text)"),
}
_METADATA_ASSETS = {"mtd": "product_metadata", "mtl": "MTL.txt"}

# Sentinel-2A/2B SOLAR_IRRADIANCE (W/m²/µm) of real MTD files (bandId 0..12), and the bands
# Aquila reads from them; they only matter for a radiance target.
# fmt: off
_S2_SOLAR = {
    "sentinel-2a": (1884.69, 1959.66, 1823.24, 1512.06, 1424.64, 1287.61, 1162.08, 1041.63,
                    955.32, 812.92, 367.15, 245.59, 85.25),
    "sentinel-2b": (1874.3, 1959.75, 1824.93, 1512.79, 1425.78, 1291.13, 1175.57, 1041.28,
                    953.93, 817.58, 365.41, 247.08, 87.75),
}
# fmt: on
# OLI band solar irradiance used only to make the synthetic MTL's radiance rescaling consistent
# with its reflectance rescaling (RADIANCE_MULT = REFLECTANCE_MULT * ESUN / (pi d^2)); values of
# the Thuillier-based OLI ESUN often quoted (USGS publishes none for OLI).
_OLI_ESUN = {"blue": 2004.57, "green": 1820.75, "red": 1549.49, "nir": 951.76}


def _sun_distance(when: datetime) -> float:
    """Earth-Sun distance (AU), Spencer (1971) series: independent of the pipeline's NOAA one."""
    g = 2.0 * math.pi * (when.timetuple().tm_yday - 1) / 365.0
    inverse_sq = (
        1.000110
        + 0.034221 * math.cos(g)
        + 0.001280 * math.sin(g)
        + 0.000719 * math.cos(2 * g)
        + 0.000077 * math.sin(2 * g)
    )
    return 1.0 / math.sqrt(inverse_sq)


def _mtd_text(scene: SyntheticScene) -> str:
    """A minimal MTD_MSIL1C.xml in ESA's layout: baseline 05.10 quantification and offsets."""
    d = _sun_distance(scene.datetime)
    ns = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd"
    offsets = "".join(
        f'<RADIO_ADD_OFFSET band_id="{i}">-1000</RADIO_ADD_OFFSET>' for i in range(13)
    )
    solar = "".join(
        f'<SOLAR_IRRADIANCE bandId="{i}" unit="W/m²/µm">{v}</SOLAR_IRRADIANCE>'
        for i, v in enumerate(_S2_SOLAR[scene.platform])
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<n1:Level-1C_User_Product xmlns:n1="{ns}">'
        f"<n1:General_Info><Product_Info><PRODUCT_START_TIME>{scene.datetime:%Y-%m-%dT%H:%M:%S}"
        f".000Z</PRODUCT_START_TIME><PROCESSING_BASELINE>05.10</PROCESSING_BASELINE>"
        f"<PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE><Datatake><SPACECRAFT_NAME>Sentinel-"
        f"{scene.platform[-1].upper()}</SPACECRAFT_NAME></Datatake></Product_Info>"
        f'<Product_Image_Characteristics><QUANTIFICATION_VALUE unit="none">10000'
        f"</QUANTIFICATION_VALUE><Radiometric_Offset_List>{offsets}</Radiometric_Offset_List>"
        f"<Reflectance_Conversion><U>{1.0 / (d * d):.15f}</U><Solar_Irradiance_List>{solar}"
        f"</Solar_Irradiance_List></Reflectance_Conversion></Product_Image_Characteristics>"
        f"</n1:General_Info></n1:Level-1C_User_Product>\n"
    )


def _mtl_text(scene: SyntheticScene, spec: ProviderSpec) -> str:
    """A Collection 2 Level-1 MTL.txt (ODL) with the groups radiometry reads."""
    d = _sun_distance(scene.datetime)
    numbers = {b: spec.band_names[b][1:] for b in BANDS}
    files = "".join(
        f'    FILE_NAME_BAND_{numbers[b]} = "{spec.band_assets[b][0]}.tif"\n' for b in BANDS
    )
    rescaling = ""
    for b in BANDS:
        k = _OLI_ESUN[b] / (math.pi * d * d)
        rescaling += (
            f"    RADIANCE_MULT_BAND_{numbers[b]} = {spec.scale * k:.4E}\n"
            f"    RADIANCE_ADD_BAND_{numbers[b]} = {spec.offset * k:.5f}\n"
        )
    for b in BANDS:
        rescaling += (
            f"    REFLECTANCE_MULT_BAND_{numbers[b]} = {spec.scale:.4E}\n"
            f"    REFLECTANCE_ADD_BAND_{numbers[b]} = {spec.offset:.6f}\n"
        )
    t = scene.datetime
    return (
        "GROUP = LANDSAT_METADATA_FILE\n  GROUP = PRODUCT_CONTENTS\n"
        f'    LANDSAT_PRODUCT_ID = "{scene.item_id}"\n    PROCESSING_LEVEL = "L1TP"\n{files}'
        "  END_GROUP = PRODUCT_CONTENTS\n  GROUP = IMAGE_ATTRIBUTES\n"
        f'    SPACECRAFT_ID = "LANDSAT_{scene.platform[-1]}"\n'
        f"    DATE_ACQUIRED = {t:%Y-%m-%d}\n"
        f'    SCENE_CENTER_TIME = "{t:%H:%M:%S}.0000000Z"\n'
        f"    SUN_AZIMUTH = {scene.sun_azimuth:.8f}\n"
        f"    SUN_ELEVATION = {scene.sun_elevation:.8f}\n"
        f"    EARTH_SUN_DISTANCE = {d:.7f}\n"
        "  END_GROUP = IMAGE_ATTRIBUTES\n  GROUP = LEVEL1_RADIOMETRIC_RESCALING\n"
        f"{rescaling}  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING\n"
        "END_GROUP = LANDSAT_METADATA_FILE\nEND\n"
    )


# ------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class SyntheticCatalog:
    """A generated catalog plus oracles for its content.

    All oracle coordinates are EPSG:32632 metres (broadcastable arrays). The
    "pixel containing (x, y)" is the pixel of the scene's native grid (band grid,
    or QA grid for :meth:`qa_clear`) whose cell contains the point after
    transforming it into the scene's CRS -- what nearest-neighbour resampling
    onto a target grid with pixel centre (x, y) reads.
    """

    root: Path
    catalog_href: Path
    area_crs: str
    area_bounds: tuple[float, float, float, float]
    scenes: tuple[SyntheticScene, ...]
    preset: str = "demo"
    seed: int = 0

    def scene(self, item_id: str) -> SyntheticScene:
        """The scene of ``item_id`` (KeyError if unknown)."""
        for s in self.scenes:
            if s.item_id == item_id:
                return s
        raise KeyError(item_id)

    def truth(self, band: str, x: NDArray[Any], y: NDArray[Any]) -> NDArray[np.float64]:
        """True surface reflectance; same as :func:`truth_reflectance`."""
        return truth_reflectance(band, x, y)

    def cloudy(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where (x, y) lies inside that scene's (undilated) clouds."""
        return _discs_mask(
            np.asarray(x, float), np.asarray(y, float), self.scene(item_id).clouds, 0.0
        )

    def shadowed(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where (x, y) lies in that scene's (undilated) cloud shadow and not in a cloud."""
        s = self.scene(item_id)
        xa, ya = np.asarray(x, float), np.asarray(y, float)
        return _discs_mask(xa, ya, s.clouds, 0.0, s.shadow_offset) & ~_discs_mask(
            xa, ya, s.clouds, 0.0
        )

    def _centres(
        self, x: NDArray[Any], y: NDArray[Any], s: SyntheticScene, res: float
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
        """(inside raster, X, Y): centre of the pixel containing each point, in EPSG:32632."""
        xa, ya = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        u, v = _from_area(s.crs, xa, ya)
        rows, cols = _grid_shape(s.bounds, res)
        col = np.floor((u - s.bounds[0]) / res)
        row = np.floor((s.bounds[3] - v) / res)
        inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
        col = np.clip(col, 0, cols - 1)
        row = np.clip(row, 0, rows - 1)
        uc = s.bounds[0] + (col + 0.5) * res
        vc = s.bounds[3] - (row + 0.5) * res
        xc, yc = _to_area(s.crs, uc, vc)
        return inside, xc, yc

    def valid(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where the band pixel containing (x, y) holds data (not nodata)."""
        s = self.scene(item_id)
        inside, xc, yc = self._centres(x, y, s, s.resolution)
        return inside & _valid_mask(s, xc, yc)

    def qa_clear(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where the QA pixel containing (x, y) is data and flags neither cloud nor
        shadow (i.e. what a correct QA mask accepts)."""
        s = self.scene(item_id)
        inside, xc, yc = self._centres(x, y, s, s.qa_resolution)
        d = QA_DILATION_M
        flagged = _discs_mask(xc, yc, s.clouds, d) | _discs_mask(
            xc, yc, s.clouds, d, s.shadow_offset
        )
        return inside & _valid_mask(s, xc, yc) & ~flagged

    def pixel_reflectance(
        self, band: str, x: NDArray[Any], y: NDArray[Any], item_id: str
    ) -> NDArray[np.float64]:
        """Decoded value (DN * scale + offset) of the band pixel containing (x, y); NaN
        where that pixel is nodata or outside the raster. Includes shadows, clouds and
        the (unflagged) haze. Bit-identical to the COG except, at most, for float64
        rounding ties (probability ~1e-12 per pixel)."""
        s = self.scene(item_id)
        spec = ALL_PROVIDERS[s.collection]
        inside, xc, yc = self._centres(x, y, s, s.resolution)
        ok = inside & _valid_mask(s, xc, yc)
        cloud = _discs_mask(xc, yc, s.clouds, 0.0)
        shadow = _discs_mask(xc, yc, s.clouds, 0.0, s.shadow_offset)
        refl = _apply_atmosphere(
            s, band, truth_reflectance(band, xc, yc), cloud, shadow, (xc[cloud], yc[cloud])
        )
        refl += _haze(xc, yc, s.clouds, cloud)
        dn = _encode(spec, _as_published(spec, s, band, refl), ok)
        out = dn.astype(np.float64) * spec.scale + spec.offset
        out[~ok] = np.nan
        return out

    def toa_reflectance(
        self, band: str, x: NDArray[Any], y: NDArray[Any], item_id: str, *, harmonised: bool
    ) -> NDArray[np.float64]:
        """What a correct calibration makes of the band pixel containing (x, y) (NaN: nodata):
        for the DN-only providers the TOA reflectance from their published constants —
        ``centre``: (DN * 2e-5 - 0.1) / sin(sun elevation); ``west``: DN / 10000 - 0.1, the MSI
        reflectance, and with ``harmonised`` its HLS v2.0 adjustment to OLI, which equals the
        truth up to DN quantisation; the other providers: :meth:`pixel_reflectance`."""
        s = self.scene(item_id)
        spec = ALL_PROVIDERS[s.collection]
        value = self.pixel_reflectance(band, x, y, item_id)
        if spec.published == "mtl":
            return value / math.sin(math.radians(s.sun_elevation))
        if spec.published == "mtd" and harmonised:
            slope, intercept = HLS_V2_MSI_TO_OLI[s.platform][band]
            return value * slope + intercept
        return value

    def _haze_at(
        self, x: NDArray[Any], y: NDArray[Any], item_id: str
    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.float64]]:
        """(inside raster, cloud, haze) at the centre of the band pixel containing (x, y)."""
        s = self.scene(item_id)
        inside, xc, yc = self._centres(x, y, s, s.resolution)
        cloud = _discs_mask(xc, yc, s.clouds, 0.0)
        return inside, cloud, _haze(xc, yc, s.clouds, cloud)

    def hazy(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where the band pixel containing (x, y) is atmospherically contaminated:
        its centre is inside a cloud or gets haze > 0 (within :data:`HAZE_M` of a cloud
        edge). False outside the raster; swath nodata is not considered (combine with
        :meth:`valid`). Haze beyond :data:`QA_DILATION_M` is not flagged in QA, so
        ``hazy & qa_clear`` is where a QA-respecting mosaic can still be contaminated."""
        inside, cloud, haze = self._haze_at(x, y, item_id)
        return inside & (cloud | (haze > 0.0))

    def contamination(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.float64]:
        """Additive haze reflectance (0..:data:`HAZE_MAX`) of the band pixel containing
        (x, y): the budget of |observed - truth| there (before DN quantisation, i.e. up
        to scale / 2 more). 0 where there is no haze, NaN inside clouds (the value is
        cloud reflectance, unrelated to the truth) and outside the raster. In (QA-flagged)
        shadows the observation is ``SHADOW_FACTOR * truth + contamination``."""
        inside, cloud, haze = self._haze_at(x, y, item_id)
        haze[cloud | ~inside] = np.nan
        return haze

    def clear_observations(self, x: NDArray[Any], y: NDArray[Any]) -> NDArray[np.int64]:
        """Number of scenes whose band pixel is data and whose QA pixel is clear at (x, y)."""
        xa, ya = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        n = np.zeros(xa.shape, dtype=np.int64)
        for s in self.scenes:
            n += self.valid(xa, ya, s.item_id) & self.qa_clear(xa, ya, s.item_id)
        return n


MARKER = ".aquila-synthetic"
"""Written into a root before a generation's first file: what a later generation may replace."""


def _clear_root(root: Path) -> None:
    """Remove what a previous generation wrote (catalog.json, collection folders) only, and only
    where that generation was Aquila's: the root holds :data:`MARKER` (written before anything
    else, so a killed generation is recognised too) or a ``catalog.json`` carrying
    ``aquila:synthetic``. A root whose ``catalog.json`` or provider-named folders are someone
    else's is refused, and nothing is removed."""
    ours = [root / "catalog.json", *(root / name for name in ALL_PROVIDERS)]
    present = [p for p in ours if p.exists() or p.is_symlink()]
    if present and not _generated_here(root):
        from pipeline.errors import InputError

        raise InputError(
            f"{root} already holds {', '.join(p.name for p in present)}, not written by "
            "'aquila demo-catalog'; nothing was changed. Give an empty or new folder"
        )
    (root / MARKER).write_text("written by aquila demo-catalog; its next run may replace this\n")
    # Safe: the marker or an aquila:synthetic catalog.json proves a generation wrote these names
    # (checked above), and symlinks are unlinked, never followed.
    for p in present:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _generated_here(root: Path) -> bool:
    if (root / MARKER).is_file():
        return True
    try:
        doc = json.loads((root / "catalog.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "aquila:synthetic" in doc


def generate_catalog(
    root: Path | str,
    *,
    preset: str = "demo",
    seed: int = 0,
    area_bounds: tuple[float, float, float, float] | None = None,
    scenes_per_provider: int | None = None,
    workers: int = 1,
    providers: Sequence[str] | None = None,
) -> SyntheticCatalog:
    """Generate the synthetic catalog under ``root`` (created; previous output replaced).

    Args:
        root: output folder. Only ``catalog.json`` and the collection folders
            (``north``, ``south``, ``east``) are removed/rewritten; other files
            (e.g. a README) are kept.
        preset: a key of :data:`PRESETS` ("tiny", "demo", "medium").
        seed: RNG seed; the same (preset, seed, overrides) give identical JSON and pixels.
        area_bounds: override of the preset's target area (xmin, ymin, xmax, ymax),
            EPSG:32632 metres.
        scenes_per_provider: override of the preset's scene count per provider
            (>= 2 for each provider's union to cover the area).
        workers: number of forked worker processes rendering/writing scenes
            (default 1: in-process, no fork). Output does not depend on it.
        providers: collections to generate (default the three of :data:`PROVIDERS`; add
            ``west`` / ``centre`` of :data:`DN_PROVIDERS`, the DN-only ones). A provider's
            scenes do not depend on which others are generated.

    Returns:
        The :class:`SyntheticCatalog` (scene parameters and oracles).
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    area = tuple(float(v) for v in (area_bounds or p.area_bounds))
    if len(area) != 4 or not (area[0] < area[2] and area[1] < area[3]):
        raise ValueError(f"invalid area_bounds {area_bounds!r}")
    n = scenes_per_provider if scenes_per_provider is not None else p.scenes_per_provider
    if n < 1:
        raise ValueError("scenes_per_provider must be >= 1")
    names = tuple(providers) if providers is not None else tuple(PROVIDERS)
    unknown = [name for name in names if name not in ALL_PROVIDERS]
    if unknown or not names:
        raise ValueError(f"providers must be some of {list(ALL_PROVIDERS)}, got {list(names)}")
    specs = [ALL_PROVIDERS[name] for name in ALL_PROVIDERS if name in names]
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    _clear_root(root)

    jobs: list[tuple[SyntheticScene, ProviderSpec, Path]] = []
    for spec in specs:
        pi = PROVIDER_INDEX[spec.collection]
        for scene in _plan_provider(spec, pi, area, n, seed):  # type: ignore[arg-type]
            jobs.append((scene, spec, root / spec.collection / scene.item_id))
    if workers > 1:
        # rasterio holds the GIL while writing COGs, so parallelism needs processes
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
            results = list(pool.map(_write_scene, *zip(*jobs, strict=True)))
    else:
        results = [_write_scene(*j) for j in jobs]

    catalog = pystac.Catalog(
        id=f"aquila-synthetic-{preset}",
        title=f"Aquila synthetic catalog ({preset}, seed {seed})",
        description=(
            "Deterministic synthetic multi-provider catalog generated by "
            "pipeline.demo.synthetic.generate_catalog; pixel values are rendered from "
            "truth_reflectance() with synthetic clouds, shadows and swath edges."
        ),
        extra_fields={
            "aquila:synthetic": {
                "preset": preset,
                "seed": seed,
                "area_crs": AREA_CRS,
                "area_bounds": list(area),
                "scenes_per_provider": n,
                **({"providers": list(names)} if providers is not None else {}),
            }
        },
    )
    scenes: list[SyntheticScene] = []
    for spec in specs:
        mine = [(s, it) for s, it in results if s.collection == spec.collection]
        scenes.extend(s for s, _ in mine)
        bboxes = np.array([it.bbox for _, it in mine])
        extent = pystac.Extent(
            pystac.SpatialExtent(
                [
                    [
                        float(bboxes[:, 0].min()),
                        float(bboxes[:, 1].min()),
                        float(bboxes[:, 2].max()),
                        float(bboxes[:, 3].max()),
                    ]
                ]
            ),
            pystac.TemporalExtent(
                [[min(s.datetime for s, _ in mine), max(s.datetime for s, _ in mine)]]
            ),
        )
        coll = pystac.Collection(
            id=spec.collection,
            title=spec.title,
            description=f"{spec.title}: {spec.crs}, {spec.resolution:g} m, "
            + (
                f"DN * {spec.scale:g} + {spec.offset:g}"
                if spec.published == "raster:bands"
                else f"DN only (constants in {_METADATA_FILES[spec.published][0]})"
            )
            + f", nodata {spec.nodata}, QA asset '{spec.qa_key}'.",
            extent=extent,
            license="proprietary",
            summaries=pystac.Summaries(
                {
                    "platform": sorted({s.platform for s, _ in mine}),
                    "constellation": [spec.constellation],
                    "instruments": list(spec.instruments),
                    "gsd": [spec.resolution],
                }
            ),
        )
        for _, it in mine:
            coll.add_item(it)
        catalog.add_child(coll)
    catalog.normalize_hrefs(str(root))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=_StacIO())
    return SyntheticCatalog(
        root=root,
        catalog_href=root / "catalog.json",
        area_crs=AREA_CRS,
        area_bounds=area,  # type: ignore[arg-type]
        scenes=tuple(scenes),
        preset=preset,
        seed=seed,
    )
