"""Radiometry against published references and hand arithmetic on the shared real corpus.

Each test builds a STAC item for real rasters and their real vendor metadata, normalises it like
a run (constants item → vendor file → profile, folded into one line) and reads it through the
chunk task's own path (:func:`pipeline.engine.chunk.read_scene`: the fused gather kernel) on the
raster's native grid, so every output pixel is exactly one input pixel.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import mapping

from pipeline.catalog.footprint import raster_footprint
from pipeline.catalog.items.normalise import normalise_doc
from pipeline.catalog.items.options import NormaliseOptions
from pipeline.catalog.sensors.context import RadiometryTarget
from pipeline.catalog.sensors.profiles import load_profiles
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.engine.chunk import read_scene
from pipeline.errors import SceneRejected
from pipeline.io.hrefs import HrefPolicy
from pipeline.io.reader import RasterReader
from pipeline.kernels.qa import decode_landsat_qa_pixel
from pipeline.kernels.toa import solar_zenith
from pipeline.plan.grid import ChunkGrid
from tests.conftest import SHARED_REAL

pytestmark = pytest.mark.skipif(
    not SHARED_REAL.is_dir(), reason=f"the shared real-data corpus is not at {SHARED_REAL}"
)

RIO_TOA = SHARED_REAL / "landsat/rio-toa-reference"
PDS = SHARED_REAL / "landsat/landsat-pds-c1-l1/LC08_L1TP_016037_20170813_20170814_01_RT"
PDS_ID = "LC08_L1TP_016037_20170813_20170814_01_RT"
HARVEY = (
    SHARED_REAL / "planet/hurricane-harvey-static-catalog/hurricane-harvey/"
    "hurricane-harvey-0831/20170831_172754_101c"
)
C2L2 = SHARED_REAL / "landsat/usgs-c2l2/LC08_L2SP_001062_20201031_20201106_02_T2"
ESA = SHARED_REAL / "sentinel2/esa-safe-metadata"


def _grid_of(path: Path) -> tuple[str, tuple, tuple[int, int]]:
    with rasterio.open(path) as ds:
        t = ds.transform
        return ds.crs.to_string(), (t.a, t.b, t.c, t.d, t.e, t.f), (ds.height, ds.width)


def _item(item_id: str, when: str, tif_assets: dict, other: dict, **props) -> dict:
    """A minimal STAC item over the first raster's footprint."""
    crs, transform, shape = _grid_of(next(iter(tif_assets.values()))[0])
    assets = {
        key: {
            "href": str(path),
            "type": "image/tiff; application=geotiff",
            "roles": ["data"],
            "eo:bands": [{"common_name": name}],
        }
        for key, (path, name) in tif_assets.items()
    }
    assets.update({k: {"href": str(p), "roles": ["metadata"]} for k, p in other.items()})
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "properties": {"datetime": when, **props},
        "geometry": mapping(raster_footprint(crs, transform, shape)),
        "assets": assets,
    }


def _scene(item: dict, bands, *, target: str = "reflectance", harmonize_to=None, roots=()):
    options = NormaliseOptions(
        policy=HrefPolicy.for_catalog("x", (str(SHARED_REAL), *map(str, roots))),
        profiles=load_profiles(),
        radiometry=RadiometryTarget(target, harmonize_to),
    )
    return normalise_doc(ItemDoc.from_dict(item), bands=bands, options=options)


def _native_chunk(path: Path) -> ChunkGrid:
    crs, transform, (h, w) = _grid_of(path)
    return ChunkGrid(0, 0, 0, 0, h, w, crs, transform)


def _read(scene, path: Path) -> np.ndarray:
    reader = RasterReader()
    try:
        out = read_scene(scene, _native_chunk(path), resampling="nearest", reader=reader)
    finally:
        reader.close()
    assert out is not None
    return out[0]


# --------------------------------------------------------------------------- rio-toa


def test_toa_reflectance_matches_the_rio_toa_reference():
    """rio-toa's ``tiny_..._B5_refl.TIF`` = 55000 × (M·DN + A) / sin E, float32, from the MTL.

    Tolerance, from the reference's own rounding: a least-squares fit of the reference against
    DN gives slope and intercept in the ratio of M : A exactly (to 3e-11), with sin E = 0.789406,
    i.e. an effective sun elevation of 52.13006°, 0.0011° above the MTL's SUN_ELEVATION
    52.12893938 that Aquila uses; the reference also stores float32 (half an ulp is 0.002 at
    5e4). So ours = ref × (1 + 1.53e-5) to within 0.004 + float32 of our own (6e-8 relative):
    |ours − ref| ≤ 1.6e-5 × |ref| + 0.004 (in ×55000 units), and the ratio is constant.
    """
    tif = RIO_TOA / "tiny_LC81390452014295LGN00_B5.TIF"
    item = _item(
        "LC81390452014295LGN00",
        "2014-10-22T04:37:48.705Z",
        {"B5": (tif, "nir08")},
        {"MTL.json": RIO_TOA / "LC81390452014295LGN00_MTL.json"},
        platform="landsat-8",
    )
    scene = _scene(item, ["nir08"])
    note = dict(scene.extra)["calibration"]
    # the item states no sun elevation: constants and sun both come from the MTL
    assert "REFLECTANCE_MULT/ADD" in note and "52.1289° from MTL SUN_ELEVATION" in note
    ours = _read(scene, tif)[0].astype(np.float64) * 55000
    reference = RIO_TOA / "tiny_LC81390452014295LGN00_B5_refl.TIF"
    with rasterio.open(tif) as a, rasterio.open(reference) as b:
        dn, ref = a.read(1), b.read(1).astype(np.float64)
    valid = dn > 0
    assert np.isnan(ours[~valid]).all()  # DN 0 is fill (rio-toa writes 1.0 there)
    assert np.all(np.abs(ours[valid] - ref[valid]) <= 1.6e-5 * np.abs(ref[valid]) + 0.004)
    # one constant factor (the sun elevation) and float32 rounding explain all of it: rio-toa
    # computes M·DN + A in float32 (|M·DN| <= 1: an ulp is 6e-8, x 55000 = 0.0033) and stores
    # float32; residuals of a single-factor fit stay within two such ulps
    k = np.median(ours[valid] / ref[valid])
    assert k == pytest.approx(1 + 1.53e-5, abs=1e-7)
    assert np.abs(ours[valid] / k - ref[valid]).max() <= 0.0066
    # the arithmetic itself, brightest pixel: 55000 * (2e-5 * 40705 - 0.1) / sin(52.12893938°)
    i = np.unravel_index(np.argmax(np.where(valid, dn, 0)), dn.shape)
    assert dn[i] == 40705
    assert ours[i] == pytest.approx(
        55000 * (2e-5 * 40705 - 0.1) / math.sin(math.radians(52.12893938)), rel=1e-7
    )


# --------------------------------------------------------------------------- Landsat C1 L1 by hand


def _pds_item(*, mtl: bool = True, sun: bool = True) -> dict:
    props = {"platform": "landsat-8"}
    if sun:
        props["view:sun_elevation"] = 62.17310472
    return _item(
        PDS_ID,
        "2017-08-13T15:54:15.788464Z",
        {"B4": (PDS / f"{PDS_ID}_B4.TIF", "red"), "B5": (PDS / f"{PDS_ID}_B5.TIF", "nir08")},
        {"MTL.txt": PDS / f"{PDS_ID}_MTL.txt"} if mtl else {},
        **props,
    )


PIXELS = [(100, 100), (128, 129), (40, 200), (200, 60)]


def test_landsat_c1_l1_pixels_converted_by_hand_from_the_mtl():
    """A few DN of bands 4 and 5 converted with the MTL constants written out here, agree with
    the kernel to 1e-6 (reflectance) and 1e-6 relative (radiance, W/(m² sr µm))."""
    # from LC08_L1TP_016037_20170813_20170814_01_RT_MTL.txt
    sun_elevation = 62.17310472
    refl_mult, refl_add = 2.0000e-05, -0.100000  # REFLECTANCE_MULT/ADD_BAND_4 and _5
    # RADIANCE_MULT/ADD_BAND_4 and _5
    rad = {"red": (9.7350e-03, -48.67504), "nir08": (5.9573e-03, -29.78670)}
    scene = _scene(_pds_item(), ["red", "nir08"])
    toa = _read(scene, PDS / f"{PDS_ID}_B4.TIF")
    radiance = _read(
        _scene(_pds_item(), ["red", "nir08"], target="radiance"), PDS / f"{PDS_ID}_B4.TIF"
    )
    for b, (name, band) in enumerate((("red", 4), ("nir08", 5))):
        with rasterio.open(PDS / f"{PDS_ID}_B{band}.TIF") as ds:
            dn = ds.read(1)
        for r, c in PIXELS:
            assert dn[r, c] > 0
            by_hand = (refl_mult * int(dn[r, c]) + refl_add) / math.sin(math.radians(sun_elevation))
            assert toa[b, r, c] == pytest.approx(by_hand, abs=1e-6)
            gain, bias = rad[name]
            assert radiance[b, r, c] == pytest.approx(gain * int(dn[r, c]) + bias, rel=1e-6)
    assert "MTL" in dict(scene.extra)["calibration"]


def test_landsat_without_a_sun_elevation_gets_a_per_pixel_solar_zenith():
    """No view:sun_elevation and no MTL: (DN × 2e-5 − 0.1) / cos θs with θs from the scene time
    and each pixel's lon/lat. At the pixel nearest the scene centre θs is within 0.02° of
    90° − SUN_ELEVATION (62.17310472°), and across the scene the per-pixel values follow the
    exact zenith at each pixel centre (computed here with pyproj, no node interpolation)."""
    scene = _scene(_pds_item(mtl=False, sun=False), ["red"])
    assert scene.bands[0].sun_power == -1
    assert "per pixel" in dict(scene.extra)["calibration"]
    tif = PDS / f"{PDS_ID}_B4.TIF"
    ours = _read(scene, tif)[0]
    crs, (a, _, c, _, e, f), (h, w) = _grid_of(tif)
    with rasterio.open(tif) as ds:
        dn = ds.read(1)
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    when = dt.datetime(2017, 8, 13, 15, 54, 15, 788464, tzinfo=dt.UTC)
    centre_zenith = solar_zenith(when, *to_ll.transform(c + a * w / 2, f + e * h / 2))
    assert centre_zenith == pytest.approx(90 - 62.17310472, abs=0.02)
    for r, col in [*PIXELS, (5, 5), (h - 6, w - 6)]:
        if dn[r, col] == 0:
            continue
        lon, lat = to_ll.transform(c + a * (col + 0.5), f + e * (r + 0.5))
        cos = math.cos(math.radians(solar_zenith(when, lon, lat)))
        assert ours[r, col] == pytest.approx((2e-5 * int(dn[r, col]) - 0.1) / cos, rel=2e-6)


# --------------------------------------------------------------------------- Planet


def test_planet_analytic_reflectance_and_radiance_from_the_metadata_xml():
    """PlanetScope 101c: TOA reflectance = DN × reflectanceCoefficient and radiance = DN ×
    radiometricScaleFactor (0.01) per band, from its AnalyticMS_metadata.xml, at every pixel
    (float32 of the float64 product: exact)."""
    import json

    doc = json.loads((HARVEY / "20170831_172754_101c.json").read_text())
    doc["links"] = [{"rel": "self", "href": str(HARVEY / "20170831_172754_101c.json")}]
    bands = ["blue", "green", "red", "nir"]
    coefficients = [1.81512636125e-05, 1.92266681265e-05, 2.14155262585e-05, 3.22221688359e-05]
    tif = HARVEY / "20170831_172754_101c_3B_AnalyticMS.tif"
    with rasterio.open(tif) as ds:
        dn = ds.read().astype(np.float64)
    valid = dn > 0
    for target, per_dn in (("reflectance", coefficients), ("radiance", [0.01] * 4)):
        got = _read(_scene(doc, bands, target=target), tif)
        want = (dn * np.asarray(per_dn)[:, None, None]).astype(np.float32)
        np.testing.assert_array_equal(got[valid], want[valid])
        assert np.isnan(got[~valid]).all()


# --------------------------------------------------------------------------- Sentinel-2 offset


def _s2_item(tmp_path: Path, props: dict, raster: dict | None, *, mtd: Path | None = None):
    tif = tmp_path / "B04.tif"
    if not tif.exists():
        dn = np.array([[[0, 1000, 1500, 11000]]], dtype=np.uint16)
        with rasterio.open(
            tif,
            "w",
            driver="GTiff",
            width=4,
            height=1,
            count=1,
            dtype="uint16",
            crs="EPSG:32632",
            nodata=0,
            transform=rasterio.transform.from_origin(500000, 5000000, 10, 10),
        ) as ds:
            ds.write(dn)
    asset = {"href": str(tif), "type": "image/tiff", "eo:bands": [{"common_name": "red"}]}
    if raster is not None:
        asset["raster:bands"] = [raster]
    item = _item(
        "S2B_MSIL2A_X",
        "2022-04-13T15:07:59Z",
        {"B04": (tif, "red")},
        {},
        constellation="sentinel-2",
        platform="sentinel-2b",
        **props,
    )
    item["assets"]["B04"] = asset
    if mtd is not None:
        item["assets"]["product_metadata"] = {"href": str(mtd), "roles": ["metadata"]}
    return item, tif


S2_CASES = {
    # (item properties, raster:bands, MTD file): the offset that must result
    "baseline 05.10, no raster:bands offset: the profile's -0.1": (
        {"s2:processing_baseline": "05.10"},
        {"scale": 1e-4},
        None,
        -0.1,
    ),
    "baseline 05.10, raster:bands offset -0.1: once, not -0.2": (
        {"s2:processing_baseline": "05.10"},
        {"scale": 1e-4, "offset": -0.1},
        None,
        -0.1,
    ),
    "Earth Search boa_offset_applied: DN already shifted, 0": (
        {"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True},
        {"scale": 1e-4, "offset": -0.1},
        None,
        0.0,
    ),
    "baseline 02.14: 0": ({"s2:processing_baseline": "02.14"}, {"scale": 1e-4}, None, 0.0),
    "DN only, MTD_MSIL2A 04.00 BOA_ADD_OFFSET -1000: -0.1 from the vendor file": (
        {},
        None,
        "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE",
        -0.1,
    ),
    "raster:bands offset -0.1 and the MTD's -1000: the item's, once": (
        {},
        {"scale": 1e-4, "offset": -0.1},
        "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE",
        -0.1,
    ),
    "DN only, MTD_MSIL1C 03.01 (no RADIO_ADD_OFFSET): 0": (
        {},
        None,
        "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248.SAFE",
        0.0,
    ),
}


@pytest.mark.parametrize("case", S2_CASES, ids=list(S2_CASES))
def test_sentinel2_baseline_04_offset_is_applied_exactly_once(tmp_path, case):
    props, raster, safe, offset = S2_CASES[case]
    mtd = None if safe is None else next((ESA / safe).glob("MTD_MSI*.xml"))
    item, tif = _s2_item(tmp_path, props, raster, mtd=mtd)
    scene = _scene(item, ["red"], roots=[tmp_path])
    assert (scene.bands[0].scale, scene.bands[0].offset) == (1e-4, offset)
    got = _read(scene, tif)[0, 0]
    # DN 0 is nodata; 1000, 1500, 11000 → DN / 10000 + offset, float32 of the float64 value
    np.testing.assert_array_equal(
        got[1:], np.float32(np.array([1000, 1500, 11000]) * 1e-4 + offset)
    )
    assert np.isnan(got[0])


def test_sentinel2_earth_search_items_resolve_the_offset_once():
    """The corpus' own Earth Search v1 items: sentinel-2-l2a with boa_offset_applied → 0;
    the sentinel-2-c1-l2a publication of the same acquisition (ESA's DN) → -0.1."""
    import json

    folder = SHARED_REAL / "sentinel2/earth-search-v1"
    want = {"S2B_24MUA_20250731_0_L2A.json": 0.0, "S2B_T24MUA_20250731T130245_L2A.json": -0.1}
    for name, offset in want.items():
        doc = ItemDoc.from_dict(
            json.loads((folder / name).read_text()), self_href=str(folder / name)
        )
        options = NormaliseOptions(
            policy=HrefPolicy.for_catalog("x", ("https://",)),
            profiles=load_profiles(),
            check_files=False,
        )
        scene = normalise_doc(doc, bands=["red"], options=options)
        assert scene.bands[0].offset == offset, name


# --------------------------------------------------------------------------- harmonisation


def test_harmonising_a_sentinel2_item_uses_the_hls_coefficients_of_its_platform(tmp_path):
    """S2B red: HLS v2.0 slope 0.9761, intercept 0.001 on (DN / 10000 − 0.1)."""
    item, tif = _s2_item(tmp_path, {"s2:processing_baseline": "05.10"}, {"scale": 1e-4})
    scene = _scene(item, ["red"], harmonize_to="landsat-8-9-oli", roots=[tmp_path])
    assert scene.harmonisation.name == "hls-msi-to-oli" and scene.harmonisation.version == "2.0"
    assert scene.harmonisation.adjusted == (("red", 0.9761, 0.001),)
    got = _read(scene, tif)[0, 0, 1:]
    want = 0.9761 * (np.array([1000, 1500, 11000]) * 1e-4 - 0.1) + 0.001
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    item["properties"]["platform"] = "sentinel-2c"  # HLS v2.0 has no S2C coefficients
    with pytest.raises(SceneRejected) as err:
        _scene(item, ["red"], harmonize_to="landsat-8-9-oli", roots=[tmp_path])
    assert err.value.reason == "no_harmonisation" and "sentinel-2c" in err.value.message


def test_surface_reflectance_cannot_become_at_sensor_radiance():
    """Landsat C2 L2 SR: target radiance is refused with a reason, the run would go on."""
    item = _item(
        "LC08_L2SP_001062_20201031_20201106_02_T2",
        "2020-10-31T14:31:47Z",
        {"SR_B4": (C2L2 / "LC08_L2SP_001062_20201031_20201106_02_T2_SR_B4.TIF", "red")},
        {"MTL.txt": C2L2 / "LC08_L2SP_001062_20201031_20201106_02_T2_MTL.txt"},
        platform="landsat-8",
    )
    assert _scene(item, ["red"]).bands[0].scale == 2.75e-05  # the MTL's L2 SR constants
    with pytest.raises(SceneRejected) as err:
        _scene(item, ["red"], target="radiance")
    assert err.value.reason == "no_calibration"
    assert "surface reflectance" in err.value.message and item["id"] in err.value.message


# --------------------------------------------------------------------------- QA_PIXEL


def test_published_qa_pixel_point_decodes_as_high_confidence_cloud():
    """rio-tiler-pds' point of LC08_L2SP_001062 holds QA_PIXEL 22280 at pixel (192, 188):
    bit 3 (cloud) and cloud confidence 11 (high); not fill, shadow, snow, water."""
    with rasterio.open(C2L2 / "LC08_L2SP_001062_20201031_20201106_02_T2_QA_PIXEL.TIF") as ds:
        qa = ds.read(1)
    assert qa[192, 188] == 22280
    masks = decode_landsat_qa_pixel(qa)
    assert masks["cloud"][192, 188] and not masks["shadow"][192, 188]
    assert not (masks["nodata"][192, 188] or masks["snow"][192, 188] or masks["water"][192, 188])
    assert (qa[192, 188] >> 8) & 3 == 3
    # every value of the real file: each class equals its bit (cloud: bits 1 or 3)
    v = qa.astype(np.int64)
    np.testing.assert_array_equal(masks["cloud"], ((v >> 1) & 1) | ((v >> 3) & 1) == 1)
    np.testing.assert_array_equal(masks["shadow"], (v >> 4) & 1 == 1)
    np.testing.assert_array_equal(masks["nodata"], v & 1 == 1)
