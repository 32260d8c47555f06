"""Flaky storage end to end: a nightly run reads every COG over HTTP from a loopback server that
injects faults, on a real LocalCluster. Transient faults are retried and the scene is ingested;
permanent ones reject the scene after one attempt, with its reason in the report, and no slot is
ever filled with nodata for it: the store equals a clean full run over the catalog without the
rejected scenes."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.demo import generate_catalog
from pipeline.engine.cluster import ClusterOptions
from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.io.reader import ReaderSettings
from pipeline.io.retry import RetryPolicy
from pipeline.spec.workflow import spec_from_dict
from tests.arrivals import item_files, publish
from tests.asset_server import serve
from tests.nightly_helpers import assert_same, current, full_run, load, night_spec


@pytest.fixture(scope="module")
def nine(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "catalog"
    cat = generate_catalog(root, preset="tiny", scenes_per_provider=3)
    return root, sorted(cat.scenes, key=lambda s: s.datetime)


def _serve_assets(root, server) -> None:
    """Point every asset of the catalog at the server (GDAL then reads it over /vsicurl/)."""
    for path in item_files(root).values():
        doc = json.loads(path.read_text())
        rel = path.parent.relative_to(root).as_posix()
        for asset in doc["assets"].values():
            asset["href"] = f"{server.url}/{rel}/{asset['href'].removeprefix('./')}"
        path.write_text(json.dumps(doc))


def _first_asset(root, scene_id) -> str:
    """The URL path of the first asset a read of the scene opens (its first band's)."""
    doc = json.loads(item_files(root)[scene_id].read_text())
    key = next(k for k, a in doc["assets"].items() if "data" in a.get("roles", []))
    return "/" + doc["assets"][key]["href"].split("/", 3)[3]


def test_transient_faults_are_retried_and_permanent_ones_reject_the_scene(nine, cluster, tmp_path):
    source, scenes = nine
    root = tmp_path / "catalog"
    shutil.copytree(source, root)
    flaky, missing, truncated, forbidden, slow = (scenes[i].item_id for i in (0, 2, 4, 5, 7))
    with serve(root) as server:
        _serve_assets(root, server)

        def arm(kind, _value) -> None:  # faults meet the reads, not the listing's identity HEADs
            if kind != "discovered":
                return
            server.answers.clear()  # the reads' answers only
            server.script[_first_asset(root, flaky)] = [503, 503]
            server.always[_first_asset(root, missing)] = 404
            path = _first_asset(root, truncated)
            server.truncate[path] = (root / path.lstrip("/")).stat().st_size * 2 // 3
            server.always[_first_asset(root, forbidden)] = 403
            server.script[_first_asset(root, slow)] = ["timeout"]
            server.stall_s = 2.5

        spec = night_spec(
            root,
            tmp_path / "out",
            store=tmp_path / "n.icechunk",
            allowed_roots=[str(root), server.url + "/"],
        )
        report = run_nightly(
            spec_from_dict(spec, base_dir=tmp_path),
            options=NightOptions(
                store=tmp_path / "n.icechunk",
                cluster=ClusterOptions(scheduler=cluster.scheduler.address),
                reader=ReaderSettings(
                    retry=RetryPolicy(attempts=4, base_s=0.05, cap_s=0.2), http_timeout_s=1
                ),
            ),
            on_event=arm,
        )
        answers = {
            sid: server.answered(_first_asset(root, sid)) for sid in (flaky, missing, forbidden)
        }
    assert report.status == "partial" and report.exit_code == 3, report.error
    rejected = {r["item"]: r for r in report.rejected}
    assert {k: (v["stage"], v["reason"], v["attempts"]) for k, v in rejected.items()} == {
        missing: ("read", "asset_not_found", 1),
        truncated: ("read", "asset_corrupt", 1),
        forbidden: ("read", "asset_forbidden", 1),
    }
    assert "truncated" in rejected[truncated]["message"]
    # 503, 503, 200: ingested after two retries; the stalled request: after one
    assert report.retries == {flaky: 2, slow: 1}
    assert answers[flaky][:2] == [503, 503] and 200 in answers[flaky]
    # a permanent failure is asked once per worker process at most, never retried
    for sid, status in ((missing, 404), (forbidden, 403)):
        assert set(answers[sid]) == {status} and len(answers[sid]) <= 2, answers[sid]
    assert report.passes == 2  # the night was rebuilt without the three scenes
    # no slot for a rejected scene: the store equals a clean run over the other six
    clean = tmp_path / "clean"
    shutil.copytree(source, clean)
    for sid in (missing, truncated, forbidden):
        shutil.rmtree(item_files(clean)[sid].parent)
    publish(clean, tmp_path / "clean-live", [i for i in item_files(clean)])
    reference = full_run(night_spec(tmp_path / "clean-live", tmp_path / "o"), tmp_path / "ref")
    night = current(tmp_path / "n.icechunk")
    assert_same(night, reference)
    sources = load(night, "latest").attrs["sources"]
    assert len(sources) == 6 and all(s["scenes"] for s in sources)
    assert not {missing, truncated, forbidden} & {i for s in sources for i in s["scenes"]}
