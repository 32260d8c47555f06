"""Items → Scenes: each provider's conventions resolve to the right calibration and grid."""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import pytest

from pipeline.catalog.items.normalise import normalise_item
from pipeline.catalog.query import SearchQuery
from pipeline.catalog.source import iter_items
from pipeline.errors import SceneRejected
from pipeline.io.hrefs import HrefPolicy

BANDS = ("blue", "green", "red", "nir")


@pytest.fixture(scope="module")
def items(tiny_catalog):
    found = list(iter_items(str(tiny_catalog.catalog_href), SearchQuery()))
    assert all(isinstance(i, pystac.Item) for i in found)
    return {i.collection_id: i for i in found}


@pytest.fixture(scope="module")
def policy(tiny_catalog):
    return HrefPolicy.for_catalog(str(tiny_catalog.catalog_href))


# (collection, band) -> (asset, index, nodata, scale, offset, crs, pixel size): the conventions
# each synthetic provider publishes (Sentinel-2 >= 04.00, Landsat C2 L2, PlanetScope-like)
EXPECTED = {
    ("north", "blue"): ("B02", 1, 0.0, 1e-4, -0.1, "EPSG:32632", 10.0),
    ("north", "nir"): ("B08", 1, 0.0, 1e-4, -0.1, "EPSG:32632", 10.0),
    ("south", "red"): ("red", 1, 0.0, 2.75e-5, -0.2, "EPSG:32632", 30.0),
    ("south", "nir"): ("nir08", 1, 0.0, 2.75e-5, -0.2, "EPSG:32632", 30.0),
    ("east", "blue"): ("analytic", 1, 65535.0, 5e-5, 0.0, "EPSG:32633", 20.0),
    ("east", "nir"): ("analytic", 4, 65535.0, 5e-5, 0.0, "EPSG:32633", 20.0),
}


@pytest.mark.parametrize(("key", "expected"), EXPECTED.items(), ids=lambda v: str(v))
def test_band_calibration_per_provider(items, policy, key, expected):
    collection, band = key
    scene = normalise_item(items[collection], bands=BANDS, policy=policy)
    src = scene.bands[BANDS.index(band)]
    asset, index, nodata, scale, offset, crs, res = expected
    assert (src.asset, src.index, src.nodata, src.scale, src.offset) == (
        asset, index, nodata, scale, offset)
    assert src.grid.crs == crs and src.grid.transform[0] == res
    assert src.dtype == "uint16"


def test_quality_assets(items, policy):
    north = normalise_item(items["north"], bands=BANDS, policy=policy)
    (scl,) = north.quality
    assert scl.asset == "SCL" and scl.grid.transform[0] == 20.0  # asset-level proj
    assert set(scl.masked_values) == {0, 3, 8, 9}  # no_data, shadows, cloud medium/high
    south = normalise_item(items["south"], bands=BANDS, policy=policy)
    (qa,) = south.quality
    assert {(o, n) for o, n, _ in qa.bitfields} >= {(0, 1), (3, 1), (4, 1)}
    east = normalise_item(items["east"], bands=BANDS, policy=policy)
    assert set(east.quality[0].masked_values) == {1, 2, 255}


def test_scene_fields(items, policy):
    s = normalise_item(items["south"], bands=BANDS, policy=policy)
    assert s.collection == "south" and s.datetime.tzinfo is not None
    assert s.sun_elevation is not None and s.footprint.bounds[0] > 8.9
    # solar day: ~10:05 UTC at 9° E is ~10:41 local, same calendar day
    assert s.solar_day == s.datetime.date()


def _edited(item: pystac.Item, edit) -> pystac.Item:
    d = item.to_dict()
    edit(d)
    out = pystac.Item.from_dict(d)
    out.set_self_href(item.get_self_href())
    return out


def test_missing_band_is_rejected_with_what_is_offered(items, policy):
    with pytest.raises(SceneRejected) as err:
        normalise_item(items["north"], bands=("red", "swir16"), policy=policy)
    assert err.value.reason == "missing_band"
    assert "swir16" in str(err.value) and "'red'" in str(err.value)


def test_href_outside_the_catalog_is_rejected_before_io(items, policy):
    def edit(d):
        d["assets"]["B04"]["href"] = "/etc/passwd.tif"

    with pytest.raises(SceneRejected) as err:
        normalise_item(_edited(items["north"], edit), bands=BANDS, policy=policy)
    assert err.value.reason == "href_not_allowed"


def test_item_without_datetime_is_a_reject_in_the_walk(catalog_copy):
    item_file = sorted(catalog_copy.glob("east/*/*.json"))[0]
    doc = json.loads(item_file.read_text())
    doc["properties"]["datetime"] = None
    item_file.write_text(json.dumps(doc))
    found = list(iter_items(str(catalog_copy / "catalog.json"), SearchQuery()))
    rejects = [f for f in found if not isinstance(f, pystac.Item)]
    assert [(r.item_id, r.reason) for r in rejects] == [(item_file.stem, "item_unreadable")]
    assert "datetime" in rejects[0].message
    assert sum(isinstance(f, pystac.Item) for f in found) == len(found) - 1


def test_grid_from_file_header_when_proj_is_absent(items, policy):
    def edit(d):
        for key in [k for k in d["properties"] if k.startswith("proj:")]:
            del d["properties"][key]
        for a in d["assets"].values():
            for key in [k for k in a if k.startswith("proj:")]:
                del a[key]

    plain = normalise_item(items["south"], bands=BANDS, policy=policy)
    headed = normalise_item(_edited(items["south"], edit), bands=BANDS, policy=policy)
    assert [b.grid.transform for b in headed.bands] == [b.grid.transform for b in plain.bands]
    assert json.dumps([b.grid.shape for b in headed.bands]) == json.dumps(
        [b.grid.shape for b in plain.bands])


# --------------------------------------------------------------------------- sources and speed


def _walk_ids(source, query=None):
    from pipeline.catalog.source import iter_docs

    return sorted(d.id for d in iter_docs(str(source), query or SearchQuery()))


def test_item_collection_ndjson_and_folder_sources_yield_the_same_items(tiny_catalog, tmp_path):
    items = sorted(Path(tiny_catalog.root).glob("*/*/*.json"))
    docs = [json.loads(p.read_text()) for p in items]
    for d, p in zip(docs, items, strict=True):  # make links absolute: the files move
        for a in d["assets"].values():
            a["href"] = str((p.parent / a["href"]).resolve())
    collection = {"type": "FeatureCollection", "features": docs}
    (tmp_path / "items.json").write_text(json.dumps(collection))
    (tmp_path / "items.ndjson").write_text("\n".join(json.dumps(d) for d in docs) + "\n{broken\n")
    want = sorted(d["id"] for d in docs)
    assert _walk_ids(tiny_catalog.catalog_href) == want
    assert _walk_ids(tmp_path / "items.json") == want
    assert _walk_ids(Path(tiny_catalog.root)) == want  # a folder of item files
    from pipeline.catalog.source import iter_docs

    found = list(iter_docs(str(tmp_path / "items.ndjson"), SearchQuery()))
    assert sorted(f.id for f in found if not isinstance(f, type(found[-1]))) == want
    assert (found[-1].reason, found[-1].item_id) == ("item_unreadable", "items.ndjson:7")


def test_static_sources_apply_bbox_datetime_query_and_cql2_here(tiny_catalog):
    import datetime as dt

    start = dt.datetime(2025, 6, 18, tzinfo=dt.UTC)
    near = SearchQuery(bbox=(8.95, 45.1, 9.1, 45.25), datetime=(start, None))
    assert len(_walk_ids(tiny_catalog.catalog_href, near)) == 4
    far = SearchQuery(bbox=(170.0, -10.0, -170.0, 10.0))  # crosses the antimeridian, elsewhere
    assert _walk_ids(tiny_catalog.catalog_href, far) == []
    cql2 = SearchQuery(filter="eo:cloud_cover > 5 AND constellation = 'sentinel-2'")
    assert _walk_ids(tiny_catalog.catalog_href, cql2) == ["S2B_32TNR_20250625_1_L2A"]
    query = SearchQuery(query={"platform": {"eq": "landsat-9"}, "eo:cloud_cover": {"lt": 1}})
    landsat = "LC09_L2SP_194028_20250627_20250706_02_T1"
    assert _walk_ids(tiny_catalog.catalog_href, query) == [landsat]


def test_benchmark_runs_and_reports_every_item_normalised():
    """benchmarks/normalise.py in a process of its own: its peak RSS is the benchmark's, not
    that of a test session that has loaded everything the tests before it loaded."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "normalise.py"
    done = subprocess.run([sys.executable, str(script), "--items", "400", "--max-seconds",
                           "120", "--max-mib", "1024"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "normalised 400 generated items → 400 scenes (0 rejected" in done.stdout
    assert "budget: < 120 s and < 1024 MiB: met" in done.stdout


# --------------------------------------------------------------------------- errors kept


CLOUDS_BELOW_20 = "eo:cloud_cover < 20"


def _without_cloud_cover(catalog_root: Path) -> tuple[str, str, set[str]]:
    """Edit two items of a catalog copy so that ``eo:cloud_cover < 20`` cannot be evaluated on
    them (one lacks the property, one has a string); (their ids, the other items < 20 %)."""
    files = sorted(catalog_root.glob("*/*/*.json"))
    docs = [json.loads(f.read_text()) for f in files]
    lacking, wordy = docs[0], docs[2]
    del lacking["properties"]["eo:cloud_cover"]
    wordy["properties"]["eo:cloud_cover"] = "cloudy"
    for f, d in zip(files, docs, strict=True):
        f.write_text(json.dumps(d))
    kept = {
        d["id"]
        for d in docs
        if d is not lacking and d is not wordy and d["properties"]["eo:cloud_cover"] < 20
    }
    return lacking["id"], wordy["id"], kept


def test_an_item_the_cql2_filter_cannot_be_evaluated_on_is_a_reject_with_the_cause(catalog_copy):
    from pipeline.catalog.scene import Reject
    from pipeline.catalog.source import iter_docs

    lacking, wordy, kept = _without_cloud_cover(catalog_copy)
    assert kept  # the other items below 20 % are still found
    found = list(iter_docs(str(catalog_copy / "catalog.json"), SearchQuery(filter=CLOUDS_BELOW_20)))
    rejects = {f.item_id: f for f in found if isinstance(f, Reject)}
    assert sorted(rejects) == sorted([lacking, wordy])
    assert {r.reason for r in rejects.values()} == {"filter_unevaluable"}
    assert "left unevaluated: eo:cloud_cover < 20" in rejects[lacking].message
    assert "left unevaluated: 'cloudy' < 20" in rejects[wordy].message
    assert CLOUDS_BELOW_20 in rejects[lacking].message
    assert {f.id for f in found if not isinstance(f, Reject)} == kept


def test_a_run_reports_the_items_its_cql2_filter_cannot_be_evaluated_on(catalog_copy, tmp_path):
    from pipeline.engine.run import RunOptions, run_workflow
    from pipeline.spec.workflow import spec_from_dict
    from tests.conftest import make_spec_dict

    lacking, wordy, kept = _without_cloud_cover(catalog_copy)
    spec = make_spec_dict(
        catalog_copy, tmp_path, bounds=(500000, 5000000, 504000, 5004000), cube=False,
        filter=CLOUDS_BELOW_20,
    )
    report = run_workflow(spec_from_dict(spec, base_dir=tmp_path), options=RunOptions(direct=True))
    assert report.status == "success", report.error
    reasons = {r["item"]: (r["reason"], r["message"]) for r in report.rejected}
    assert {k: v[0] for k, v in reasons.items()} == {
        lacking: "filter_unevaluable",
        wordy: "filter_unevaluable",
    }
    assert "eo:cloud_cover" in reasons[lacking][1]
    assert sorted(report.scenes_used) == sorted(kept)


def test_an_invalid_cql2_filter_is_refused_with_the_parser_error_as_its_cause():
    import cql2

    from pipeline.catalog.source import Matcher
    from pipeline.errors import CatalogError

    with pytest.raises(CatalogError, match="is not valid") as err:
        Matcher(SearchQuery(filter="eo:cloud_cover <"))
    assert isinstance(err.value.__cause__.__cause__, cql2.ParseError)


def test_a_catalog_root_answering_garbage_is_a_catalog_error_not_a_raw_http_error():
    import http.client
    import socket
    import threading

    from pipeline.catalog.source import iter_docs
    from pipeline.errors import CatalogError

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"this is not HTTP\r\n\r\n")

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        with pytest.raises(CatalogError, match="cannot open the catalog") as err:
            list(iter_docs(f"http://127.0.0.1:{port}/catalog.json", SearchQuery()))
    finally:
        thread.join(5)
        listener.close()
    assert isinstance(err.value.__cause__, http.client.HTTPException)


def test_bad_geojson_keeps_the_shapely_error_as_the_cause():
    from shapely.errors import GeometryTypeError

    from pipeline.catalog.footprint import footprint_from_geojson

    with pytest.raises(ValueError, match="not valid GeoJSON: GeometryTypeError") as err:
        footprint_from_geojson({"type": "Hexagon", "coordinates": [[0, 0]]})
    assert isinstance(err.value.__cause__, GeometryTypeError)


def test_a_grid_that_cannot_be_placed_in_lonlat_says_why_in_its_reject(tiny_catalog, policy):
    # read afresh: the module's items are shared, and their to_dict() shares the properties
    # dict, which other tests edit
    path = sorted(Path(tiny_catalog.root).glob("south/*/*.json"))[0]
    d = json.loads(path.read_text())
    moved = 0
    for fields in (d["properties"], *d["assets"].values()):
        if "proj:transform" in fields:
            t = list(fields["proj:transform"])
            t[2] = 1e13  # an x origin no projection maps onto the Earth
            fields["proj:transform"] = t
            moved += 1
    assert moved
    item = pystac.Item.from_dict(d)
    item.set_self_href(str(path))
    with pytest.raises(SceneRejected) as err:
        normalise_item(item, bands=BANDS, policy=policy)
    assert err.value.reason == "footprint_mismatch"
    assert "cannot be placed in lon/lat: ValueError: raster bounds in" in str(err.value)
