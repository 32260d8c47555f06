"""``aquila catalog inspect``: what a contributor's catalog holds, before anyone trusts it.

Per collection: how many items were found and how many normalise, the sensor profile(s) that
applied, what each requested band resolves to (asset, band index, dtype, scale, offset, nodata
and where that band's own calibration came from), the pixel grids (sizes in their CRS's unit),
the quality asset each item is masked with (and the classes it masks), the formats of items that
hold no raster Aquila reads, every reject with its reason and message, and every duplicate
publication with the rule that chose between them. No pixel is read.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.catalog.dedupe import Duplicate, drop_duplicates
from pipeline.catalog.discover import collect
from pipeline.catalog.items.formats import READS, asset_format, has_readable_asset
from pipeline.catalog.items.options import NormaliseOptions
from pipeline.catalog.query import SearchQuery
from pipeline.catalog.scene import Reject, Scene
from pipeline.catalog.sensors.profiles import load_profiles
from pipeline.catalog.source import iter_docs
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.catalog.units import pixel_size_text
from pipeline.io.hrefs import HrefPolicy
from pipeline.kernels.qa import DEFAULT_MASK, MASK_CLASSES

DEFAULT_BANDS = ("blue", "green", "red", "nir")


@dataclass(frozen=True)
class BandUse:
    """How many items resolve one band to the same asset and calibration."""

    band: str
    asset: str
    index: int
    dtype: str
    scale: float
    offset: float
    nodata: float | None
    calibration: str
    items: int


_Use = tuple[str, str, int, str, float, float, float | None, str]  # a BandUse's key


@dataclass(frozen=True)
class GridUse:
    """How many items have bands on rasters of one CRS and pixel size (in the CRS's unit)."""

    crs: str
    pixel: str  # e.g. "10 m", "0.00025°"
    items: int


@dataclass(frozen=True)
class QualityUse:
    """How many items are masked with one quality asset, and what it masks. ``asset`` is
    ``"(none)"`` for items with no quality asset (only nodata is masked)."""

    asset: str
    dtype: str
    masks: tuple[str, ...]  # classes a run masks by default (DEFAULT_MASK)
    also: tuple[str, ...]  # classes it knows, masked only if the workflow's radiometry.mask asks
    items: int


@dataclass(frozen=True)
class Unreadable:
    """Items that hold no raster Aquila reads: how many, and the formats they hold instead
    (format (media type or suffix) → items holding it)."""

    items: int
    formats: tuple[tuple[str, int], ...]
    reads: str = READS


@dataclass(frozen=True)
class CollectionSummary:
    collection: str
    providers: tuple[str, ...]
    profiles: tuple[str, ...]
    found: int
    normalised: int
    bands: tuple[BandUse, ...]
    rejects: tuple[Reject, ...]
    duplicates: tuple[Duplicate, ...]
    grids: tuple[GridUse, ...] = ()
    quality: tuple[QualityUse, ...] = ()
    unreadable: Unreadable | None = None


@dataclass(frozen=True)
class Inspection:
    sources: tuple[str, ...]
    bands: tuple[str, ...]
    items_found: int
    collections: tuple[CollectionSummary, ...]
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources": list(self.sources),
            "bands": list(self.bands),
            "items_found": self.items_found,
            "normalised": sum(c.normalised for c in self.collections),
            "rejected": sum(len(c.rejects) for c in self.collections),
            "notes": list(self.notes),
            "collections": [
                {
                    "collection": c.collection,
                    "providers": list(c.providers),
                    "profiles": list(c.profiles),
                    "found": c.found,
                    "normalised": c.normalised,
                    "bands": [asdict(b) for b in c.bands],
                    "grids": [asdict(g) for g in c.grids],
                    "quality": [asdict(q) for q in c.quality],
                    "unreadable": asdict(c.unreadable) if c.unreadable else None,
                    "rejects": [r.as_dict() for r in c.rejects],
                    "duplicates": [d.as_dict() for d in c.duplicates],
                }
                for c in self.collections
            ],
        }


def inspect_sources(
    sources: Sequence[str],
    *,
    bands: Sequence[str] = DEFAULT_BANDS,
    query: SearchQuery | None = None,
    allowed_roots: Sequence[str] | None = None,
    mirrors: Sequence[tuple[str, str]] = (),
    profile: str | None = None,
    check_files: bool = True,
) -> Inspection:
    """Search and normalise every source exactly as a run would, and summarise."""
    query = query or SearchQuery()
    notes: list[str] = []
    scenes: list[Scene] = []
    rejects: list[Reject] = []
    found_by: Counter[str] = Counter()
    unreadable: dict[str, Counter[str]] = defaultdict(Counter)
    total = 0
    profiles = load_profiles()
    if profile:
        profiles.get(profile)
    for source in sources:
        policy = HrefPolicy.for_catalog(source, tuple(allowed_roots) if allowed_roots else None)
        if mirrors:
            policy = HrefPolicy(
                policy.roots + HrefPolicy.for_catalog("x", tuple(t for _, t in mirrors)).roots
            )
        options = NormaliseOptions(
            policy=policy,
            profiles=profiles,
            profile=profile,
            mirrors=tuple(mirrors),
            check_files=check_files,
        )
        counted = _counting(
            iter_docs(source, query, notify=notes.append, policy=policy), found_by, unreadable
        )
        s, r, n = collect(counted, bands=bands, options=options)
        scenes += s
        rejects += r
        total += n
    kept, duplicates = drop_duplicates(scenes)
    return Inspection(
        tuple(sources),
        tuple(bands),
        total,
        _summaries(kept, scenes, rejects, duplicates, found_by, unreadable),
        tuple(notes),
    )


def _counting(entries, found_by: Counter[str], unreadable: dict[str, Counter[str]]):
    """The entries, counted per collection; an item holding no raster Aquila reads is tallied
    by the formats it holds (the key ``""`` counts such items)."""
    for entry in entries:
        found_by[_collection_of(entry)] += 1
        if isinstance(entry, ItemDoc) and not has_readable_asset(entry.assets):
            tally = unreadable[_collection_of(entry)]
            tally[""] += 1
            formats = {asset_format(a) for a in entry.assets.values() if isinstance(a, dict)}
            tally.update({f"{f.name} ({f.evidence})" for f in formats})
        yield entry


def _collection_of(entry) -> str:
    return str(getattr(entry, "collection", None) or "(no collection)")


def _summaries(
    kept, scenes, rejects, duplicates, found_by, unreadable
) -> tuple[CollectionSummary, ...]:
    by_collection: dict[str, list[Scene]] = defaultdict(list)
    for s in scenes:
        by_collection[s.collection or "(no collection)"].append(s)
    rejects_by: dict[str, list[Reject]] = defaultdict(list)
    for r in rejects:
        rejects_by[r.collection or "(no collection)"].append(r)
    dups_by: dict[str, list[Duplicate]] = defaultdict(list)
    for d in duplicates:
        dups_by[d.dropped_collection or "(no collection)"].append(d)
    out = []
    for name in sorted(set(found_by) | set(by_collection) | set(rejects_by)):
        mine = by_collection.get(name, [])
        uses: Counter[_Use] = Counter()
        for s in mine:
            extra = dict(s.extra)
            for b in s.bands:
                # each band's own note (bands.py keeps "calibration[band]" where it differs)
                calibration = extra.get(f"calibration[{b.band}]", extra.get("calibration", ""))
                uses[
                    (b.band, b.asset, b.index, b.dtype, b.scale, b.offset, b.nodata, calibration)
                ] += 1
        order: dict[str, int] = {}
        for s in mine:
            for i, b in enumerate(s.bands):
                order.setdefault(b.band, i)
        out.append(
            CollectionSummary(
                collection=name,
                providers=tuple(sorted({s.provider for s in mine})),
                profiles=tuple(sorted({dict(s.extra).get("profile", "") for s in mine})),
                found=found_by.get(name, len(mine) + len(rejects_by.get(name, []))),
                normalised=len(mine),
                bands=tuple(
                    BandUse(*key, count)
                    for key, count in sorted(uses.items(), key=lambda kv: (order[kv[0][0]], -kv[1]))
                ),
                rejects=tuple(rejects_by.get(name, [])),
                duplicates=tuple(dups_by.get(name, [])),
                grids=_grid_uses(mine),
                quality=_quality_uses(mine),
                unreadable=_unreadable(unreadable.get(name)),
            )
        )
    return tuple(out)


def _grid_uses(scenes: Sequence[Scene]) -> tuple[GridUse, ...]:
    """Distinct (CRS, pixel size) of the scenes' bands, most items first."""
    count: Counter[tuple[str, str]] = Counter()
    for s in scenes:
        seen = set()
        for b in s.bands:
            a, bb, _, d, e, _ = b.grid.transform
            x, y = math.hypot(a, d), math.hypot(bb, e)
            size = pixel_size_text(b.grid.crs, x)
            if not math.isclose(x, y, rel_tol=1e-9):
                size = f"{size} × {pixel_size_text(b.grid.crs, y)}"
            seen.add((b.grid.crs, size))
        count.update(seen)
    return tuple(GridUse(crs, px, n) for (crs, px), n in _most_first(count))


def _quality_uses(scenes: Sequence[Scene]) -> tuple[QualityUse, ...]:
    """Each quality asset the scenes are masked with, and the classes it masks by default."""
    count: Counter[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = Counter()
    for s in scenes:
        if not s.quality:
            count[("(none)", "", (), ())] += 1
        for q in s.quality:
            known = {rule[0] for rule in q.rules}
            masks = tuple(c for c in MASK_CLASSES if c in known and c in DEFAULT_MASK)
            also = tuple(c for c in MASK_CLASSES if c in known and c not in DEFAULT_MASK)
            count[(q.asset, q.dtype, masks, also)] += 1
    return tuple(
        QualityUse(asset, dtype, masks, also, n)
        for (asset, dtype, masks, also), n in _most_first(count)
    )


def _most_first(count: Counter) -> list:
    return sorted(count.items(), key=lambda kv: (-kv[1], str(kv[0])))


def _unreadable(tally: Counter[str] | None) -> Unreadable | None:
    if not tally:
        return None
    formats = tuple((f, n) for f, n in _most_first(tally) if f)
    return Unreadable(tally[""], formats)


def format_inspection(report: Inspection) -> str:
    """Plain text for a terminal (no markup)."""
    lines = [
        f"sources: {', '.join(report.sources)}",
        f"bands asked: {', '.join(report.bands)}",
        f"items found: {report.items_found}, normalised: "
        f"{sum(c.normalised for c in report.collections)}, rejected: "
        f"{sum(len(c.rejects) for c in report.collections)}, duplicates dropped: "
        f"{sum(len(c.duplicates) for c in report.collections)}",
    ]
    lines += [f"note: {n}" for n in report.notes]
    for c in report.collections:
        lines.append("")
        lines.append(
            f"collection {c.collection}: {c.found} found, {c.normalised} normalise, "
            f"{len(c.rejects)} rejected"
            + (f"; provider {', '.join(c.providers)}" if c.providers else "")
            + (f"; profile {', '.join(c.profiles)}" if c.profiles else "")
        )
        for b in c.bands:
            nodata = "none" if b.nodata is None else f"{b.nodata:g}"
            lines.append(
                f"  {b.band:<8} <- {b.asset}[{b.index}] {b.dtype}  reflectance = DN * {b.scale:.6g}"
                f" {'+' if b.offset >= 0 else '-'} {abs(b.offset):.6g}  nodata {nodata}  "
                f"({b.calibration}; {b.items} item{'s' if b.items != 1 else ''})"
            )
        lines += _detail_lines(c)
        for r in c.rejects:
            lines.append(f"  rejected {r.item_id} [{r.reason}] {r.message}")
        for d in c.duplicates:
            lines.append(
                f"  duplicate {d.dropped} dropped, {d.kept_collection}/{d.kept} kept: {d.rule}"
            )
    return "\n".join(lines)


def _detail_lines(c: CollectionSummary) -> list[str]:
    """The grid, quality and unreadable-format lines of one collection."""
    lines = []
    for g in c.grids:
        lines.append(f"  {'grid':<8} {g.crs[:60]}, {g.pixel} pixels ({_items(g.items)})")
    for q in c.quality:
        if q.asset == "(none)":
            lines.append(f"  {'quality':<8} none: only nodata is masked ({_items(q.items)})")
            continue
        masks = ", ".join(q.masks) or "nothing by default"
        also = (
            f"; also knows {', '.join(q.also)} (masked if the workflow's radiometry.mask "
            "names them)"
            if q.also
            else ""
        )
        lines.append(
            f"  {'quality':<8} <- {q.asset} {q.dtype}: masks {masks}{also} ({_items(q.items)})"
        )
    u = c.unreadable
    if u is not None:
        held = ", ".join(f"{f} in {_items(n)}" for f, n in u.formats)
        lines.append(
            f"  {_items(u.items)} {'holds' if u.items == 1 else 'hold'} no raster Aquila reads: "
            f"{held}; Aquila reads {u.reads}"
        )
    return lines


def _items(n: int) -> str:
    return f"{n} item{'s' if n != 1 else ''}"


def format_json(report: Inspection) -> str:
    return json.dumps(report.as_dict(), indent=2, default=str)


def inspect_command(
    sources: Sequence[str],
    *,
    bands: str | None = None,
    collections: str | None = None,
    bbox: str | None = None,
    datetime: str | None = None,
    cql2_filter: str | None = None,
    profile: str | None = None,
    allowed_roots: Sequence[str] = (),
    mirrors: Sequence[str] = (),
    as_json: bool = False,
) -> str:
    """The CLI's loose strings → one inspection → text (or JSON). Raises InputError on bad input."""
    from pipeline.catalog.query import parse_datetime_range
    from pipeline.errors import InputError

    def split(text: str | None) -> tuple[str, ...] | None:
        return tuple(p.strip() for p in text.split(",") if p.strip()) if text else None

    box: tuple[float, float, float, float] | None = None
    if bbox:
        try:
            values = [float(v) for v in bbox.split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise InputError(f"--bbox {bbox!r}: give west,south,east,north in degrees")
        box = (values[0], values[1], values[2], values[3])
    try:
        window = parse_datetime_range(datetime) if datetime else None
    except ValueError as exc:
        raise InputError(f"--datetime {datetime!r}: {exc}") from None
    pairs = []
    for m in mirrors:
        prefix, sep, target = m.partition("=")
        if not sep or not prefix or not target:
            raise InputError(f"--mirror {m!r}: give PREFIX=FOLDER_OR_URL")
        pairs.append((prefix, target))
    query = SearchQuery(
        collections=split(collections),
        bbox=box,
        datetime=window,
        filter=cql2_filter,
    )
    report = inspect_sources(
        sources,
        bands=split(bands) or DEFAULT_BANDS,
        query=query,
        allowed_roots=tuple(allowed_roots) or None,
        mirrors=pairs,
        profile=profile,
    )
    return format_json(report) if as_json else format_inspection(report)
