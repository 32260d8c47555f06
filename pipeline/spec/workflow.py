"""The workflow spec: a YAML file, loaded safely and validated strictly.

Pydantic lives at this boundary only; everything after it works with the typed, frozen
:class:`WorkflowSpec`. Loose inputs (``datetime`` as a range string or a date, paths relative to
the spec file) are normalised here once.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.catalog.interval import parse_datetime_range
from pipeline.errors import InputError, SpecError
from pipeline.io.yamlfile import load_yaml_file
from pipeline.plan.extent import PlanLimits, grid_shape
from pipeline.spec.methods import SINGLE_SOURCE_METHODS

MAX_SPEC_BYTES = 256 * 1024
"""A workflow spec is a few hundred bytes; anything this large is refused before parsing."""

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
    def _bounds_ordered(cls, value: tuple[float, float, float, float] | None):
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

    @field_validator("max_task_memory", mode="before")
    @classmethod
    def _parse_size(cls, value: Any):
        if isinstance(value, str):
            match = _SIZE.match(value)
            if match is None:
                raise ValueError("a size is bytes or a number with B, KB, MB, GB, KiB, MiB, GiB")
            number, unit = match.groups()
            return int(float(number) * _UNITS[(unit or "").lower()])
        return value

    def plan_limits(self) -> PlanLimits:
        return PlanLimits(**self.model_dump())


class CubeProduct(_Strict):
    store: Path


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
    def _reference_exists(cls, value: str | None):
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


class WorkflowSpec(_Strict):
    """A validated workflow. Paths are absolute (resolved against the spec file's folder)."""

    version: Literal[1]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    catalog: str = Field(description="static catalog path/URL, or an http(s) STAC API root")
    collections: tuple[str, ...] | None = None
    datetime: tuple[dt.datetime | None, dt.datetime | None] | None = None
    bbox: tuple[float, float, float, float] | None = None
    bands: tuple[str, ...] = Field(min_length=1)
    grid: GridSpec
    products: Products
    allowed_roots: tuple[str, ...] | None = Field(
        default=None,
        description="folders/URL prefixes asset links may point into; default: the catalog's own",
    )
    limits: LimitsSpec = Field(
        default_factory=LimitsSpec,
        description="ceilings on grid pixels, tasks, time slots and per-task memory",
    )
    # ---- ingest (pipeline/catalog): search terms, sensor profile, mirrors; see docs/ingest.md
    intersects: dict[str, Any] | None = Field(
        default=None, description="area of interest as a GeoJSON (Multi)Polygon, lon/lat"
    )
    query: dict[str, dict[str, Any]] | None = Field(
        default=None, description="STAC API Query extension terms, e.g. {eo:cloud_cover: {lt: 20}}"
    )
    filter: dict[str, Any] | str | None = Field(
        default=None, description="CQL2 filter: CQL2-JSON mapping or CQL2-text string"
    )
    profile: str | None = Field(
        default=None, description="force this sensor profile (catalogs/profiles/NAME.yaml)"
    )
    href_mirrors: dict[str, str] | None = Field(
        default=None,
        description="asset href prefix -> local folder or URL holding the same files (trusted)",
    )
    quality_mask: bool = Field(
        default=True,
        description="mask pixels flagged by each scene's QA asset (false: keep cloudy pixels)",
    )
    # ---- radiometry (pipeline/catalog/sensors/constants.py; README "Radiometry")
    radiometry: RadiometrySpec = Field(
        default_factory=RadiometrySpec,
        description="target quantity, harmonisation to a reference sensor, quality classes to "
        "drop and cloud/shadow dilation",
    )
    # ---- releasability (pipeline/catalog/markings.py; README "Releasability")
    audience: AudienceSpec | None = Field(
        default=None,
        description="who sees the products; scenes whose marking does not admit it are withheld",
    )
    allow_unmarked: bool = Field(
        default=False, description="admit items without aquila:marking as open data"
    )
    classification_scale: tuple[str, ...] | None = Field(
        default=None, description="classification levels, lowest first (default: 4 levels)"
    )

    @field_validator("intersects")
    @classmethod
    def _intersects_area(cls, value: dict[str, Any] | None):
        if value is None:
            return value
        from shapely.geometry import shape

        try:
            geom = shape(value)
        except Exception as exc:  # noqa: BLE001 - shapely raises many kinds
            raise ValueError(f"intersects is not a GeoJSON geometry: {exc}") from None
        if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
            raise ValueError("intersects must be a GeoJSON Polygon or MultiPolygon (lon/lat)")
        return value

    @field_validator("filter")
    @classmethod
    def _filter_is_cql2(cls, value: dict[str, Any] | str | None):
        if value is None:
            return value
        import cql2

        try:
            cql2.Expr(value).validate()
        except Exception as exc:  # noqa: BLE001 - cql2 raises its own kinds
            raise ValueError(f"filter is not valid CQL2: {exc}") from None
        return value

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, value: str | None):
        if value is not None:
            from pipeline.catalog.sensors.profiles import load_profiles

            names = load_profiles().names()
            if value not in names:
                raise ValueError(f"no sensor profile {value!r}; available: {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _bbox_or_intersects(self) -> WorkflowSpec:
        if self.bbox is not None and self.intersects is not None:
            raise ValueError("give bbox or intersects, not both (STAC API item search rule)")
        return self

    @field_validator("datetime", mode="before")
    @classmethod
    def _parse_datetime(cls, value: Any):
        return parse_datetime_range(value) if value is not None else None

    @field_validator("bbox")
    @classmethod
    def _bbox_lonlat(cls, value: tuple[float, float, float, float] | None):
        if value is None:
            return value
        w, s, e, n = value
        if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90):
            raise ValueError("bbox is [west, south, east, north] in degrees (lon/lat)")
        return value

    @field_validator("bands")
    @classmethod
    def _bands_unique(cls, value: tuple[str, ...]):
        if len(set(value)) != len(value):
            raise ValueError("bands must not repeat")
        return value

    @property
    def is_api(self) -> bool:
        return self.catalog.startswith(("http://", "https://")) and not self.catalog.endswith(
            ".json"
        )


def load_spec(path: str | Path) -> WorkflowSpec:
    """Read, safely parse and strictly validate a workflow spec file."""
    path = Path(path)
    data = load_yaml_file(path, limit=MAX_SPEC_BYTES, what="workflow spec")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a workflow spec is a mapping of keys (version, name, ...)")
    return spec_from_dict(data, base_dir=path.parent.resolve(), source=str(path))


def spec_from_dict(data: dict[str, Any], *, base_dir: Path, source: str = "spec") -> WorkflowSpec:
    """Validate a spec mapping; relative paths are resolved against ``base_dir``."""
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_explain(exc, source)) from None
    _check_grid(spec, source)
    return _resolve_paths(spec, base_dir)


def _check_grid(spec: WorkflowSpec, source: str) -> None:
    """Given bounds are checked here, so ``aquila validate`` refuses what the run would: bounds
    that are not whole pixels (without grid.anchor) and grids beyond ``limits``."""
    g = spec.grid
    if g.bounds is None:
        return
    try:
        grid_shape(g.bounds, g.resolution, chunk=g.chunk, snapped=g.anchor is not None,
                   limits=spec.limits.plan_limits())
    except InputError as exc:  # SpecError or PlanTooLarge: the same error, naming the file
        raise type(exc)(f"{source}: {exc.message}") from None


def grid_summary(spec: WorkflowSpec) -> str:
    """One line for ``aquila validate``: the grid the run will write, and whether it moved from
    the bounds the spec gives (only with grid.anchor) or comes from the scenes."""
    from pipeline.plan.extent import fmt_bounds
    from pipeline.plan.grid import TargetGrid

    g = spec.grid
    if g.bounds is None:
        return (f"{g.crs} at {g.resolution:g}: bounds from the scenes' footprints, snapped "
                f"outward (anchor {g.anchor or 'edge'}); the run report records them")
    grid = TargetGrid.from_bounds(g.bounds, crs=g.crs, resolution=g.resolution, chunk=g.chunk,
                                  anchor=g.anchor, limits=spec.limits.plan_limits())
    ny, nx = grid.shape
    moved = tuple(grid.bounds) != tuple(g.bounds)
    how = f"snapped by grid.anchor {g.anchor}" if moved else "exactly grid.bounds"
    return (f"{ny} × {nx} px of {g.resolution:g} in {g.crs}, bounds "
            f"{fmt_bounds(grid.bounds)} ({how})")


def _resolve_paths(spec: WorkflowSpec, base_dir: Path) -> WorkflowSpec:
    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (base_dir / p).resolve()

    catalog = spec.catalog
    if "://" not in catalog:
        catalog = str(resolve(Path(catalog)))
    def moved(product):
        return product and product.model_copy(update={"store": resolve(product.store)})

    p = spec.products
    products = p.model_copy(
        update={
            "cube": moved(p.cube),
            "mosaic": moved(p.mosaic),
            "mosaics": tuple(moved(m) for m in p.mosaics),
        }
    )
    roots = spec.allowed_roots
    if roots is not None:
        roots = tuple(r if "://" in r else str(resolve(Path(r))) for r in roots)
    update = {"catalog": catalog, "products": products, "allowed_roots": roots}
    if spec.audience is not None and spec.audience.groups_file is not None:
        update["audience"] = spec.audience.model_copy(
            update={"groups_file": resolve(spec.audience.groups_file)}
        )
    if spec.href_mirrors:
        update["href_mirrors"] = {
            prefix: t if "://" in t else str(resolve(Path(t)))
            for prefix, t in spec.href_mirrors.items()
        }
    return spec.model_copy(update=update)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that a location (without its last element) points into."""
    model: type[BaseModel] | None = WorkflowSpec
    for part in loc:
        if model is None or not isinstance(part, str):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _model_of(field.annotation)
    return model


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: the workflow spec is not valid:"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            model = _model_at(loc[:-1])
            allowed = sorted(model.model_fields) if model else []
            hint = difflib.get_close_matches(key, allowed, n=1)
            line = f"  - unknown key {where!r}; allowed here: {', '.join(allowed)}"
            if hint:
                line += f" (did you mean {hint[0]!r}?)"
        elif err["type"] == "missing":
            line = f"  - missing required key {where!r}"
        else:
            line = f"  - {where}: {err['msg']} (got {err.get('input')!r})"
        lines.append(line)
    return "\n".join(lines)

