"""Catalogs that grow night by night, for the nightly-run tests.

:func:`publish` makes a "live" static catalog hold exactly a chosen set of the items of a full
generated catalog (item folders hard-linked, collection links rewritten), as a provider's
catalog does when scenes arrive; :func:`reprocess` adds a second publication of an acquisition
(a newer processing baseline, slightly different calibration, so a test can tell which one the
products used).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path


def item_files(root: Path) -> dict[str, Path]:
    """Item id -> item JSON path, for a catalog written by the synthetic generator."""
    out = {}
    for path in sorted(root.glob("*/*/*.json")):
        doc = json.loads(path.read_text())
        if doc.get("type") == "Feature":
            out[doc["id"]] = path
    return out


def publish(full: Path, live: Path, ids: Iterable[str]) -> None:
    """Make ``live`` a static catalog of exactly the items ``ids`` of the catalog ``full``."""
    ids = set(ids)
    items = item_files(full)
    unknown = ids - set(items)
    if unknown:
        raise KeyError(f"not in {full}: {sorted(unknown)}")
    live.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(full / "catalog.json", live / "catalog.json")
    for coll in sorted(full.glob("*/collection.json")):
        name = coll.parent.name
        (live / name).mkdir(exist_ok=True)
        present = set()
        for item_id, path in items.items():
            if path.parent.parent.name != name:
                continue
            target = live / name / path.parent.name
            if item_id in ids:
                present.add(path.parent.name)
                if not target.exists():
                    shutil.copytree(path.parent, target, copy_function=_link)
            elif target.exists():
                shutil.rmtree(target)
        doc = json.loads(coll.read_text())
        doc["links"] = [
            link
            for link in doc["links"]
            if link["rel"] != "item" or link["href"].split("/")[1] in present
        ]
        (live / name / "collection.json").write_text(json.dumps(doc, indent=1))


def reprocess(full: Path, item_id: str, *, new_id: str, offset_delta: float = 0.002) -> str:
    """Add to ``full`` a reprocessed publication of ``item_id``: same acquisition, baseline
    05.11 (the original is marked 05.10), every band's offset moved by ``offset_delta``."""
    items = item_files(full)
    src = items[item_id]
    original = json.loads(src.read_text())
    original["properties"]["s2:processing_baseline"] = "05.10"
    _rewrite(src, original)
    doc = json.loads(json.dumps(original))
    doc["id"] = new_id
    doc["properties"]["s2:processing_baseline"] = "05.11"
    for asset in doc["assets"].values():
        for band in asset.get("raster:bands", []):
            if "offset" in band and "data" in asset.get("roles", []):
                band["offset"] = band["offset"] + offset_delta
    for link in doc.get("links", []):
        if link.get("rel") == "self":
            link["href"] = link["href"].replace(item_id, new_id)
    folder = src.parent.parent / new_id
    shutil.copytree(src.parent, folder, copy_function=_link)
    (folder / src.name).unlink()
    (folder / f"{new_id}.json").write_text(json.dumps(doc))
    coll = src.parent.parent / "collection.json"
    cdoc = json.loads(coll.read_text())
    cdoc["links"].append(
        {"rel": "item", "href": f"./{new_id}/{new_id}.json", "type": "application/geo+json"}
    )
    _rewrite(coll, cdoc)
    return new_id


def _rewrite(path: Path, doc) -> None:
    """Replace a file (a new inode: hard links elsewhere keep the old content)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def _link(src: str, dst: str) -> None:
    """Hard-link rasters (fast, no space); copy JSON (it may be edited on one side)."""
    if src.endswith(".json"):
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
