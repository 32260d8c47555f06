"""Releasability: strict markings, audience filtering before any read, high-water-mark labels,
and no leak of withheld items into anything the audience sees."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.catalog.discover import discover
from pipeline.catalog.markings import (
    DEFAULT_SCALE,
    Audience,
    Marking,
    MarkingError,
    Scale,
    admits,
    high_water_mark,
    parse_marking,
    scale_from,
)
from pipeline.engine.run import RunOptions, run_workflow
from pipeline.spec.workflow import spec_from_dict
from tests.asset_server import serve
from tests.conftest import make_spec_dict

ROOT = Path(__file__).resolve().parents[1]


def marking(level="UNCLASSIFIED", to=("NLD",), caveats=(), owner="NLD", licence="CC-BY-4.0"):
    return {
        "classification": level,
        "releasable_to": list(to),
        "caveats": list(caveats),
        "owner": owner,
        "licence": licence,
    }


# --------------------------------------------------------------------------- parsing


def test_parse_marking_reads_item_and_raises_with_asset_markings():
    item = {
        "properties": {"aquila:marking": marking("RESTRICTED", ["NLD", "NOR"], ["A"])},
        "assets": {
            "B04": {"href": "x.tif", "aquila:marking": marking("SECRET", ["NOR", "DEU"], ["B"])}
        },
    }
    m = parse_marking(item)
    assert m.classification == "SECRET"
    assert m.releasable_to == {"NOR"} and m.caveats == {"A", "B"}


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        ({}, "unmarked"),
        ({"aquila:marking": "SECRET//NLD"}, "bad_marking"),
        ({"aquila:marking": marking("TOP SEKRIT")}, "bad_marking"),
        ({"aquila:marking": {**marking(), "releasable_to": "NLD"}}, "bad_marking"),
        ({"aquila:marking": {**marking(), "releasable_to": []}}, "bad_marking"),
        ({"aquila:marking": {**marking(), "releasable_to": ["nld"]}}, "bad_marking"),
        ({"aquila:marking": {**marking(), "caveats": "X"}}, "bad_marking"),
        ({"aquila:marking": {k: v for k, v in marking().items() if k != "owner"}}, "bad_marking"),
        ({"aquila:marking": {**marking(), "licence": ""}}, "bad_marking"),
        ({"aquila:marking": {**marking(), "releaseable_to": ["NLD"]}}, "bad_marking"),
    ],
)
def test_missing_or_malformed_markings_are_refused(props, reason):
    with pytest.raises(MarkingError) as err:
        parse_marking({"properties": props, "assets": {}})
    assert err.value.reason == reason


def test_scale_is_configurable():
    scale = scale_from(["OPEN", "PARTNER", "NATIONAL"])
    item = {"properties": {"aquila:marking": marking("PARTNER")}}
    assert parse_marking(item, scale=scale).classification == "PARTNER"
    with pytest.raises(MarkingError):
        parse_marking(item)  # not on the default scale
    aud = Audience(frozenset({"NLD"}), clearance="OPEN")
    assert not admits(parse_marking(item, scale=scale), aud, scale=scale)


def test_the_schema_file_is_json_schema_and_covers_the_fields():
    schema = json.loads((ROOT / "catalogs/aquila-marking/v1.0.0/schema.json").read_text())
    props = schema["definitions"]["marking"]["properties"]
    assert set(props) == {"classification", "releasable_to", "caveats", "owner", "licence"}


# --------------------------------------------------------------------------- property test

codes = st.sampled_from(["NLD", "NOR", "DEU", "FRA", "USA", "GBR"])
markings_st = st.builds(
    Marking,
    classification=st.sampled_from(DEFAULT_SCALE),
    releasable_to=st.frozensets(codes, min_size=1),
    caveats=st.frozensets(st.sampled_from(["A", "B", "C"])),
    owners=st.frozensets(st.sampled_from(["NLD", "NOR", "ACME"]), min_size=1),
    licences=st.frozensets(st.sampled_from(["CC-BY-4.0", "EULA"]), min_size=1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(markings_st, min_size=1, max_size=12), st.frozensets(codes, min_size=1))
def test_label_never_lower_and_audience_inside_every_used_scene(ms, members):
    audience = Audience(members)
    used = [m for m in ms if admits(m, audience)]
    if not used:
        return
    label = high_water_mark(used)
    scale = Scale()
    for m in used:
        assert scale.rank(label.classification) >= scale.rank(m.classification)
        assert audience.members <= m.releasable_to
        assert label.releasable_to <= m.releasable_to
        assert m.caveats <= label.caveats and m.licences <= label.licences
        assert m.owners <= label.owners
    assert audience.members <= label.releasable_to


# --------------------------------------------------------------------------- mixed catalog

# item-id prefix -> marking (None: missing; a string: garbled)
MARKS = {
    "S2B_32TNR_20250620": marking("UNCLASSIFIED", ["DEU", "NLD", "NOR"], [], "NLD", "CC-BY-4.0"),
    "S2B_32TNR_20250625": marking("RESTRICTED", ["NLD", "NOR"], ["AGRI"], "NOR", "NLOD-2.0"),
    "LC09_L2SP_194028_20250616": marking("CONFIDENTIAL", ["NLD"], [], "NLD", "GOV-NL"),
    "LC09_L2SP_194028_20250627": None,
    "20250603_095546": {**marking("SECRET", ["NLD", "NOR"]), "classification": "TOP SEKRIT"},
    "20250629_095537": marking(
        "SECRET", ["DEU", "NLD", "NOR", "USA"], ["COMMERCIAL"], "ACME", "ACME-EULA"
    ),
}
ASSET_MARK = (
    "S2B_32TNR_20250625",
    "B04",
    marking("RESTRICTED", ["NLD", "NOR"], ["CROPS"], "NOR", "NLOD-2.0"),
)


def _key(item_id: str) -> str:
    return next(k for k in MARKS if item_id.startswith(k))


@pytest.fixture(scope="module")
def marked(tiny_catalog, tmp_path_factory):
    """The tiny catalog with mixed markings, its assets served by a loopback HTTP server."""
    root = tmp_path_factory.mktemp("marked") / "catalog"
    shutil.copytree(tiny_catalog.root, root)
    with serve(root) as server:
        for path in sorted(root.glob("*/*/*.json")):
            doc = json.loads(path.read_text())
            m = MARKS[_key(doc["id"])]
            if m is not None:
                doc["properties"]["aquila:marking"] = m
            if doc["id"].startswith(ASSET_MARK[0]):
                doc["assets"][ASSET_MARK[1]]["aquila:marking"] = ASSET_MARK[2]
            rel = path.parent.relative_to(root).as_posix()
            for asset in doc["assets"].values():
                asset["href"] = f"{server.url}/{rel}/{asset['href'].removeprefix('./')}"
            path.write_text(json.dumps(doc))
        (root.parent / "groups.yaml").write_text("groups:\n  DUTCH: [NLD]\n  NORDIC: [NOR]\n")
        yield root, server


def expected_label(ids: list[str]) -> dict:
    """Computed here, independently: rank by the default order, intersect, unite."""
    ms = [MARKS[_key(i)] for i in ids]
    ms += [ASSET_MARK[2] for i in ids if i.startswith(ASSET_MARK[0])]
    order = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]
    releasable = set(ms[0]["releasable_to"])
    for m in ms:
        releasable &= set(m["releasable_to"])
    return {
        "classification": max((m["classification"] for m in ms), key=order.index),
        "releasable_to": sorted(releasable),
        "caveats": sorted({c for m in ms for c in m["caveats"]}),
        "licences": sorted({m["licence"] for m in ms}),
        "owners": sorted({m["owner"] for m in ms}),
    }


AUDIENCES = {
    "nld-nor": (
        {"releasable_to": ["NLD", "NOR"]},
        {"S2B_32TNR_20250620", "S2B_32TNR_20250625", "20250629_095537"},
    ),
    "dutch-confidential": (
        {"group": "DUTCH", "groups_file": "../groups.yaml", "clearance": "CONFIDENTIAL"},
        {"S2B_32TNR_20250620", "S2B_32TNR_20250625", "LC09_L2SP_194028_20250616"},
    ),
}


def marked_spec(root: Path, out: Path, server_url: str, audience: dict, **extra) -> dict:
    spec = make_spec_dict(root, out, bounds=(500000, 5000000, 504000, 5004000), **extra)
    spec["audience"] = audience
    spec["allowed_roots"] = [server_url + "/"]
    return spec


def all_ids(root: Path) -> set[str]:
    return {p.stem for p in root.glob("*/*/*.json") if p.stem != "collection"}


@pytest.mark.parametrize("name", sorted(AUDIENCES))
def test_each_audience_gets_exactly_its_scenes_and_label(marked, tmp_path, name):
    root, server = marked
    audience, keys = AUDIENCES[name]
    spec = spec_from_dict(marked_spec(root, tmp_path, server.url, audience), base_dir=root)
    server.requests.clear()
    report = run_workflow(spec, options=RunOptions(direct=True))
    assert report.status == "success", report.error
    used = set(report.scenes_used)
    assert {_key(i) for i in used} == keys
    withheld = all_ids(root) - used
    assert report.withheld == len(withheld)
    # withheld before any read: the asset server saw no request for them, but saw the used ones
    for item in withheld:
        assert not [p for p in server.paths() if item in p], item
    for item in used:
        assert [p for p in server.paths() if item in p], item
    label = expected_label(sorted(used))
    assert set(spec.audience.releasable_to or ["NLD"]) <= set(label["releasable_to"])
    assert report.labels["cube"] == report.labels["mosaic (median)"] == label
    for store in ("cube.zarr", "mosaic.zarr"):
        attrs = json.loads((tmp_path / store / "zarr.json").read_text())["attributes"]
        assert attrs["aquila:label"] == label
        stac = json.loads((tmp_path / f"{store}.stac.json").read_text())
        assert stac["properties"]["aquila:label"] == label
        assert stac["properties"]["start_datetime"] <= stac["properties"]["end_datetime"]
    cube = json.loads((tmp_path / "cube.zarr" / "zarr.json").read_text())["attributes"]
    mosaic = json.loads((tmp_path / "mosaic.zarr" / "zarr.json").read_text())["attributes"]
    for slot, slot_label in zip(mosaic["sources"], cube["aquila:slot_labels"], strict=True):
        assert slot["label"] == slot_label == expected_label(slot["scenes"])
    op = tmp_path / "test.operator-report.json"
    assert stat.S_IMODE(os.stat(op).st_mode) == 0o600
    listed = {w["item"]: w["reason"] for w in json.loads(op.read_text())["withheld"]}
    assert set(listed) == withheld
    assert (
        listed[next(i for i in withheld if i.startswith("LC09_L2SP_194028_20250627"))] == "unmarked"
    )
    assert listed[next(i for i in withheld if i.startswith("20250603"))] == "bad_marking"


def test_unmarked_open_data_only_when_allowed(marked, tmp_path):
    root, server = marked
    audience = AUDIENCES["nld-nor"][0]
    base = marked_spec(root, tmp_path, server.url, audience)
    strict = discover(spec_from_dict(base, base_dir=root))
    lenient = discover(spec_from_dict(base | {"allow_unmarked": True}, base_dir=root))
    unmarked = {s.id for s in lenient.scenes} - {s.id for s in strict.scenes}
    assert {_key(i) for i in unmarked} == {"LC09_L2SP_194028_20250627"}
    markings = {key[1]: m for key, m in lenient.markings}
    assert markings[unmarked.pop()].licences == {"unmarked-open-data"}


def test_no_withheld_id_or_href_leaks(marked, tmp_path, cluster, caplog, capsys):
    """Logs (driver, scheduler, workers), CLI output, task keys, store attributes, STAC sidecars
    and the audience report name no withheld item; the operator report names them all."""
    from distributed import get_task_stream

    from pipeline.cli.main import main

    root, server = marked
    audience, keys = AUDIENCES["nld-nor"]
    spec_file = root.parent / "leak.yaml"
    spec = marked_spec(root, tmp_path, server.url, audience)
    spec["name"] = "leak"
    spec_file.write_text(yaml.safe_dump(spec))
    caplog.set_level(logging.INFO)
    with get_task_stream(cluster) as ts:
        code = main(
            ["run", str(spec_file), "--scheduler", cluster.scheduler.address, "--no-progress"]
        )
    out = capsys.readouterr()
    assert code == 0, out
    report = json.loads((tmp_path / "leak.run-report.json").read_text())
    withheld = all_ids(root) - set(report["scenes_used"])
    assert len(withheld) == 3 and report["withheld"] == 3
    # everything the audience (or anyone watching at INFO) can see
    seen = [out.out, out.err, caplog.text, json.dumps(report)]
    seen += [t["key"] for t in ts.data]
    seen += [line for _, line in cluster.get_scheduler_logs()]
    seen += [line for logs in cluster.get_worker_logs().values() for _, line in logs]
    for path in tmp_path.rglob("*"):
        if (
            path.is_file()
            and path.name.endswith((".json", ".stac.json"))
            and "operator-report" not in path.name
        ):
            seen.append(path.read_text())
    seen = "\n".join(seen)
    assert any(t["key"].startswith("aquila-leak-chunk-r") for t in ts.data)  # real targets
    assert all(i in seen for i in report["scenes_used"]) and "INFO" in caplog.text
    assert "operator report" in out.out  # the CLI points to it
    for item in withheld:
        assert item not in seen, item
        assert f"{server.url}/" + item not in seen
    op = json.loads((tmp_path / "leak.operator-report.json").read_text())
    assert {w["item"] for w in op["withheld"]} == withheld


def test_audience_spec_is_validated(tmp_path):
    from pipeline.errors import SpecError

    base = make_spec_dict(tmp_path, tmp_path, bounds=(0, 0, 1000, 1000))
    with pytest.raises(SpecError):
        spec_from_dict(
            base | {"audience": {"releasable_to": ["NLD"], "group": "X"}}, base_dir=tmp_path
        )
    with pytest.raises(SpecError):
        spec_from_dict(base | {"audience": {"group": "X"}}, base_dir=tmp_path)
