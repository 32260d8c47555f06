"""Where the time goes, on a real cluster: readable task keys, one Dask span per run, the chunk
phases as Dask fine metrics on the scheduler and in the report, and ``--performance-report``.

Real parts only: the tiny generated catalog, the session's LocalCluster (2 processes × 1
thread), the ``aquila`` command line in this process (``--scheduler`` at that cluster).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from distributed import get_task_stream

from pipeline.cli.main import main
from pipeline.engine.jobs import PHASES
from tests.conftest import make_spec_dict


def _spec_file(tiny_catalog, tmp_path: Path, name: str) -> Path:
    spec = make_spec_dict(tiny_catalog.root, tmp_path / "out", bounds=tiny_catalog.area_bounds)
    spec["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _aquila(capsys, *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main([*argv, "--json", "--no-progress"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _scheduler_view(client, run_id: str) -> dict[str, Any]:
    """The run's spans and their fine metrics, as the scheduler holds them. Workers send their
    metrics with their heartbeats: ask each for one, then wait until the run's phases are in."""

    async def beat(dask_worker):  # nested: pickled by value for the workers
        await dask_worker.heartbeat()

    def view(dask_scheduler, run_id=run_id):
        from distributed.spans import Span

        spans = list(dask_scheduler.extensions["spans"].find_by_tags(run_id))
        metrics = Span.merge(*spans).cumulative_worker_metrics if spans else {}
        return {
            "names": [list(sp.name) for sp in spans],
            "metrics": {"/".join(map(str, k)): v for k, v in metrics.items()},
            "prefixes": sorted({tg.prefix.name for sp in spans for tg in sp.traverse_groups()}),
            "all_prefixes": sorted(dask_scheduler.task_prefixes),
        }

    deadline = time.monotonic() + 15
    while True:
        client.run(beat)
        seen = client.run_on_scheduler(view)
        phases = {k.split("/")[2] for k, v in seen["metrics"].items() if v > 0}
        if set(PHASES) <= phases or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cli_run(tiny_catalog, cluster, tmp_path_factory):
    """``aquila run --performance-report`` on the session cluster, its task stream recorded."""
    tmp = tmp_path_factory.mktemp("observe-run")
    spec = _spec_file(tiny_catalog, tmp, "observe")
    html = tmp / "perf.html"
    t = time.perf_counter()
    with get_task_stream(cluster) as ts:
        code = main(["run", str(spec), "--scheduler", cluster.scheduler.address,
                     "--performance-report", str(html), "--no-progress", "-q"])
    seconds = time.perf_counter() - t
    report = json.loads((tmp / "out" / "observe.run-report.json").read_text())
    return code, report, html, list(ts.data), seconds


def test_run_report_has_every_phase(cli_run):
    code, report, html, _, seconds = cli_run
    assert code == 0, report["error"]
    print(f"run on the cluster: {seconds:.1f} s; phases {report['seconds_by_phase']}")
    assert list(report["seconds_by_phase"]) == list(PHASES)
    for phase, sec in report["seconds_by_phase"].items():
        assert sec > 0, phase
    # phases are parts of the tasks' compute + write time, never more
    tasks = report["seconds"]["tasks_compute"] + report["seconds"]["tasks_write"]
    assert sum(report["seconds_by_phase"].values()) <= tasks * 1.01
    assert report["products"]["performance report"] == str(html)


def test_task_keys_name_product_phase_and_chunk_never_a_scene(cli_run, tiny_catalog):
    code, report, _, stream, _ = cli_run
    keys = [t["key"] for t in stream if "observe" in str(t["key"])]
    assert len(keys) >= report["tasks"] > 0
    for key in keys:
        assert re.fullmatch(r"aquila-observe-chunk-r\d{3}-c\d{3}-[0-9a-f]{12}", key), key
    ids = {s.item_id for s in tiny_catalog.scenes}
    assert ids and not any(i in key for i in ids for key in keys)


def test_span_and_fine_metrics_on_the_scheduler(cli_run, cluster, tiny_catalog):
    _, report, _, _, _ = cli_run
    seen = _scheduler_view(cluster, report["run_id"])
    assert ["aquila", "observe", report["run_id"]] in seen["names"]
    assert seen["prefixes"] == ["aquila-observe-chunk"]
    for phase in PHASES:
        key = f"execute/aquila-observe-chunk/{phase}/seconds"
        assert seen["metrics"].get(key, 0) > 0, (phase, sorted(seen["metrics"]))
    ids = {s.item_id for s in tiny_catalog.scenes}  # no task prefix on the scheduler names one
    assert not any(i in p for i in ids for p in seen["all_prefixes"])


def test_performance_report_holds_the_task_stream(cli_run):
    _, _, html, _, _ = cli_run
    text = html.read_text()
    assert "bokeh" in text.lower() and "Task Stream" in text
    assert "aquila-observe-chunk" in text


def test_direct_run_reports_the_same_phases(tiny_catalog, tmp_path, capsys):
    spec = _spec_file(tiny_catalog, tmp_path, "direct")
    code, doc = _aquila(capsys, "run", str(spec), "--direct")
    assert code == 0, doc["error"]
    assert list(doc["seconds_by_phase"]) == list(PHASES)
    assert all(sec > 0 for sec in doc["seconds_by_phase"].values()), doc["seconds_by_phase"]


def test_performance_report_with_direct_is_a_usage_error(tiny_catalog, tmp_path, capsys):
    spec = _spec_file(tiny_catalog, tmp_path, "refused")
    html = tmp_path / "perf.html"
    code, doc = _aquila(capsys, "run", str(spec), "--direct", "--performance-report", str(html))
    assert code == 2 and doc["reason"] == "usage" and "--direct" in doc["error"]
    assert not html.exists() and not (tmp_path / "out").exists()
    code, doc = _aquila(capsys, "nightly", str(spec), "--direct",
                        "--performance-report", str(html))
    assert code == 2 and doc["reason"] == "usage"
    assert not html.exists() and not (tmp_path / "out").exists()


def test_nightly_keys_span_phases_and_report(tiny_catalog, cluster, tmp_path, capsys):
    spec = _spec_file(tiny_catalog, tmp_path, "nightobs")
    html = tmp_path / "night.html"
    with get_task_stream(cluster) as ts:
        code, doc = _aquila(capsys, "nightly", str(spec), "--scheduler",
                            cluster.scheduler.address, "--performance-report", str(html))
    assert code == 0, doc["error"]
    assert list(doc["seconds_by_phase"]) == list(PHASES)
    assert all(sec > 0 for sec in doc["seconds_by_phase"].values()), doc["seconds_by_phase"]
    keys = [t["key"] for t in ts.data if "nightobs" in str(t["key"])]
    assert keys and all(
        re.fullmatch(r"aquila-nightobs-night-r\d{3}-c\d{3}-[0-9a-f]{12}", k) for k in keys
    ), keys
    ids = {s.item_id for s in tiny_catalog.scenes}
    assert not any(i in k for i in ids for k in keys)
    seen = _scheduler_view(cluster, doc["run_id"])
    assert ["aquila", "nightobs", doc["run_id"]] in seen["names"]
    assert seen["prefixes"] == ["aquila-nightobs-night"]
    assert "Task Stream" in html.read_text()
    assert doc["products"]["performance report"] == str(html)


def test_a_performance_report_path_that_refuses_costs_the_report_not_the_run(
    tiny_catalog, cluster, tmp_path, capsys
):
    spec = _spec_file(tiny_catalog, tmp_path, "refusing")
    html = tmp_path / "perf.html"
    html.mkdir()  # a folder where the file should go: writing it fails
    code, doc = _aquila(capsys, "run", str(spec), "--scheduler", cluster.scheduler.address,
                        "--performance-report", str(html))
    assert code == 0, doc["error"]
    assert "performance report" not in doc["products"] and not any(html.iterdir())
    assert any(n.startswith(f"no performance report written to {html}") for n in doc["notes"])
