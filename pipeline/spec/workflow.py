"""The workflow spec: a YAML file, loaded safely and validated strictly.

Pydantic lives at this boundary only; everything after it works with the typed, frozen
:class:`WorkflowSpec`. Loose inputs (``datetime`` as a range string or a date, paths relative to
the spec file) are normalised here once. The models of the spec's sections (grid, limits,
products, radiometry, audience) live in :mod:`pipeline.spec.sections`.
"""

from __future__ import annotations

import datetime as dt
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.catalog.query import parse_datetime_range
from pipeline.errors import InputError, SpecError
from pipeline.io.signing import check_signer_name
from pipeline.io.yamlfile import load_yaml_file
from pipeline.plan.extent import grid_shape
from pipeline.spec.sections import (
    AudienceSpec,
    CubeProduct,
    GridSpec,
    LimitsSpec,
    MosaicProduct,
    Products,
    RadiometrySpec,
    _Strict,
)

MAX_SPEC_BYTES = 256 * 1024
"""A workflow spec is a few hundred bytes; anything this large is refused before parsing."""


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
    # the spec as written (validated, paths not yet resolved): what products record, so their
    # attributes carry no absolute path of the machine that ran the job
    _as_given: dict[str, Any] | None = PrivateAttr(default=None)
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
    signers: dict[str, str] | None = Field(
        default=None,
        description="collection id -> 'package.module:callable' that turns an asset href into "
        "a short-lived signed URL on the worker (e.g. the Planetary Computer's)",
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

    @field_validator("signers")
    @classmethod
    def _signer_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        """Only the import path's shape is checked here; the callable is imported on the
        worker that signs (the driver needs neither its package nor its secrets)."""
        for collection, name in (value or {}).items():
            if not collection:
                raise ValueError("signers: a collection id must not be empty")
            check_signer_name(name)
        return value

    @field_validator("intersects")
    @classmethod
    def _intersects_area(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        from shapely.errors import ShapelyError
        from shapely.geometry import shape

        try:
            geom = shape(value)
        # what shapely raises for a mapping that is not GeoJSON (measured by fuzzing shape())
        except (ShapelyError, AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"intersects is not a GeoJSON geometry: {type(exc).__name__}: {exc}"
            ) from exc
        if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
            raise ValueError("intersects must be a GeoJSON Polygon or MultiPolygon (lon/lat)")
        return value

    @field_validator("filter")
    @classmethod
    def _filter_is_cql2(
        cls, value: dict[str, Any] | str | None
    ) -> dict[str, Any] | str | None:
        if value is None:
            return value
        from pipeline.catalog.query import parse_filter

        try:
            parse_filter(value)
        except ValueError as exc:
            raise ValueError(f"filter is not valid CQL2: {exc}") from exc
        return value

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, value: str | None) -> str | None:
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
    def _parse_datetime(
        cls, value: Any
    ) -> tuple[dt.datetime | None, dt.datetime | None] | None:
        return parse_datetime_range(value) if value is not None else None

    @field_validator("bbox")
    @classmethod
    def _bbox_lonlat(
        cls, value: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if value is None:
            return value
        w, s, e, n = value
        if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90):
            raise ValueError("bbox is [west, south, east, north] in degrees (lon/lat)")
        return value

    @field_validator("bands")
    @classmethod
    def _bands_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("bands must not repeat")
        return value

    @property
    def is_api(self) -> bool:
        return self.catalog.startswith(("http://", "https://")) and not self.catalog.endswith(
            (".json", ".parquet", ".geoparquet")
        )


def spec_as_given(spec: WorkflowSpec) -> dict[str, Any]:
    """The spec as its file gave it (paths relative to the file, as written), for products'
    attributes; a spec built in code without a file gives its own (absolute) dump."""
    return dict(spec._as_given) if spec._as_given is not None else spec.model_dump(mode="json")


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
    spec._as_given = spec.model_dump(mode="json")
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


_Product = TypeVar("_Product", CubeProduct, MosaicProduct)


def _resolve_paths(spec: WorkflowSpec, base_dir: Path) -> WorkflowSpec:
    def resolve(p: Path) -> Path:
        if p.parts[:1] == ("s3:",):  # s3://b/k, folded by Path: a bucket, not a folder here
            return p
        return p if p.is_absolute() else (base_dir / p).resolve()

    catalog = spec.catalog
    if "://" not in catalog:
        catalog = str(resolve(Path(catalog)))

    def moved(product: _Product | None) -> _Product | None:
        return None if product is None else product.model_copy(
            update={"store": resolve(product.store)}
        )

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

