"""stac-geoparquet as a catalog source: the same scenes as the same items read as JSON, the
search pushed down without changing what it selects, clear errors for files that are not
stac-geoparquet, malformed rows as rejects, and every link still checked."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stac_geoparquet.arrow import parse_stac_items_to_arrow, to_parquet

from pipeline.catalog.discover import discover
from pipeline.catalog.query import SearchQuery
from pipeline.catalog.scene import Reject
from pipeline.catalog.source import iter_docs
from pipeline.errors import CatalogError
from pipeline.io.hrefs import HrefPolicy, resolve_href

BANDS = ("blue", "green", "red", "nir")
ROOT = Path(__file__).resolve().parents[1]


def marking(level="UNCLASSIFIED", to=("NLD", "NOR")):
    return {"classification": level, "releasable_to": list(to), "caveats": [], "owner": "NLD",
            "licence": "CC-BY-4.0"}


def _items(catalog_root: Path) -> list[dict]:
    """The tiny catalog's items with absolute asset links (a file of many items has no item
    folder to resolve them against) and markings, one of them for NLD only."""
    docs = []
    for i, f in enumerate(sorted(catalog_root.glob("*/*/*.json"))):
        d = json.loads(f.read_text())
        for asset in d["assets"].values():
            asset["href"] = resolve_href(asset["href"], str(f))
        d["collection"] = f.parent.parent.name
        d["links"] = []
        d["properties"]["aquila:marking"] = marking(to=("NLD",) if i == 2 else ("NLD", "NOR"))
        docs.append(d)
    return docs


def _write(docs: list[dict], folder: Path, *, row_group_size: int | None = None
           ) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ndjson, parquet = folder / "items.ndjson", folder / "items.parquet"
    ndjson.write_text("".join(json.dumps(d) + "\n" for d in docs))
    table = pa.Table.from_batches(parse_stac_items_to_arrow(docs))
    if row_group_size:
        pq.write_table(table, parquet, row_group_size=row_group_size)
    else:
        to_parquet(table, parquet)
    return ndjson, parquet


@pytest.fixture()
def sources(tiny_catalog, tmp_path):
    docs = _items(Path(tiny_catalog.root))
    ndjson, parquet = _write(docs, tmp_path / "cat")
    return SimpleNamespace(docs=docs, ndjson=ndjson, parquet=parquet, root=Path(tiny_catalog.root))


def _spec(catalog, *, roots=(), audience=("NOR",)):
    """A workflow's ingest settings (what discover reads), for an audience or none."""
    return SimpleNamespace(
        catalog=str(catalog), allowed_roots=tuple(str(r) for r in roots), bands=BANDS,
        collections=None, bbox=None, datetime=None, intersects=None, query=None, filter=None,
        audience=audience and SimpleNamespace(releasable_to=audience, group=None,
                                              groups_file=None, clearance=None),
    )


def _ids(source, query: SearchQuery | None = None, policy=None) -> list[str]:
    found = iter_docs(str(source), query or SearchQuery(), policy=policy)
    return [e.id for e in found if not isinstance(e, Reject)]


def test_parquet_gives_the_scenes_markings_and_withheld_items_of_ndjson_and_static(sources):
    roots = (sources.root, sources.ndjson.parent)
    a = discover(_spec(sources.ndjson, roots=roots))
    b = discover(_spec(sources.parquet, roots=roots))
    static = discover(_spec(sources.root / "catalog.json", roots=roots, audience=None))
    assert len(b.scenes) == 5 and b.items_found == 6
    assert b.scenes == a.scenes  # ids, hrefs, grids, bands, calibration, footprints, notes
    assert (b.markings, b.rejects, b.duplicates) == (a.markings, a.rejects, a.duplicates)
    assert [w.item_id for w in b.withheld] == [w.item_id for w in a.withheld] != []
    # the static catalog (unmarked) has all six; its scenes link their item files
    everyone = discover(_spec(sources.parquet, roots=roots, audience=None))
    unlinked = sorted((replace(s, item_href=None) for s in static.scenes), key=lambda s: s.id)
    assert unlinked == sorted(everyone.scenes, key=lambda s: s.id)  # the walk's order differs
    assert len(everyone.scenes) == 6


@pytest.mark.parametrize("row_group_size", [None, 1])
def test_pushed_down_search_selects_what_the_matcher_selects_on_json(sources, tmp_path,
                                                                      row_group_size):
    ndjson, parquet = _write(sources.docs, tmp_path / "rg", row_group_size=row_group_size)
    june = lambda a, b: (dt.datetime(2025, 6, a, tzinfo=dt.UTC),  # noqa: E731
                         dt.datetime(2025, 6, b, 23, tzinfo=dt.UTC))
    queries = [
        SearchQuery(),
        SearchQuery(datetime=june(16, 25)),
        SearchQuery(datetime=(None, june(1, 3)[1])),
        SearchQuery(datetime=(june(26, 26)[0], None)),
        SearchQuery(bbox=(8.95, 45.1, 9.1, 45.25)),
        SearchQuery(bbox=(8.95, 45.1, 9.1, 45.25), datetime=june(20, 30)),
        SearchQuery(bbox=(170.0, -10.0, -170.0, 10.0)),  # crosses the antimeridian: nothing
        SearchQuery(bbox=(170.0, 40.0, 10.0, 50.0)),  # crosses it, and takes Europe in
        SearchQuery(collections=("south", "east")),
        SearchQuery(collections=("nowhere",)),
        SearchQuery(filter="eo:cloud_cover > 5 AND constellation = 'sentinel-2'"),
    ]
    for query in queries:
        assert _ids(parquet, query) == _ids(ndjson, query), query
    notes: list[str] = []
    list(iter_docs(str(parquet), queries[2], notify=notes.append))
    assert bool(notes) == bool(row_group_size)  # one item per row group: statistics skip 5


def test_a_folder_or_glob_of_parts_reads_every_part(sources, tmp_path):
    parts = tmp_path / "parts"
    _write(sources.docs[:3], parts / "a")
    _write(sources.docs[3:], parts / "b")
    for p in (parts / "a" / "items.ndjson", parts / "b" / "items.ndjson"):
        p.unlink()
    want = [d["id"] for d in sources.docs]
    assert _ids(parts) == want
    assert _ids(f"{parts}/*/*.parquet") == want


def test_a_truncated_file_or_other_parquet_is_a_catalog_error_naming_it(sources, tmp_path):
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(sources.parquet.read_bytes()[:2000])
    with pytest.raises(CatalogError, match=r"cut\.parquet as Parquet .*truncated, corrupt"):
        list(iter_docs(str(cut), SearchQuery()))
    other = tmp_path / "table.parquet"
    pq.write_table(pa.table({"name": ["a"], "value": [1]}), other)
    with pytest.raises(CatalogError, match=r"table\.parquet is Parquet but not stac-geoparquet: "
                                           r"it has no id, geometry, assets"):
        list(iter_docs(str(other), SearchQuery()))


def test_a_malformed_row_is_a_reject_and_the_rest_are_read(sources, tmp_path):
    table = pq.read_table(sources.parquet)
    wkb = table["geometry"].combine_chunks()
    broken = pa.array([b"not wkb" if i == 1 else v for i, v in enumerate(wkb.to_pylist())],
                      pa.binary())
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("geometry"), "geometry", broken),
                   bad)
    found = list(iter_docs(str(bad), SearchQuery()))
    assert [e.id if not isinstance(e, Reject) else e.reason for e in found] == [
        sources.docs[0]["id"], "item_unreadable", *[d["id"] for d in sources.docs[2:]]]
    assert "row 1 of" in found[1].message and "not valid WKB" in found[1].message


def test_an_asset_outside_the_allowed_roots_is_refused_as_from_json(sources, tmp_path):
    docs = _items(sources.root)
    next(iter(docs[0]["assets"].values()))["href"] = "/etc/secret.tif"
    ndjson, parquet = _write(docs, tmp_path / "evil")
    roots = (sources.root, ndjson.parent)
    a = discover(_spec(ndjson, roots=roots))
    b = discover(_spec(parquet, roots=roots))
    refused = [r for r in b.rejects if r.reason == "href_not_allowed"]
    assert [r.item_id for r in refused] == [docs[0]["id"]]
    assert "/etc/secret.tif" in refused[0].message
    assert b.rejects == a.rejects and b.scenes == a.scenes


def test_the_parquet_file_is_checked_like_a_catalog_link(sources, tmp_path):
    inside = tmp_path / "inside"
    inside.mkdir()
    link = inside / "items.parquet"
    os.symlink(sources.parquet, link)  # a symlink out of the allowed root
    policy = HrefPolicy((str(inside),))
    with pytest.raises(CatalogError, match="outside the allowed roots"):
        list(iter_docs(str(link), SearchQuery(), policy=HrefPolicy(())))
    with pytest.raises(CatalogError, match="stac-geoparquet is read from local files only"):
        list(iter_docs("https://example.com/items.parquet", SearchQuery(), policy=policy))


def test_benchmark_runs_and_reports_every_item_normalised(tmp_path):
    """benchmarks/geoparquet.py in a process of its own (its peak RSS is its own). 12 000
    items: two row groups (ROW_GROUP = 10 000) and two normalisation slices, at 60 % of the time
    20 000 took (46 s of the suite on 2 cores)."""
    script = ROOT / "benchmarks" / "geoparquet.py"
    done = subprocess.run([sys.executable, str(script), "--items", "12000", "--work",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read 12,000 stac-geoparquet items → 12,000 selected → 12,000 scenes normalised " \
           "(0 rejected)" in done.stdout
    assert "target: peak memory < 2048 MiB: PASS" in done.stdout
