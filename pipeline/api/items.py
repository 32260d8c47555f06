"""The ``items`` argument of :func:`pipeline.load`: whatever a notebook holds, as a discovery.

Accepted: a catalog path or URL string (a static catalog, collection, item collection, NDJSON
file, single item, or a STAC API root: searched exactly as a workflow's ``catalog:``), a
``pystac.ItemCollection``, a ``pystac.Catalog`` (its items, recursively), a pystac-client
``ItemSearch``, or any iterable of ``pystac.Item`` / item dicts.

Items given as objects go through the same steps as a catalog's (the search terms applied here
by :class:`~pipeline.catalog.source.Matcher`, the releasability rule first, normalisation with
the href policy, duplicates dropped): :func:`pipeline.catalog.discover.collect` and
:mod:`pipeline.catalog.dedupe`, called as :func:`pipeline.catalog.discover.discover` calls them.
They have no catalog folder to trust, so their asset links are read only inside
``allowed_roots`` (required).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac

from pipeline.api.options import IN_MEMORY
from pipeline.catalog.dedupe import carry_markings, drop_duplicates
from pipeline.catalog.discover import (
    Discovery,
    collect,
    normalise_options,
    releasability_of,
    search_query,
)
from pipeline.catalog.markings import Marking, MarkingConflict, SceneKey
from pipeline.catalog.scene import Reject
from pipeline.catalog.source import Matcher
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.engine.steps import discover
from pipeline.errors import InputError, SpecError
from pipeline.spec.workflow import WorkflowSpec


@dataclass(frozen=True)
class ItemSource:
    """Where the items come from: a catalog (``catalog`` set, ``objects`` None) or objects."""

    catalog: str
    objects: Iterable[Any] | None = None

    @property
    def in_memory(self) -> bool:
        return self.objects is not None


def item_source(items: Any) -> ItemSource:
    """Classify the ``items`` argument (nothing is read yet)."""
    if isinstance(items, str | Path):
        text = str(items)
        return ItemSource(text if "://" in text else str(Path(text).expanduser().resolve()))
    if isinstance(items, pystac.Item) or (isinstance(items, Mapping) and "type" in items):
        return ItemSource(IN_MEMORY, (items,))
    if isinstance(items, pystac.Catalog):
        return ItemSource(IN_MEMORY, items.get_items(recursive=True))
    if hasattr(items, "items_as_dicts"):  # pystac-client ItemSearch: one page at a time
        return ItemSource(IN_MEMORY, items.items_as_dicts())
    if isinstance(items, Iterable) and not isinstance(items, bytes | Mapping):
        return ItemSource(IN_MEMORY, items)
    raise InputError(
        f"items={type(items).__name__}: give a catalog path or URL, a pystac ItemCollection, "
        "Catalog or ItemSearch, or a list of pystac Items or item dicts"
    )


def discover_items(source: ItemSource, spec: WorkflowSpec) -> Discovery:
    """The discovery a workflow with this spec would make, from a catalog or from objects."""
    if source.objects is None:
        return discover(spec)
    if spec.allowed_roots is None:
        raise SpecError(
            "items given as Python objects have no catalog folder whose files may be read: "
            "pass allowed_roots=[...] naming the folders or URL prefixes their assets live in "
            "(e.g. allowed_roots=['/data/scenes'] or ['https://sentinel-cogs.s3.us-west-2."
            "amazonaws.com/'])"
        )
    options = normalise_options(spec)
    rule = releasability_of(spec)
    withheld: list[Reject] = []
    markings: dict[SceneKey, Marking] = {}
    conflicts: list[MarkingConflict] = []
    scenes, rejects, found = collect(
        _entries(source.objects, Matcher(search_query(spec))),
        bands=spec.bands,
        options=options,
        releasability=rule,
        withheld=withheld,
        markings=markings,
        conflicts=conflicts,
    )
    kept, duplicates = drop_duplicates(scenes)
    notes: list[str] = []
    if rule is not None:
        markings, merged = carry_markings(markings, duplicates, scale=rule.scale)
        conflicts += merged
        notes.append(f"releasability: {len(withheld)} item(s) withheld from the audience")
    return Discovery(
        tuple(kept), tuple(rejects), tuple(duplicates), found, tuple(notes), tuple(withheld),
        tuple((s.key, markings[s.key]) for s in kept if s.key in markings), tuple(conflicts),
    )


def _entries(objects: Iterable[Any], matcher: Matcher) -> Iterator[ItemDoc | Reject]:
    """Each object as an :class:`ItemDoc` that matches the search terms, or a :class:`Reject`
    saying why it is not an item."""
    for i, obj in enumerate(objects):
        try:
            doc = _doc(obj)
        except (ValueError, TypeError, AttributeError) as exc:
            ident = obj.get("id", f"items[{i}]") if isinstance(obj, Mapping) else f"items[{i}]"
            yield Reject(str(ident), None, "item_unreadable",
                         f"not a STAC item ({type(obj).__name__}): {exc}. Give pystac Items or "
                         "item dicts (type 'Feature' with an id)")
            continue
        judged = matcher.judge(doc)
        if judged is not None:
            yield judged


def _doc(obj: Any) -> ItemDoc:
    if isinstance(obj, ItemDoc):
        return obj
    if isinstance(obj, pystac.Item):
        return ItemDoc.from_pystac(obj)
    if isinstance(obj, Mapping):
        return ItemDoc.from_dict(obj)
    raise TypeError("neither a pystac.Item nor a mapping")
