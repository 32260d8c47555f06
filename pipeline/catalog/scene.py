"""The scene model: what every item becomes after ingest. Frozen, small, picklable.

Records use ``__slots__``: 100 000 scenes of a large search stay a few hundred MB (measured by
``benchmarks/normalise.py``), and grids/strings that repeat are shared by normalisation.

Everything after ingest takes :class:`Scene` values, never raw STAC dicts. A scene knows, per
requested band, where its pixels are (href, band index, grid) and how to turn them into
reflectance (scale, offset, nodata), plus where its quality information is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True, slots=True)
class RasterGrid:
    """A raster's pixel grid. ``transform`` is the GDAL-ordered affine (a, b, c, d, e, f)."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]  # (height, width) == (y, x)


@dataclass(frozen=True, slots=True)
class BandSource:
    """One requested band of one scene: a band of an asset, and its calibration to reflectance."""

    band: str  # the common name asked for, e.g. "red"
    asset: str  # asset key in the item, e.g. "B04"
    href: str  # absolute path or URL, already checked against the allowed roots
    index: int  # 1-based band index inside the asset
    dtype: str  # numpy dtype name of the stored values
    nodata: float | None
    scale: float
    offset: float
    grid: RasterGrid
    resampling: str | None = None  # the sensor profile's choice; None: the workflow's


@dataclass(frozen=True, slots=True)
class QualitySource:
    """A quality asset and which of its values mask a pixel (cloud, shadow, fill...).

    ``masked_values`` lists whole values that mask (classification classes);
    ``bitfields`` lists (offset, length, masked field values) (classification bitfields).
    """

    asset: str
    href: str
    index: int
    dtype: str
    grid: RasterGrid
    masked_values: tuple[int, ...] = ()
    bitfields: tuple[tuple[int, int, tuple[int, ...]], ...] = ()
    resampling: str = "nearest"  # classes and bits are never interpolated


@dataclass(frozen=True, slots=True)
class Scene:
    """One acquisition of one provider, normalised. Times are UTC."""

    id: str
    collection: str
    provider: str
    datetime: dt.datetime
    footprint: BaseGeometry  # valid-data footprint, lon/lat (EPSG:4326)
    bands: tuple[BandSource, ...]  # in the order the workflow asked for them
    quality: tuple[QualitySource, ...] = ()
    platform: str | None = None
    sun_elevation: float | None = None  # degrees
    off_nadir: float | None = None  # degrees
    cloud_cover: float | None = None  # percent, as published
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def solar_day(self) -> dt.date:
        """The local solar date at the footprint's centre (UTC shifted by longitude / 15 h)."""
        lon = self.footprint.centroid.x
        return (self.datetime + dt.timedelta(hours=lon / 15.0)).date()


@dataclass(frozen=True)
class Reject:
    """An item (or source) that could not be used, with a stable reason code."""

    item_id: str
    collection: str | None
    reason: str
    message: str

    def as_dict(self) -> dict[str, str | None]:
        return {
            "item": self.item_id,
            "collection": self.collection,
            "reason": self.reason,
            "message": self.message,
        }
