"""Searching a real STAC API: ``rustac serve`` on loopback, loaded with test items.

The server holds the synthetic tiny catalog's items (asset links made absolute, so a workflow can
read their pixels) and the real Earth Search / Planetary Computer items of the shared corpus.
Expected ids are computed here with plain Python from the served JSON, not by Aquila's matcher.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.catalog.query import SearchQuery
from pipeline.catalog.source import iter_docs
from pipeline.catalog.stacdoc import ItemDoc
from tests.conftest import SHARED_REAL, make_spec_dict

REAL_ITEMS = [
    "sentinel2/earth-search-v1/S2B_24MUA_20250731_0_L2A.json",
    "sentinel2/earth-search-v1/S2B_T24MUA_20250731T130245_L2A.json",
    "sentinel2/earth-search-v1/S2B_T24MUV_20250731T130245_L2A.json",
    "landsat/planetary-computer/LC09_L2SP_084068_20250722_02_T2.json",
    "landsat/planetary-computer/LC09_L2SP_084069_20250722_02_T2.json",
]
AREA = (8.95, 45.10, 9.10, 45.25)  # lon/lat box around the tiny catalog
JUNE_END = "2025-06-18T00:00:00Z/2025-06-30T23:59:59Z"
CLOUDS_BELOW_20 = "eo:cloud_cover < 20"


def _rustac() -> str:
    found = shutil.which("rustac") or str(Path(sys.executable).parent / "rustac")
    if not os.access(found, os.X_OK):
        pytest.skip("the rustac binary is not installed (pip install rustac)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served_items(tiny_catalog) -> list[dict]:
    """The items the server holds, as served (absolute asset links, no links)."""
    items = []
    for path in sorted(Path(tiny_catalog.root).glob("*/*/*.json")):
        d = json.loads(path.read_text())
        for asset in d["assets"].values():
            asset["href"] = str((path.parent / asset["href"]).resolve())
        d["links"] = []
        items.append(d)
    if SHARED_REAL.is_dir():
        for rel in REAL_ITEMS:
            d = json.loads((SHARED_REAL / rel).read_text())
            d["links"] = []
            items.append(d)
    return items


@pytest.fixture(scope="module")
def stac_api(served_items, tmp_path_factory):
    """A live STAC API on a free loopback port; stopped when the module's tests are done."""
    binary = _rustac()
    folder = tmp_path_factory.mktemp("rustac")
    items = folder / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": served_items}))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "serve.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [binary, "serve", "--addr", f"127.0.0.1:{port}", "--create-collections", str(items)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rustac serve exited: {(folder / 'serve.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("rustac serve did not answer within 30 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _expected(items, *, bbox, start, end, max_cloud, collections=None) -> set[str]:
    """Plain Python: bbox rectangles overlap, datetime inside, cloud cover below the limit."""
    out = set()
    for d in items:
        w, s, e, n = d["bbox"]
        p = d["properties"]
        when = dt.datetime.fromisoformat(p["datetime"].replace("Z", "+00:00"))
        if collections and d["collection"] not in collections:
            continue
        if e < bbox[0] or w > bbox[2] or n < bbox[1] or s > bbox[3]:
            continue
        if (start and when < start) or (end and when > end):
            continue
        if not (p.get("eo:cloud_cover", 100) < max_cloud):
            continue
        out.add(d["id"])
    return out


def _ids(url: str, query: SearchQuery, notes: list | None = None) -> set[str]:
    found = list(iter_docs(url, query, notify=(notes.append if notes is not None else None)))
    assert all(isinstance(f, ItemDoc) for f in found)
    ids = [f.id for f in found]
    assert len(ids) == len(set(ids))
    return set(ids)


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_bbox_datetime_and_cql2_filter_return_exactly_the_expected_ids(stac_api, served_items):
    start, end = (_utc(t) for t in JUNE_END.split("/"))
    want = _expected(served_items, bbox=AREA, start=start, end=end, max_cloud=20)
    # by hand from the tiny catalog: two Sentinel-2-like scenes (0 % and 10.45 % cloud) and one
    # Landsat-like (0 %) on 2025-06-20..27; the 30.3 %-cloud PlanetScope-like one is filtered out
    assert want == {
        "S2B_32TNR_20250620_0_L2A",
        "S2B_32TNR_20250625_1_L2A",
        "LC09_L2SP_194028_20250627_20250706_02_T1",
    }
    notes: list[str] = []
    query = SearchQuery(bbox=AREA, datetime=(start, end), filter=CLOUDS_BELOW_20, page_size=1)
    assert _ids(stac_api, query, notes) == want
    # rustac's in-memory backend does not declare the Filter class: the filter ran here, and said so
    assert any("Filter conformance" in n for n in notes)
    cql2_json = {"op": "<", "args": [{"property": "eo:cloud_cover"}, 20]}
    assert _ids(stac_api, SearchQuery(bbox=AREA, datetime=(start, end), filter=cql2_json)) == want


def test_open_ended_datetime_intersects_query_and_collections(stac_api, served_items):
    start = _utc("2025-06-18T00:00:00Z")
    aoi = {
        "type": "Polygon",
        "coordinates": [[[8.95, 45.1], [9.1, 45.1], [9.1, 45.25], [8.95, 45.25], [8.95, 45.1]]],
    }
    want = _expected(
        served_items, bbox=AREA, start=start, end=None, max_cloud=101, collections=("north", "east")
    )
    assert want == {
        "S2B_32TNR_20250620_0_L2A",
        "S2B_32TNR_20250625_1_L2A",
        "20250629_095537_01_2483",
    }
    got = _ids(
        stac_api,
        SearchQuery(
            collections=("north", "east"), intersects=aoi, datetime=(start, None), page_size=2
        ),
    )
    assert got == want
    # STAC API Query extension terms (applied here when the API lacks them)
    got = _ids(
        stac_api,
        SearchQuery(
            collections=("north", "east"),
            intersects=aoi,
            datetime=(start, None),
            query={"eo:cloud_cover": {"lt": 20}},
        ),
    )
    assert got == want - {"20250629_095537_01_2483"}
    # the whole server, one item per page, lazily: every served item exactly once
    assert _ids(stac_api, SearchQuery(page_size=3)) == {d["id"] for d in served_items}


def test_a_workflow_pointed_at_the_api_runs_end_to_end(stac_api, tiny_catalog, tmp_path):
    from pipeline.engine.run import RunOptions, run_workflow
    from pipeline.spec.workflow import spec_from_dict

    spec = make_spec_dict(
        tiny_catalog.root,
        tmp_path,
        bounds=tiny_catalog.area_bounds,
        cube=True,
        catalog=stac_api,
        bbox=list(AREA),
        datetime=JUNE_END,
        collections=["north", "south", "east"],
        allowed_roots=[str(tiny_catalog.root)],
    )
    report = run_workflow(spec_from_dict(spec, base_dir=tmp_path), options=RunOptions(direct=True))
    assert report.status == "success", report.error
    assert report.scenes_found == 4  # 2025-06-18..30 in the tiny area, all providers
    assert len(report.scenes_used) == 4 and report.pixels_written > 0


def test_a_workflow_with_a_cql2_filter_uses_exactly_the_matching_scenes(
    stac_api, tiny_catalog, tmp_path
):
    from pipeline.engine.run import RunOptions, run_workflow
    from pipeline.spec.workflow import spec_from_dict

    spec = make_spec_dict(
        tiny_catalog.root,
        tmp_path,
        bounds=tiny_catalog.area_bounds,
        cube=True,
        catalog=stac_api,
        bbox=list(AREA),
        datetime=JUNE_END,
        filter=CLOUDS_BELOW_20,
        allowed_roots=[str(tiny_catalog.root)],
    )
    report = run_workflow(spec_from_dict(spec, base_dir=tmp_path), options=RunOptions(direct=True))
    assert report.status == "success", report.error
    assert sorted(report.scenes_used) == sorted(
        [
            "S2B_32TNR_20250620_0_L2A",
            "S2B_32TNR_20250625_1_L2A",
            "LC09_L2SP_194028_20250627_20250706_02_T1",
        ]
    )
