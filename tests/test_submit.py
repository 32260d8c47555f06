"""Workflows submitted to a running cluster (`aquila submit/status/logs/cancel`).

Real parts only: a ``dask scheduler`` and ``dask worker`` processes started here, the
``aquila`` console script in separate processes (the submitting process exits before the run
ends: the engineer has disconnected), products compared with a ``--direct`` run of the same
spec, and a cancelled submission checked to leave the previous product byte-identical.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.adversarial.runs import (
    QUICK_CONNECT,
    aquila,
    digest,
    leftovers,
    served_slowly,
    write_spec,
)
from tests.arrivals import item_files
from tests.asset_server import serve

DASK = str(Path(sys.executable).parent / "dask")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A scheduler and two single-thread worker processes, as an engineer's cluster would be."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    work = tmp_path_factory.mktemp("dask")
    procs = [subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address",
         ":0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen(
            [DASK, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
             "--local-directory", str(work)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _product(out: Path) -> dict[str, str]:
    """The mosaic product and its sidecar, by digest (the report and lock file may change)."""
    return {k: v for k, v in digest(out).items()
            if k.startswith("mosaic.zarr") and not k.endswith(".lock")}


def _json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _mosaic(out: Path) -> xr.Dataset:
    return xr.open_zarr(out / "mosaic.zarr", consolidated=False).load()


def test_submit_disconnect_then_status_from_a_new_process(tiny_catalog, scheduler, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", tiny_catalog.root, tmp_path / "out")
    sub = _json(aquila("submit", str(spec), "--scheduler", scheduler, "--json"))
    assert sub["workflow"] == "test" and sub["scheduler"] == scheduler
    # the submitting process has exited; a new one follows the run to its end
    waited = aquila("status", sub["id"], "--scheduler", scheduler, "--wait", "--interval",
                    "0.5", "--json", timeout=300)
    state = _json(waited)
    assert state["state"] == "success" and state["exit_code"] == 0
    assert Path(state["products"]["mosaic (median)"]) == tmp_path / "out" / "mosaic.zarr"
    report = json.loads(Path(state["report"]).read_text())
    assert report["status"] == "success" and report["run_id"] == state["run_id"]

    # the same spec run here, directly: the submitted product holds the same values
    direct = write_spec(tmp_path / "direct.yaml", tiny_catalog.root, tmp_path / "direct")
    done = aquila("run", str(direct), "--direct", "--no-progress")
    assert done.returncode == 0, done.stderr
    got, want = _mosaic(tmp_path / "out"), _mosaic(tmp_path / "direct")
    for band in ("blue", "green", "red", "nir"):
        np.testing.assert_array_equal(got[band].values, want[band].values)

    # every submission is listed; the log says what happened, with counts and no scene id
    listed = _json(aquila("status", "--scheduler", scheduler, "--json"))
    assert listed[sub["id"]]["state"] == "success"
    lines = [line["text"] for line in _json(aquila("logs", sub["id"], "--scheduler", scheduler,
                                                   "--json"))["lines"]]
    assert any(line.startswith("scenes: ") for line in lines)
    assert any(line.startswith("success: run ") for line in lines)
    quiet = aquila("-q", "logs", sub["id"], "--scheduler", scheduler)
    assert quiet.returncode == 0 and (quiet.stdout, quiet.stderr) == ("", "")
    ids = set(item_files(tiny_catalog.root))
    assert ids and not [line for line in lines if any(i in line for i in ids)]


@pytest.mark.slow  # ~40 s: reads slowed to 0.3 s each so that the run is still going
def test_cancel_stops_a_running_submission_and_keeps_the_old_product(
    tiny_catalog, scheduler, tmp_path
):
    out = tmp_path / "out"
    first = write_spec(tmp_path / "first.yaml", tiny_catalog.root, out)
    assert aquila("run", str(first), "--direct", "--no-progress").returncode == 0
    before = _product(out)
    catalog = tmp_path / "catalog"
    shutil.copytree(tiny_catalog.root, catalog)
    spec = write_spec(tmp_path / "spec.yaml", catalog, out)
    with serve(catalog) as server:
        served_slowly(catalog, server, spec, latency_s=0.3)  # seconds per chunk task
        sub = _json(aquila("submit", str(spec), "--scheduler", scheduler, "--json"))
        end = time.monotonic() + 120
        while True:  # until the run has started writing its build beside the product
            state = _json(aquila("status", sub["id"], "--scheduler", scheduler, "--json"))
            if state["state"] == "running" and list(out.glob(".mosaic.zarr.aquila-build-*")):
                break
            assert state["state"] in ("queued", "running"), state
            assert time.monotonic() < end, state
            time.sleep(0.2)
        asked = _json(aquila("cancel", sub["id"], "--scheduler", scheduler, "--json"))
        assert asked.get("cancel_requested") or asked["state"] == "cancelled"
        waited = aquila("status", sub["id"], "--scheduler", scheduler, "--wait", "--interval",
                        "0.5", "--json", timeout=300)
    assert waited.returncode == 130, waited.stdout + waited.stderr
    assert json.loads(waited.stdout)["state"] == "cancelled"
    assert _product(out) == before  # the previous product, byte for byte
    assert leftovers(out) == []
    report = json.loads((out / "test.run-report.json").read_text())
    assert report["status"] == "interrupted"


def test_submission_errors_say_what_to_do(scheduler, tmp_path):
    unknown = aquila("status", "20990101T000000Z-00000000", "--scheduler", scheduler)
    assert unknown.returncode == 2
    assert "no submission" in unknown.stderr and "aquila status" in unknown.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\n")
    refused = aquila("submit", str(bad), "--scheduler", scheduler)
    assert refused.returncode == 2 and "spec" in refused.stderr
    nowhere = aquila("logs", "x", "--scheduler", f"tcp://127.0.0.1:{_free_port()}", timeout=120,
                     env=QUICK_CONNECT)  # distributed retries for its connect timeout: 30 s
    assert nowhere.returncode == 1 and "cluster_unreachable" in nowhere.stderr
    no_cluster = aquila("submit", str(bad))
    assert no_cluster.returncode == 2 and "--scheduler" in no_cluster.stderr
