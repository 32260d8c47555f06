"""Chaos: a nightly job SIGKILLed at five points, a worker SIGKILLed mid-run, two runs at once.

The job is a real ``aquila nightly`` subprocess (its own process group: the driver, the local
cluster's nannies and workers). A test-only option makes it stop at a named point; the test then
SIGKILLs the whole group, checks what a reader sees, reruns, and compares the store with a night
that was never disturbed (and with a plain full run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline.engine.cluster import ClusterOptions
from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.products.transaction import NightlyStore
from pipeline.spec.workflow import spec_from_dict
from tests.arrivals import publish
from tests.nightly_helpers import (
    assert_same,
    current,
    full_run,
    night_spec,
    time_strictly_increasing,
)
from tests.pausing import child_env

pytestmark = pytest.mark.slow

POINTS = ["read", "write", "merged", "committed", "published"]


@pytest.fixture(scope="module")
def nights(tiny_catalog, tmp_path_factory):
    """Night 1 (four scenes) committed; night 2 (all six) run undisturbed for reference."""
    root = tmp_path_factory.mktemp("chaos")
    ids = [s.item_id for s in sorted(tiny_catalog.scenes, key=lambda s: s.datetime)]
    live = root / "live"
    publish(tiny_catalog.root, live, [ids[0], ids[1], ids[3], ids[4]])
    base = root / "base.icechunk"
    spec = night_spec(live, root / "out", store=base)
    r1 = run_nightly(
        spec_from_dict(spec, base_dir=root), options=NightOptions(store=base, direct=True)
    )
    assert r1.status == "success"
    publish(tiny_catalog.root, live, ids)  # night 2: a late arrival (ids[2]) and a new scene
    clean = root / "clean.icechunk"
    shutil.copytree(base, clean)
    r2 = run_nightly(
        spec_from_dict(spec, base_dir=root), options=NightOptions(store=clean, direct=True)
    )
    assert r2.status == "success" and r2.slots["first_renumbered"] is not None
    reference = full_run(spec, root / "full")
    assert_same(current(clean), reference)
    (root / "spec.json").write_text(json.dumps(spec))
    return root, spec, base, clean


def _job(root: Path, store: Path, *extra: str, pause: tuple[str, Path]) -> subprocess.Popen:
    """``aquila nightly`` in its own process group, pausing at ``pause`` (tests/pausing.py)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli.main",
            "nightly",
            str(root / "spec.json"),
            "--store",
            str(store),
            "--workers",
            "2",
            "--no-progress",
            "--dashboard",
            "127.0.0.1:0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=child_env(*pause),
    )


def _wait_for(path: Path, job: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if job.poll() is not None:
            raise AssertionError(
                f"the job ended ({job.returncode}) before {path.name}:\n"
                f"{job.stdout.read() if job.stdout else ''}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.1)


def _kill_group(job: subprocess.Popen) -> None:
    family = psutil.Process(job.pid).children(recursive=True)  # nannies, workers
    assert family, "the job runs a local cluster of worker processes"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"survived the SIGKILL of the job: {alive}"


def _ledger(store: Path):
    state = NightlyStore.open(store, create=False).state()
    return sorted((e.key, e.checksum, e.status, e.used_in) for e in state.entries), state.slots


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_any_point_then_rerun_equals_the_undisturbed_night(nights, tmp_path, point):
    root, spec, base, clean = nights
    store = tmp_path / "night.icechunk"
    shutil.copytree(base, store)
    before = NightlyStore.open(store, create=False).tip()
    marks = tmp_path / "marks"
    marks.mkdir()
    job = _job(root, store, pause=(point, marks))
    _wait_for(marks / f"paused-{point}", job)
    if point != "published":  # a reader during the run sees the last complete night
        assert NightlyStore.open(store, create=False).tip() == before
        assert_same(current(store), current(base))
    _kill_group(job)
    tip = NightlyStore.open(store, create=False).tip()
    assert (tip != before) == (point == "published")
    rerun = run_nightly(
        spec_from_dict(spec, base_dir=root), options=NightOptions(store=store, direct=True)
    )
    assert rerun.status == ("nothing_new" if point == "published" else "success"), rerun.error
    assert rerun.lock["took_over"] is not None  # the killed run's lock record, taken over
    if point != "published":
        assert any("unpublished branch" in n for n in rerun.notes)
    assert_same(current(store), current(clean))
    assert time_strictly_increasing(current(store))
    assert _ledger(store) == _ledger(clean)
    assert len(NightlyStore.open(store, create=False).nights()) == 2
    assert NightlyStore.open(store, create=False).stale_branches() == []


def test_a_lost_worker_does_not_change_the_result(nights, tmp_path):
    """Three worker processes; when the first chunk task finishes, SIGKILL a worker that is
    busy. Dask reruns its tasks elsewhere; the forks merged are one per chunk order."""
    from distributed import Client, LocalCluster

    root, spec, base, clean = nights
    store = tmp_path / "night.icechunk"
    shutil.copytree(base, store)
    killed: list[int] = []
    with (
        LocalCluster(
            n_workers=3,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)

        def kill_a_busy_worker(done: int, total: int) -> None:
            if done != 1 or killed:
                return
            busy = max(client.processing().items(), key=lambda kv: len(kv[1]))[0]
            killed.append(pids[busy])
            os.kill(pids[busy], signal.SIGKILL)

        report = run_nightly(
            spec_from_dict(spec, base_dir=root),
            options=NightOptions(
                store=store, cluster=ClusterOptions(scheduler=cluster.scheduler_address)
            ),
            progress=kill_a_busy_worker,
        )
        assert killed and not psutil.pid_exists(killed[0])
        assert killed[0] not in client.run(os.getpid).values()
    assert report.status == "success", report.error
    assert_same(current(store), current(clean))
    assert _ledger(store) == _ledger(clean)


def test_two_runs_at_once_exactly_one_writes(nights, tmp_path):
    root, spec, base, clean = nights
    store = tmp_path / "night.icechunk"
    shutil.copytree(base, store)
    marks = tmp_path / "marks"
    marks.mkdir()
    first = _job(root, store, pause=("merged", marks))
    _wait_for(marks / "paused-merged", first)
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli.main",
            "nightly",
            str(root / "spec.json"),
            "--store",
            str(store),
            "--direct",
            "--no-progress",
            "--report",
            str(tmp_path / "second.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert second.returncode == 75, second.stdout + second.stderr
    assert "busy" in second.stdout and "one run at a time" in second.stdout
    busy = json.loads((tmp_path / "second.json").read_text())
    assert busy["status"] == "busy" and busy["snapshot"] is None
    (marks / "resume-merged").touch()
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    nights_now = NightlyStore.open(store, create=False).nights()
    assert len(nights_now) == 2 and nights_now[0].run_id != busy["run_id"]
    assert busy["error"] and nights_now[0].run_id in busy["error"]
    assert_same(current(store), current(clean))


def test_reader_threads_only_ever_see_complete_nights(nights, tmp_path):
    """While a night is written, readers opening the store in a loop see the old night or the
    new one, never anything in between."""
    root, spec, base, clean = nights
    store = tmp_path / "night.icechunk"
    shutil.copytree(base, store)
    seen, stop = [], threading.Event()

    def read_loop() -> None:
        while not stop.is_set():
            s = current(store)
            seen.append(s.snapshot_id)
            time.sleep(0.02)

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        report = run_nightly(
            spec_from_dict(spec, base_dir=root), options=NightOptions(store=store, direct=True)
        )
    finally:
        stop.set()
        reader.join()
    published = {n.snapshot for n in NightlyStore.open(store, create=False).nights()}
    assert report.status == "success" and set(seen) <= published and len(published) == 2
