"""The scenes of a synthetic catalog: what determines one item's pixels (:class:`SyntheticScene`)
and the deterministic plan of every provider's scenes (:func:`plan_provider`).

A scene's parameters depend only on (seed, provider, scene index): dates in June 2025 at the
provider's overpass time, a raster extent a little larger than the area, a tilted swath edge,
clouds on about half the scenes with shadows cast away from the (NOAA-approximated) sun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import shapely
from rasterio.transform import Affine
from shapely.geometry import Polygon, box

from pipeline.demo.providers import ProviderSpec
from pipeline.demo.truth import AREA_CRS, from_area, transformer

__all__ = ["CloudDisc", "SyntheticScene", "grid_shape", "plan_provider"]

_MONTH_START = datetime(2025, 6, 1, tzinfo=UTC)
_MONTH_DAYS = 30

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
        return grid_shape(self.bounds, self.resolution)

    @property
    def qa_shape(self) -> tuple[int, int]:
        """(rows, cols) of the QA grid."""
        return grid_shape(self.bounds, self.qa_resolution)

    @property
    def transform(self) -> Affine:
        """Affine transform of the band grid (pixel corner -> ``crs`` metres)."""
        return Affine(self.resolution, 0.0, self.bounds[0], 0.0, -self.resolution, self.bounds[3])

    @property
    def qa_transform(self) -> Affine:
        """Affine transform of the QA grid."""
        r = self.qa_resolution
        return Affine(r, 0.0, self.bounds[0], 0.0, -r, self.bounds[3])


def grid_shape(bounds: tuple[float, float, float, float], res: float) -> tuple[int, int]:
    return round((bounds[3] - bounds[1]) / res), round((bounds[2] - bounds[0]) / res)


def _area_polygon_in(crs: str, area: tuple[float, float, float, float], step: float) -> Polygon:
    poly = shapely.segmentize(box(*area), step)
    if crs == AREA_CRS:
        return poly
    return shapely.transform(poly, lambda c: np.column_stack(from_area(crs, c[:, 0], c[:, 1])))


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


def plan_provider(
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
    lon, lat = transformer(AREA_CRS, "EPSG:4326").transform(cx, cy)
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
