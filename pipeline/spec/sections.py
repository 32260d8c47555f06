"""The sections of a workflow spec below its top level: the grid, the limits, the products (cube,
mosaics and their methods' parameters), radiometry and the audience.

Pydantic models, strict (unknown keys refused, frozen, no inf/nan), assembled into
:class:`pipeline.spec.workflow.WorkflowSpec`; loading and validating a spec file is that
module's.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.plan.extent import PlanLimits
from pipeline.plan.methods import SINGLE_SOURCE_METHODS

Resampling = Literal["nearest", "bilinear", "cubic", "average"]
MosaicMethod = Literal[
    "median", "latest", "earliest", "priority", "mean", "min", "max", "percentile",
    "best-pixel", "quality", "medoid",
]


class _Strict(BaseModel):
    # allow_inf_nan=False: '.inf', '.nan' and '1e400' are refused for every number of the spec
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


PixelFraction = Annotated[float, Field(ge=0, lt=1)]


class GridSpec(_Strict):
    """The target grid: every product is on it. Units of the grid CRS (metres for UTM)."""

    crs: str = Field(description="target CRS, e.g. EPSG:32632")
    resolution: Annotated[float, Field(gt=0)] = Field(description="pixel size in CRS units")
    bounds: tuple[float, float, float, float] | None = Field(
        default=None, description="xmin, ymin, xmax, ymax in the grid CRS; default: union of scenes"
    )
    chunk: Annotated[int, Field(ge=64, le=8192)] = Field(
        default=1024, description="output chunk edge in pixels (one task per chunk)"
    )
    resampling: Resampling = "nearest"
    anchor: Literal["edge", "center"] | tuple[PixelFraction, PixelFraction] | None = Field(
        default=None,
        description="let odc-geo snap the bounds outward: 'edge' puts pixel edges on multiples "
        "of the resolution, 'center' pixel centres, [fx, fy] a pixel fraction; default: the "
        "bounds are kept exactly and must be whole pixels",
    )

    @field_validator("crs")
    @classmethod
    def _crs_parses(cls, value: str) -> str:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            CRS.from_user_input(value)
        except CRSError as exc:
            raise ValueError(f"{value!r} is not a CRS pyproj understands ({exc})") from None
        return value

    @field_validator("bounds")
    @classmethod
    def _bounds_ordered(
        cls, value: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if value is not None and not (value[0] < value[2] and value[1] < value[3]):
            raise ValueError("bounds are [xmin, ymin, xmax, ymax] with xmin < xmax, ymin < ymax")
        return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class LimitsSpec(_Strict):
    """Ceilings that make an absurd plan fail at once, naming the limit, instead of running for
    hours or exhausting memory. A real job above one raises it here."""

    max_pixels: Annotated[int, Field(ge=1)] = Field(
        default=PlanLimits.max_pixels, description="grid pixels, y × x"
    )
    max_tasks: Annotated[int, Field(ge=1)] = Field(
        default=PlanLimits.max_tasks,
        description="chunk tasks; the grid's chunk count is checked (each chunk may be a task)",
    )
    max_time_slots: Annotated[int, Field(ge=1)] = Field(
        default=PlanLimits.max_time_slots, description="time slots (collection × solar day)"
    )
    max_task_memory: Annotated[int, Field(ge=1)] = Field(
        default=PlanLimits.max_task_memory,
        description="bytes one chunk task may hold, e.g. 4GiB or 500MB (README 'Memory per "
        "task': T × B × (chunk + 2·halo)² × 4 for median, percentile, medoid and blend)",
    )
    stack_memory: Annotated[int, Field(ge=2**20)] = Field(
        default=48 * 2**20,
        description="bytes of time-slot stack one part of a chunk holds (median, percentile, "
        "medoid, blending): a chunk with a larger stack is computed in parts; more is a little "
        "faster and uses more memory per worker thread (README 'Memory per task')",
    )

    @field_validator("max_task_memory", "stack_memory", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _SIZE.match(value)
            if match is None:
                raise ValueError("a size is bytes or a number with B, KB, MB, GB, KiB, MiB, GiB")
            number, unit = match.groups()
            return int(float(number) * _UNITS[(unit or "").lower()])
        return value

    def plan_limits(self) -> PlanLimits:
        return PlanLimits(**self.model_dump(exclude={"stack_memory"}))


ZarrFormat = Literal["zarr3", "zarr2"]


class CubeProduct(_Strict):
    store: Path
    format: ZarrFormat = Field(
        "zarr3",
        description="zarr3 (default) or zarr2: Zarr v2 opens in GDAL < 3.11 and so in QGIS "
        "and rasterio's wheels (GDAL 3.10 cannot decode Zarr v3's 'bytes' codec)",
    )


class BestPixelSpec(_Strict):
    """Weights of the best-available-pixel score (each term is 0..1 before weighting)."""

    cloud: float = Field(1.0, ge=0, description="distance to the nearest masked pixel")
    sun: float = Field(0.2, ge=0, description="sun elevation / 90")
    view: float = Field(0.1, ge=0, description="1 - off-nadir / view_max")
    time: float = Field(0.5, ge=0, description="exp(-|days from target| / time_scale)")
    provider: float = Field(0.2, ge=0, description="1 / (1 + rank in 'priority')")
    cloud_distance_max: float = Field(50.0, gt=0, le=256, description="pixels; also the halo")
    view_max: float = Field(30.0, gt=0, description="degrees")
    time_scale: float = Field(30.0, gt=0, description="days")
    target_date: dt.date | None = Field(None, description="default: middle of 'datetime'")


class BlendSpec(_Strict):
    """Feather seams: weight each scene by its distance to its valid-data edge."""

    width: Annotated[int, Field(ge=1, le=256)] = Field(description="feather width in pixels")


class MosaicProduct(_Strict):
    store: Path
    format: ZarrFormat = Field(
        "zarr3",
        description="zarr3 (default) or zarr2: Zarr v2 opens in GDAL < 3.11 and so in QGIS "
        "and rasterio's wheels (GDAL 3.10 cannot decode Zarr v3's 'bytes' codec)",
    )
    method: MosaicMethod = "median"
    q: Annotated[float, Field(ge=0, le=100)] | None = Field(None, description="percentile q")
    priority: tuple[str, ...] | None = Field(
        None, description="collections, most preferred first (priority; best-pixel's provider term)"
    )
    key: str | None = Field(None, description="quality: 'ndvi' or a band name; highest wins")
    best_pixel: BestPixelSpec | None = None
    blend: BlendSpec | None = None

    @model_validator(mode="after")
    def _parameters_fit_the_method(self) -> MosaicProduct:
        m = self.method
        if (m == "percentile") != (self.q is not None):
            raise ValueError("'q' (0..100) goes with method 'percentile', and only with it")
        if m == "priority" and not self.priority:
            raise ValueError("method 'priority' needs 'priority': [collection, ...]")
        if (m == "quality") != (self.key is not None):
            raise ValueError("'key' ('ndvi' or a band) goes with method 'quality' only")
        if self.best_pixel is not None and m != "best-pixel":
            raise ValueError("'best_pixel' weights go with method 'best-pixel' only")
        if self.blend is not None and m not in SINGLE_SOURCE_METHODS:
            raise ValueError(
                f"'blend' needs a method that picks one observation per pixel: "
                f"{sorted(SINGLE_SOURCE_METHODS)}"
            )
        return self


MaskClass = Literal["nodata", "saturated", "cloud", "shadow", "cirrus", "snow", "water"]


class RadiometrySpec(_Strict):
    """What every band of every product holds, and which quality classes are dropped. Applied
    inside the fused chunk task (calibration folded into the one gather kernel): no extra pass."""

    target: Literal["reflectance", "radiance"] = Field(
        default="reflectance",
        description="reflectance (0-1: the provider's product level, or TOA computed from DN / "
        "radiance with the scene's sun, Earth-Sun distance and band ESUN) or radiance "
        "(at-sensor, W m-2 sr-1 um-1); a scene whose constants cannot give it is rejected "
        "(no_calibration)",
    )
    harmonize_to: str | None = Field(
        default=None,
        description="a reference sensor (sensor profile name, e.g. landsat-8-9-oli): each "
        "band gets its sensor's published bandpass adjustment (e.g. HLS v2.0 for "
        "Sentinel-2A/B -> OLI); products record the coefficient set; scenes of a sensor "
        "without one are rejected (no_harmonisation)",
    )
    mask: tuple[MaskClass, ...] = Field(
        default=("nodata", "saturated", "cloud", "shadow", "cirrus"),
        description="quality classes whose pixels are dropped (from QA_PIXEL bits, SCL classes, "
        "UDM bits or the item's classification:*); [] keeps every pixel the QA flags",
    )
    dilate: Annotated[int, Field(ge=0, le=64)] = Field(
        default=0, description="grow the cloud and shadow masks by this many pixels"
    )

    @field_validator("harmonize_to")
    @classmethod
    def _reference_exists(cls, value: str | None) -> str | None:
        if value is not None:
            from pipeline.catalog.sensors.profiles import load_profiles

            names = load_profiles().names()
            if value not in names:
                raise ValueError(
                    f"harmonize_to {value!r} is not a sensor profile; one of: {', '.join(names)}"
                )
        return value

    @model_validator(mode="after")
    def _reflectance_only(self) -> RadiometrySpec:
        if self.harmonize_to and self.target != "reflectance":
            raise ValueError("harmonize_to adjusts reflectance; it does not go with radiance")
        if len(set(self.mask)) != len(self.mask):
            raise ValueError("mask classes must not repeat")
        return self


class Products(_Strict):
    cube: CubeProduct | None = None
    mosaic: MosaicProduct | None = None
    mosaics: tuple[MosaicProduct, ...] = Field(
        default=(), description="more mosaics from the same reads (e.g. median and latest)"
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> Products:
        if self.cube is None and not self.all_mosaics:
            raise ValueError("ask for at least one product: 'cube' and/or 'mosaic'")
        stores = [m.store for m in self.all_mosaics] + ([self.cube.store] if self.cube else [])
        if len(set(stores)) != len(stores):
            raise ValueError("every product needs its own store")
        return self

    @property
    def all_mosaics(self) -> tuple[MosaicProduct, ...]:
        return ((self.mosaic,) if self.mosaic else ()) + self.mosaics


class AudienceSpec(_Strict):
    """Who sees the products: explicit codes, or a named group from a groups file."""

    releasable_to: tuple[str, ...] | None = Field(
        default=None, description="nation/organisation codes, e.g. [NLD, NOR]"
    )
    group: str | None = Field(default=None, description="a group name defined in groups_file")
    groups_file: Path | None = Field(
        default=None, description="YAML file: {groups: {NAME: [codes]}} (relative to the spec)"
    )
    clearance: str | None = Field(
        default=None, description="highest classification the audience may receive"
    )

    @model_validator(mode="after")
    def _one_way(self) -> AudienceSpec:
        if (self.releasable_to is None) == (self.group is None):
            raise ValueError("give 'releasable_to' or 'group' (with 'groups_file'), not both")
        if self.group is not None and self.groups_file is None:
            raise ValueError("'group' needs 'groups_file'")
        return self

