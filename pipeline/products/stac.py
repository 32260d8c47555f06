"""A product's STAC metadata: one small STAC Item beside each store (``<store>.stac.json``).

It carries the product's extent, its time range and its releasability label (the high-water mark
of the scenes it used) under the ``aquila:label`` field of Aquila's marking extension, so a
catalog of products can be filtered by audience without opening a store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.catalog.markings import EXTENSION_URL
from pipeline.products.publish import write_text_atomic


def stac_path(store: Path) -> Path:
    return store.with_name(store.name + ".stac.json")


def write_product_stac(store: Path, **fields: Any) -> Path:
    """Write ``<store>.stac.json`` (:func:`product_stac`'s fields), replacing it in one rename."""
    return write_text_atomic(stac_path(store), product_stac_text(store, **fields))


def product_stac_text(
    store: Path,
    *,
    kind: str,
    bbox: Sequence[float],
    times: Sequence[str],
    label: Mapping[str, Any] | None,
    slot_labels: Sequence[Mapping[str, Any] | None] = (),
    properties: Mapping[str, Any] | None = None,
) -> str:
    """The text of ``<store>.stac.json``: a STAC 1.0 Item (``times``: ISO 8601 UTC strings)."""
    w, s, e, n = (float(v) for v in bbox)
    props: dict[str, Any] = {
        "datetime": None,
        "start_datetime": min(times) if times else None,
        "end_datetime": max(times) if times else None,
        "aquila:product": kind,
        "aquila:label": label,
    }
    if slot_labels:
        props["aquila:slot_labels"] = list(slot_labels)
    props.update(properties or {})
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [EXTENSION_URL],
        "id": store.name,
        "bbox": [w, s, e, n],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
        },
        "properties": props,
        "assets": {
            "data": {"href": f"./{store.name}", "type": "application/vnd+zarr", "roles": ["data"]}
        },
        "links": [],
    }
    # Sorted keys: the same bytes whether written from the state just committed or from the
    # one read back from the store (a rerun after a crash between publish and sidecar).
    return json.dumps(item, indent=2, default=str, sort_keys=True)
