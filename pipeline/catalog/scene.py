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
    # more nodata: DN outside [lo, hi]; a mask band (href, 1-based index, nodata values) on
    # this band's grid
    valid_range: tuple[float, float] | None = None
    mask: tuple[str, int, tuple[int, ...]] | None = None
    # value = (DN * scale + offset) * cos(solar zenith)**sun_power + post_offset; sun_power is
    # 0 unless the scene has no sun elevation and the target needs one (computed per pixel)
    sun_power: int = 0
    post_offset: float = 0.0
    # the collection's signer ("package.module:callable", the workflow's ``signers``) that makes
    # a short-lived URL of ``href`` on the worker; how the pixels are fetched, not what they
    # are, so neither equality nor the ledger's scene token looks at it (as Scene.item_href)
    signer: str | None = field(default=None, compare=False)


QaRules = tuple[tuple[str, int, int, tuple[int, ...]], ...]


@dataclass(frozen=True, slots=True)
class QualitySource:
    """A quality asset and what its values say: ``rules`` (class, bit offset, bit length (0:
    the whole value), values), classes being cloud, shadow, nodata... (see
    :mod:`pipeline.kernels.qa`). A run masks the classes its workflow names."""

    asset: str
    href: str
    index: int
    dtype: str
    grid: RasterGrid
    rules: QaRules = ()
    resampling: str = "nearest"  # classes and bits are never interpolated
    signer: str | None = field(default=None, compare=False)  # as BandSource.signer

    @property
    def masked_values(self) -> tuple[int, ...]:
        """Whole values masked by the default mask classes (classification classes)."""
        from pipeline.kernels.qa import DEFAULT_MASK

        return tuple(
            sorted({v for c, _, n, vs in self.rules if n == 0 and c in DEFAULT_MASK for v in vs})
        )

    @property
    def bitfields(self) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
        """(offset, length, values) bit fields masked by the default mask classes."""
        from pipeline.kernels.qa import DEFAULT_MASK

        return tuple((o, n, vs) for c, o, n, vs in self.rules if n > 0 and c in DEFAULT_MASK)


@dataclass(frozen=True, slots=True)
class HarmonisationUse:
    """Which bandpass-adjustment set a scene's bands went through (for product lineage)."""

    name: str  # e.g. "hls-msi-to-oli"; "reference" when the scene is the reference sensor
    version: str
    to: str  # the reference sensor (profile name)
    platform: str
    adjusted: tuple[tuple[str, float, float], ...]  # (band, slope, intercept)
    unadjusted: tuple[str, ...]  # bands the set has no coefficient for (kept as they are)


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
    harmonisation: HarmonisationUse | None = None
    # the item's own link, for the products' STAC ``derived_from`` links; not what the pixels
    # depend on, so neither equality nor the ledger's scene token looks at it
    item_href: str | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        """The scene's identity, (collection, item id): an id alone may repeat across
        collections. Unique among a discovery's scenes (a second item with one collection/id
        is rejected as ``duplicate_id``), so markings are looked up by it, never by id."""
        return (self.collection, self.id)

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
