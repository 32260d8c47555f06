"""Aquila's Prometheus series: on a real ``dask scheduler``'s own ``/metrics`` (the plugin), in a
node_exporter textfile (a night on one host), and the dashboard and alert rules that use them."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.engine.metrics_plugin import publish_run_metrics, publish_run_started
from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.engine.run import RunOptions, run_workflow
from pipeline.products.metrics import metric_names, parse_text
from pipeline.spec.workflow import load_spec, spec_from_dict
from tests.adversarial.runs import served_slowly, write_spec
from tests.arrivals import item_files
from tests.asset_server import serve
from tests.nightly_helpers import night_spec

ROOT = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).parent / "dask")
OPEN = {"classification": "UNCLASSIFIED", "releasable_to": ["NLD"], "caveats": [],
        "owner": "NLD", "licence": "CC-BY-4.0"}
FOREIGN = OPEN | {"releasable_to": ["USA"]}  # not releasable to the spec's audience (NLD)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A real ``dask scheduler`` (HTTP on loopback) and one ``dask worker``: (address, url)."""
    port, http = _free_port(), _free_port()
    address, url = f"tcp://127.0.0.1:{port}", f"http://127.0.0.1:{http}/metrics"
    logs = tmp_path_factory.mktemp("dask")
    procs = [subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", f"127.0.0.1:{http}"],
        stdout=subprocess.DEVNULL, stderr=(logs / "scheduler.log").open("w"))]
    try:
        _wait(lambda: _get(url), "the scheduler's /metrics")
        procs.append(subprocess.Popen(
            [DASK, "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
             "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=(logs / "worker.log").open("w")))
        _wait(lambda: 'dask_scheduler_workers{state="idle"} 1.0' in (_get(url) or ""),
              "the worker")
        yield address, url
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture()
def client(scheduler):
    from distributed import Client

    with Client(scheduler[0], timeout="30s") as c:  # the executor uses the default client
        yield c


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except OSError:
        return None


def _wait(ok, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """The endpoint's samples over HTTP: (sample name, labels) → value."""
    text = _get(url)
    assert text is not None, url
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples, name: str, **labels: str) -> float:
    want = frozenset(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def _spec(tmp_path: Path, catalog: Path, name: str, **extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_spec(write_spec(tmp_path / f"{name}.yaml", catalog, tmp_path / "out", name=name,
                                **extra))


# --------------------------------------------------------------------------- the scheduler


def test_runs_accumulate_on_the_schedulers_metrics(scheduler, client, tiny_catalog, tmp_path):
    _, url = scheduler
    wf = "metrics-acc"
    # the tiny demo catalog plus one unreadable item document
    catalog = tmp_path / "catalog"
    shutil.copytree(tiny_catalog.root, catalog)
    items = item_files(catalog)
    broken = next(iter(items.values())).parent.parent / "broken" / "broken.json"
    broken.parent.mkdir()
    broken.write_text("{ not json")
    _link_item(catalog, broken)
    # 1: a plain run of the demo workflow (no audience: the broken item is rejected)
    spec = _spec(tmp_path / "a", catalog, wf)
    assert publish_run_started(client, "run", wf)
    first = run_workflow(spec, options=RunOptions(client=client))
    assert first.status == "success", first.error
    assert {r["reason"] for r in first.rejected} >= {"item_unreadable"}
    assert publish_run_metrics(client, first, "run")
    s = scrape(url)
    ids = {"mode": "run", "workflow": wf}
    assert value(s, "aquila_chunks_written_total", **ids) == first.tasks > 0
    assert value(s, "aquila_runs_total", status="success", **ids) == 1
    assert value(s, "aquila_runs_total", status="failed", **ids) == 0  # made at 0 already
    assert value(s, "aquila_runs_started_total", **ids) == 1
    assert value(s, "aquila_scenes_read_total", **ids) == len(first.scenes_used)
    assert value(s, "aquila_scenes_withheld_total", **ids) == 0
    for reason in {r["reason"] for r in first.rejected}:
        want = sum(r["reason"] == reason for r in first.rejected)
        assert value(s, "aquila_scenes_rejected_total", reason=reason, **ids) == want
    assert value(s, "aquila_last_success_timestamp_seconds", **ids) > time.time() - 600
    assert value(s, "aquila_lag_seconds", **ids) > 0  # the demo's scenes are from 2025
    assert value(s, "dask_scheduler_workers", state="idle") >= 0  # distributed's, same page

    # 2: the same workflow, now with an audience some items are not releasable to (an item
    # whose marking cannot be read is withheld too, under an audience)
    foreign = sorted(items)[:3]
    for item_id, path in items.items():
        doc = json.loads(path.read_text())
        doc["properties"]["aquila:marking"] = FOREIGN if item_id in foreign else OPEN
        path.write_text(json.dumps(doc))
    spec2 = _spec(tmp_path / "b", catalog, wf, audience={"releasable_to": ["NLD"]})
    assert publish_run_started(client, "run", wf)
    second = run_workflow(spec2, options=RunOptions(client=client))
    assert second.status == "success", second.error
    assert second.withheld == len(foreign) + 1
    assert publish_run_metrics(client, second, "run")
    s = scrape(url)
    assert value(s, "aquila_runs_total", status="success", **ids) == 2
    assert value(s, "aquila_runs_started_total", **ids) == 2
    assert value(s, "aquila_chunks_written_total", **ids) == first.tasks + second.tasks
    assert value(s, "aquila_scenes_withheld_total", **ids) == len(foreign) + 1
    for reason in {r["reason"] for r in first.rejected + second.rejected}:
        want = sum(r["reason"] == reason for r in second.rejected + first.rejected)
        assert value(s, "aquila_scenes_rejected_total", reason=reason, **ids) == want
    # no scene id anywhere on the page
    page = _get(url) or ""
    for item_id in items:
        assert item_id not in page


def _link_item(catalog: Path, item: Path) -> None:
    """Add an item link to the item's collection (the static walk follows links)."""
    coll = item.parent.parent / "collection.json"
    doc = json.loads(coll.read_text())
    doc["links"].append({"rel": "item", "href": str(item.relative_to(coll.parent)),
                         "type": "application/json"})
    coll.write_text(json.dumps(doc))


def test_started_shows_during_a_run(scheduler, client, tiny_catalog, tmp_path):
    _, url = scheduler
    wf = "metrics-during"
    catalog = tmp_path / "catalog"
    shutil.copytree(tiny_catalog.root, catalog)
    path = write_spec(tmp_path / "w.yaml", catalog, tmp_path / "out", name=wf)
    with serve(catalog) as server:
        served_slowly(catalog, server, path, latency_s=0.05)
        spec = load_spec(path)
        result: dict = {}

        def run() -> None:
            publish_run_started(client, "run", wf)
            result["report"] = run_workflow(spec, options=RunOptions(client=client))
            publish_run_metrics(client, result["report"], "run")

        t = threading.Thread(target=run)
        t.start()
        ids = {"mode": "run", "workflow": wf}
        seen_running = False
        while t.is_alive():
            s = scrape(url)
            if value(s, "aquila_runs_started_total", **ids) == 1:
                seen_running = value(s, "aquila_runs_total", **ids) == 0 and t.is_alive()
                break
            time.sleep(0.05)
        t.join(timeout=120)
    assert seen_running, "runs_started was not seen before the run finished"
    assert result["report"].status == "success", result["report"].error
    assert value(scrape(url), "aquila_runs_total", status="success", **ids) == 1


def test_a_missing_scheduler_or_a_bad_report_never_raises(tiny_catalog, tmp_path):
    assert publish_run_metrics(None, object(), "run") is False  # unreadable report: logged
    port = _free_port()  # nothing listens there
    t = time.monotonic()
    assert publish_run_started(f"tcp://127.0.0.1:{port}", "run", "x", timeout="1s") is False
    assert time.monotonic() - t < 15


def test_a_side_connection_tries_10_s_or_dasks_shorter_connect_timeout():
    import dask

    from pipeline.engine.metrics_plugin import side_timeout

    with dask.config.set({"distributed.comm.timeouts.connect": "30s"}):
        assert side_timeout() == "10s"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert side_timeout() == "2s"
        port = _free_port()  # nothing listens there
        t = time.monotonic()
        assert publish_run_started(f"tcp://127.0.0.1:{port}", "run", "x") is False
        assert time.monotonic() - t < 8  # not the 10 s default


# --------------------------------------------------------------------------- the textfile


def test_nightly_textfile_is_atomic_and_accumulates(tiny_catalog, tmp_path):
    store = tmp_path / "night.icechunk"
    spec = spec_from_dict(night_spec(tiny_catalog.root, tmp_path / "out", store=store),
                          base_dir=tmp_path)
    prom = tmp_path / "textfile" / "aquila.prom"
    reports = []
    for _ in range(2):  # a night that publishes, then one with nothing new
        report = run_nightly(spec, options=NightOptions(store=store, direct=True))
        reports.append(report)
        assert publish_run_metrics(None, report, "nightly", textfile=prom)
    assert [r.status for r in reports] == ["success", "nothing_new"]
    assert [p.name for p in prom.parent.iterdir()] == ["aquila.prom"]  # no temporary left
    text = prom.read_text()
    fams = {f.name for f in text_string_to_metric_families(text)}  # it parses
    assert "aquila_runs" in fams
    tally = parse_text(text)
    ids = {"mode": "nightly", "workflow": spec.name}
    assert tally.value("aquila_runs", status="success", **ids) == 1
    assert tally.value("aquila_runs", status="nothing_new", **ids) == 1
    assert tally.value("aquila_runs_started", **ids) == 2
    assert tally.value("aquila_chunks_written", **ids) == reports[0].chunks["tasks"] > 0
    assert tally.value("aquila_scenes_read", **ids) == len(reports[0].new)
    assert tally.value("aquila_read_retries", **ids) == sum(reports[0].retries.values())
    newest = tally.value("aquila_newest_scene_timestamp_seconds", **ids)
    last = tally.value("aquila_last_success_timestamp_seconds", **ids)
    assert newest is not None and last is not None
    assert tally.value("aquila_lag_seconds", **ids) == pytest.approx(last - newest)
    stac = json.loads((store.parent / f"{store.name}.stac.json").read_text())
    assert newest == pytest.approx(_epoch(stac["properties"]["end_datetime"]))


def _epoch(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- dashboard, alerts

NAME = re.compile(r"\b(?:aquila|dask)_\w+")


def _check_names(expr: str) -> None:
    """Every series an expression names is one Aquila (or distributed) exports."""
    names = set(NAME.findall(expr))
    assert names, expr
    for name in names:
        if name.startswith("aquila_"):
            assert name in metric_names(), (name, expr)
        else:
            assert name in DASK_SERIES, (name, expr)


DASK_SERIES = {"dask_scheduler_workers", "dask_scheduler_clients", "dask_scheduler_tasks"}


def test_grafana_dashboard_uses_only_exported_series():
    dash = json.loads((ROOT / "cluster" / "grafana-aquila.json").read_text())
    assert dash["title"] and dash["uid"]
    titles = {p["title"] for p in dash["panels"]}
    for want in ("Nights succeeded", "Lag", "Withheld", "Rejects", "Chunks per second",
                 "retries"):
        assert any(want.lower() in t.lower() for t in titles), want
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            _check_names(target["expr"])
    for var in dash["templating"]["list"]:
        _check_names(var["definition"])


def test_alert_rules_are_well_formed_and_use_exported_series():
    doc = yaml.safe_load((ROOT / "cluster" / "prometheus-alerts.yaml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {g["name"] for g in doc["groups"]} == {"aquila"}
    names = {r["alert"] for r in rules}
    assert {"AquilaNightFailed", "AquilaNightLate", "AquilaWithheldSurge",
            "AquilaRetryStorm"} <= names
    for r in rules:
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, r
        assert re.fullmatch(r"\d+[smh]", r["for"]), r
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        _check_names(r["expr"])


def test_the_cli_publishes_to_the_schedulers_metrics_and_the_textfile(
    scheduler, tiny_catalog, tmp_path
):
    """`aquila run --scheduler ... --metrics-textfile`: the run's series reach the scheduler's
    /metrics and the textfile; a plain run (no scheduler, no textfile) writes no file."""
    from tests.adversarial.runs import aquila

    address, url = scheduler
    spec = write_spec(tmp_path / "cli.yaml", tiny_catalog.root, tmp_path / "out", name="clirun")
    prom = tmp_path / "aquila.prom"
    done = aquila("run", str(spec), "--scheduler", address, "--no-progress",
                  "--metrics-textfile", str(prom))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "clirun.run-report.json").read_text())
    for samples in (scrape(url), _file_samples(prom)):
        assert value(samples, "aquila_runs_total", workflow="clirun", status="success") == 1
        assert value(samples, "aquila_chunks_written_total", workflow="clirun") == report["tasks"]
    assert value(scrape(url), "aquila_runs_started_total",
                 workflow="clirun") == 1


def _file_samples(path: Path) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}
