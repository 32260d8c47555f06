"""A deeper archive for ``benchmarks/peers.py``: a catalog's items repeated with later dates.

    python benchmarks/deep.py SRC_CATALOG_DIR DST_DIR [--factor 4] [--shift-days 35]

Copy ``k`` (0 .. factor-1) of every item of the (static, synthetic) catalog under ``SRC`` is the
item with its ``datetime`` moved ``k × shift-days`` later and, for ``k >= 1``, ``_r{k}``
appended to its id; its assets are hard links to the source catalog's files (a copy where the
file system refuses links), so nothing is rendered and no byte is copied, but every copy has
files of its own: Aquila's decoded-tile cache (keyed by href) cannot serve one copy's tiles to
another, and each copy's tiles are decoded as a new scene's would be. With ``shift-days``
longer than the source's time span (the synthetic presets span one month) every copy falls on
days no other copy has, so the job has ``factor`` times the time slots (one collection, one
local solar day each) over the same pixels: a timing and memory test of the archive's depth,
not new imagery (two copies of an item are not duplicates to Aquila: their times differ by
weeks).

Every asset lies inside ``DST``, so the catalog's own folder is the only root a workflow on it
needs (:func:`build` returns it, for ``allowed_roots``). The result is reused while the
source's ``catalog.json`` and collections and the parameters are unchanged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

FACTOR = 4
SHIFT_DAYS = 35


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _fmt_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{t.microsecond:06d}Z" if t.microsecond else "Z")


def _stamp(src: Path, factor: int, shift_days: int) -> str:
    digest = hashlib.sha256((src / "catalog.json").read_bytes())
    for coll in sorted(src.glob("*/collection.json")):
        digest.update(coll.read_bytes())
    return f"{src.resolve()} {factor} {shift_days} {digest.hexdigest()}"


def _links(doc: dict[str, Any], keep: tuple[str, ...]) -> list[dict[str, Any]]:
    return [link for link in doc.get("links", []) if link.get("rel") in keep]


def _link(source: Path, target: Path) -> None:
    """A hard link (no bytes copied; a path of its own, so the engine's per-href tile cache
    never serves one copy's tiles to another), or a copy where links are impossible."""
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)


def build(src: Path, dst: Path, *, factor: int = FACTOR, shift_days: int = SHIFT_DAYS
          ) -> tuple[Path, tuple[str, str], int]:
    """The deep catalog under ``dst`` (built unless an identical one is there): (its
    catalog.json, the allowed roots a workflow on it needs, the number of items)."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    want = _stamp(src, factor, shift_days)
    stamp = dst / ".deep-source"
    roots = (str(dst),)
    if (dst / "catalog.json").exists() and stamp.exists() and stamp.read_text().strip() == want:
        n = sum(1 for _ in dst.glob("*/items/*.json"))
        return dst / "catalog.json", roots, n
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    root = json.loads((src / "catalog.json").read_text())
    children = [link for link in root.get("links", []) if link.get("rel") == "child"]
    new_children = []
    n_items = 0
    for child in children:
        coll_path = (src / child["href"]).resolve()
        coll = json.loads(coll_path.read_text())
        cid = coll["id"]
        out_dir = dst / cid
        (out_dir / "items").mkdir(parents=True)
        item_links = []
        t_lo, t_hi = None, None
        for link in coll.get("links", []):
            if link.get("rel") != "item":
                continue
            item_path = (coll_path.parent / link["href"]).resolve()
            item = json.loads(item_path.read_text())
            base_time = _parse_time(item["properties"]["datetime"])
            for k in range(factor):
                copy = json.loads(json.dumps(item))
                new_id = item["id"] if k == 0 else f"{item['id']}_r{k}"
                when = base_time + dt.timedelta(days=k * shift_days)
                copy["id"] = new_id
                copy["properties"]["datetime"] = _fmt_time(when)
                files = out_dir / "items" / new_id
                for asset in copy.get("assets", {}).values():
                    href = asset.get("href", "")
                    if "://" in href:
                        continue
                    source = (item_path.parent / href).resolve()
                    files.mkdir(parents=True, exist_ok=True)
                    _link(source, files / source.name)
                    asset["href"] = f"./{new_id}/{source.name}"
                copy["links"] = [
                    {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                    {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                    {"rel": "collection", "href": "../collection.json",
                     "type": "application/json"},
                ]
                copy["collection"] = cid
                name = f"{new_id}.json"
                (out_dir / "items" / name).write_text(json.dumps(copy))
                item_links.append({"rel": "item", "href": f"./items/{name}",
                                   "type": "application/geo+json"})
                t_lo = when if t_lo is None or when < t_lo else t_lo
                t_hi = when if t_hi is None or when > t_hi else t_hi
                n_items += 1
        coll["links"] = [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
            *item_links,
        ]
        if t_lo is not None and "extent" in coll:
            coll["extent"]["temporal"] = {"interval": [[_fmt_time(t_lo), _fmt_time(t_hi)]]}
        (out_dir / "collection.json").write_text(json.dumps(coll, indent=1))
        new_children.append({"rel": "child", "href": f"./{cid}/collection.json",
                             "type": "application/json", "title": child.get("title", cid)})
    root["id"] = f"{root['id']}-deep{factor}"
    root["title"] = f"{root.get('title', root['id'])}, items x{factor} (deep archive)"
    root["links"] = [{"rel": "root", "href": "./catalog.json", "type": "application/json"},
                     *new_children]
    (dst / "catalog.json").write_text(json.dumps(root, indent=1))
    stamp.write_text(want + "\n")
    return dst / "catalog.json", roots, n_items


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A catalog's items repeated with later dates.")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--factor", type=int, default=FACTOR)
    p.add_argument("--shift-days", type=int, default=SHIFT_DAYS)
    args = p.parse_args(argv)
    href, roots, n = build(args.src, args.dst, factor=args.factor, shift_days=args.shift_days)
    print(f"{href}: {n} items; allowed roots {list(roots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
