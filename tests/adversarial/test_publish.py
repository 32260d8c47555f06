"""Products are never destroyed: a product path that is not Aquila's is refused untouched, a failed
or killed rerun leaves the previous product byte for byte, a reader only ever sees a complete
product, and two runs on one store exclude each other.

Everything runs the real ``aquila`` console script on generated COGs (read over a loopback HTTP
server where a run must be slow enough to be caught mid-way); the expectation is always a digest
of every file taken before the attack."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.adversarial.runs import (
    AQUILA,
    QUICK_CONNECT,
    aquila,
    digest,
    last_line,
    leftovers,
    served_slowly,
    write_spec,
)
from tests.asset_server import serve
from tests.conftest import make_spec_dict

MOSAIC_VARS = {"blue", "green", "red", "nir", "count"}


# --------------------------------------------------------------------------- helpers


def wait_for(predicate, *, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def building(out: Path) -> bool:
    """A run's build directory exists and its layout is written (the run is mid-way)."""
    return any((p / "zarr.json").exists() for p in out.glob(".mosaic.zarr.aquila-build-*"))


# --------------------------------------------------------------------------- not Aquila's


def _user_folder(store: Path, good: Path) -> None:
    store.mkdir(parents=True)
    (store / "notes.txt").write_text("a user's notes")


def _user_file(store: Path, good: Path) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text("a user's file that happens to have the product's name")


def _link_to_folder(store: Path, good: Path) -> None:
    target = store.parent.parent / "elsewhere"
    target.mkdir(parents=True)
    (target / "data.bin").write_bytes(b"\x00\x01")
    store.parent.mkdir(parents=True, exist_ok=True)
    store.symlink_to(target, target_is_directory=True)


def _foreign_zarr(store: Path, good: Path) -> None:
    import zarr

    zarr.open_group(str(store), mode="w", zarr_format=3).attrs["title"] = "someone else's"


def _product_with_a_user_file(store: Path, good: Path) -> None:
    shutil.copytree(good / "mosaic.zarr", store)
    (store / "README.txt").write_text("kept with the product by a user")


def _parent_is_a_file(store: Path, good: Path) -> None:
    store.parent.parent.mkdir(parents=True, exist_ok=True)
    store.parent.write_text("a file where the products folder should be")


def _users_sidecar(store: Path, good: Path) -> None:
    shutil.copytree(good / "mosaic.zarr", store)
    store.with_name(store.name + ".stac.json").write_text('{"title": "a user\'s own notes"}')


def _sidecar_folder(store: Path, good: Path) -> None:
    shutil.copytree(good / "mosaic.zarr", store)
    folder = store.with_name(store.name + ".stac.json")
    folder.mkdir()
    (folder / "x.json").write_text("{}")


NOT_OURS = {
    "a folder holding a user's file": _user_folder,
    "a regular file": _user_file,
    "a symbolic link to a folder": _link_to_folder,
    "a zarr store Aquila did not write": _foreign_zarr,
    "an Aquila product holding a user's file": _product_with_a_user_file,
    "a path below a regular file": _parent_is_a_file,
    "an Aquila product beside a sidecar name holding a user's file": _users_sidecar,
    "an Aquila product beside a sidecar name holding a folder": _sidecar_folder,
}


@pytest.mark.parametrize("case", list(NOT_OURS))
def test_a_store_path_that_is_not_aquilas_is_refused_untouched(case, good, tiny_catalog,
                                                               tmp_path):
    store = tmp_path / "out" / "mosaic.zarr"
    NOT_OURS[case](store, good)
    spec = write_spec(tmp_path / "spec.yaml", tiny_catalog.root, tmp_path / "out")
    before = digest(tmp_path)
    done = aquila("run", str(spec), "--direct", "--no-progress")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    line = last_line(done.stderr)
    assert "mosaic.zarr" in line and ("store_not_aquila" in line or "store_path" in line), line
    assert digest(tmp_path) == before  # not a byte changed, nothing added (no report, no lock)


def test_the_workflows_own_folder_as_a_store_is_refused_untouched(tiny_catalog, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", tiny_catalog.root, tmp_path / "out")
    doc = yaml.safe_load(spec.read_text())
    doc["products"]["mosaic"]["store"] = "."  # the folder holding the spec itself
    spec.write_text(yaml.safe_dump(doc))
    (tmp_path / "notes.md").write_text("the workflow's notes")
    before = digest(tmp_path)
    done = aquila("run", str(spec), "--direct", "--no-progress")
    assert done.returncode == 2 and "store_not_aquila" in last_line(done.stderr), done.stderr
    assert digest(tmp_path) == before


def test_a_product_of_an_earlier_version_is_replaced(rerun):
    """Earlier versions wrote no ``aquila:product`` marker; their run id and workflow
    attributes identify them."""
    spec, _, out = rerun
    meta = out / "mosaic.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"]["aquila:product"]
    meta.write_text(json.dumps(doc))
    old_run = doc["attributes"]["aquila:run_id"]
    done = aquila("run", str(spec), "--direct", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    now = json.loads(meta.read_text())["attributes"]
    assert now["aquila:run_id"] != old_run and now["aquila:product"] == "mosaic (median)"
    assert leftovers(out) == []


# --------------------------------------------------------------------------- failed reruns


def _catalog_gone(catalog: Path, spec: Path) -> list[str]:
    shutil.rmtree(catalog)  # the test's private copy
    return []


def _no_scene(catalog: Path, spec: Path) -> list[str]:
    doc = yaml.safe_load(spec.read_text())
    doc["datetime"] = "2020-01-01/2020-01-31"
    spec.write_text(yaml.safe_dump(doc))
    return []


def _every_asset_corrupt(catalog: Path, spec: Path) -> list[str]:
    for tif in catalog.rglob("*.tif"):
        tif.write_bytes(b"II*\x00" + b"\x00" * 64)  # a TIFF header and nothing else
    return []


def _scheduler_unreachable(catalog: Path, spec: Path) -> list[str]:
    return ["--scheduler", "tcp://127.0.0.1:1"]


FAILED_RERUNS = [
    # (case, break the input → extra CLI args, exit code, reason on the last stderr line)
    pytest.param(_catalog_gone, 2, "catalog", id="catalog-gone"),
    pytest.param(_no_scene, 2, "no_scenes", id="no-scene"),
    pytest.param(_every_asset_corrupt, 1, "nothing_read", id="every-asset-corrupt"),
    pytest.param(_scheduler_unreachable, 1, "cluster_unreachable", id="scheduler-unreachable"),
]


@pytest.mark.parametrize(("attack", "code", "reason"), FAILED_RERUNS)
def test_a_failed_rerun_leaves_the_good_product_byte_identical(attack, code, reason, rerun):
    spec, catalog, out = rerun
    before = digest(out / "mosaic.zarr") | {"sidecar": digest(out)["mosaic.zarr.stac.json"]}
    args = attack(catalog, spec)
    if "--scheduler" not in args:
        args.append("--direct")
    # an address nothing listens on: distributed retries for its connect timeout (30 s)
    done = aquila("run", str(spec), "--no-progress", *args, timeout=120, env=QUICK_CONNECT)
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and reason in last_line(done.stderr), done.stderr
    if reason == "cluster_unreachable":  # the run's end is not sent where it could not connect
        assert done.stderr.count("metrics: not sent to the scheduler") == 1, done.stderr
    after = digest(out / "mosaic.zarr") | {"sidecar": digest(out)["mosaic.zarr.stac.json"]}
    assert after == before
    assert leftovers(out) == []
    report = json.loads((out / "test.run-report.json").read_text())
    assert report["status"] in ("failed", "bad_input") and reason in report["error"]


def test_a_killed_run_leaves_the_good_product_and_the_next_run_cleans_up(rerun):
    """SIGKILL mid-build: the old product is intact; the next run removes the dead run's build
    directory (Aquila's by its marker; its owner is gone: the lock was free) and publishes."""
    spec, catalog, out = rerun
    before = digest(out / "mosaic.zarr")
    with serve(catalog) as server:
        served_slowly(catalog, server, spec, latency_s=0.3)
        proc = subprocess.Popen([AQUILA, "run", str(spec), "--direct", "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: building(out), timeout=60, what="the build directory")
            time.sleep(0.5)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        assert digest(out / "mosaic.zarr") == before
        assert any(".aquila-build-" in n for n in leftovers(out))  # what the dead run left
        server.latency_s = 0.0
        done = aquila("run", str(spec), "--direct", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert leftovers(out) == []
    notes = json.loads((out / "test.run-report.json").read_text())["notes"]
    assert any("left by a killed run" in n for n in notes), notes


# --------------------------------------------------------------------------- readers


def test_a_reader_during_a_rerun_only_ever_sees_a_complete_product(rerun):
    import xarray as xr

    spec, catalog, out = rerun
    store = out / "mosaic.zarr"
    old_run = xr.open_zarr(store).attrs["aquila:run_id"]
    seen: list[str] = []
    problems: list[str] = []
    stop = threading.Event()

    def read_in_a_loop() -> None:
        while not stop.is_set():
            try:
                with xr.open_zarr(store) as ds:
                    count = ds["count"].values  # every chunk of one variable, read by path
                    if set(ds.data_vars) != MOSAIC_VARS or ds.attrs["aquila:status"] != "complete":
                        problems.append(f"saw {sorted(ds.data_vars)}, {ds.attrs['aquila:status']}")
                    if not (count > 0).any():
                        problems.append("saw an empty count layer")
                    seen.append(ds.attrs["aquila:run_id"])
            except Exception as exc:  # noqa: BLE001 - every failed open is the finding
                problems.append(f"{type(exc).__name__}: {exc}")

    reader = threading.Thread(target=read_in_a_loop)
    with serve(catalog) as server:
        served_slowly(catalog, server, spec, latency_s=0.02)
        reader.start()
        try:
            done = aquila("run", str(spec), "--direct", "--no-progress")
            time.sleep(0.3)
        finally:
            stop.set()
            reader.join(timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert problems == [], problems[:5]
    new_run = xr.open_zarr(store).attrs["aquila:run_id"]
    assert old_run in seen and new_run in seen and new_run != old_run  # the loop spanned it
    assert len(seen) > 20
    sidecar = json.loads((out / "mosaic.zarr.stac.json").read_text())
    # the id names the run that published it (ids are unique across products and runs)
    assert sidecar["id"].endswith(new_run) and sidecar["assets"]["data"]["href"] == "./mosaic.zarr"
    assert leftovers(out) == []


# --------------------------------------------------------------------------- two runs at once


def _same_spec(spec: Path, tmp_path: Path) -> Path:
    return spec


def _another_workflow_sharing_the_store(spec: Path, tmp_path: Path) -> Path:
    doc = yaml.safe_load(spec.read_text())
    doc["name"] = "other"
    doc["products"]["mosaics"] = [{"store": str(tmp_path / "other" / "latest.zarr"),
                                   "method": "latest"}]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(doc))
    return other


def _the_store_through_a_linked_folder(spec: Path, tmp_path: Path) -> Path:
    (tmp_path / "linked").symlink_to(tmp_path / "out", target_is_directory=True)
    doc = yaml.safe_load(spec.read_text())
    doc["products"]["mosaic"]["store"] = str(tmp_path / "linked" / "mosaic.zarr")
    doc["name"] = "linked"
    other = tmp_path / "linked.yaml"
    other.write_text(yaml.safe_dump(doc))
    return other


@pytest.mark.parametrize(
    "second", [_same_spec, _another_workflow_sharing_the_store, _the_store_through_a_linked_folder]
)
def test_two_runs_on_one_store_exactly_one_writes(second, rerun, tmp_path):
    spec, catalog, out = rerun
    other = second(spec, tmp_path)
    lock = out / "mosaic.zarr.lock"
    with serve(catalog) as server:
        served_slowly(catalog, server, spec, other, latency_s=0.05)
        first = subprocess.Popen([AQUILA, "run", str(spec), "--direct", "--no-progress"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: lock.exists() and lock.stat().st_size > 0, timeout=60,
                     what="the first run's lock")
            busy = aquila("run", str(other), "--direct", "--no-progress", timeout=60)
            assert first.poll() is None, "the first run must still hold the lock"
            out_1, err_1 = first.communicate(timeout=180)
        finally:
            first.kill()
    assert busy.returncode == 75, busy.stdout + busy.stderr
    assert "Traceback" not in busy.stderr and "store_busy" in last_line(busy.stderr)
    assert first.returncode == 0, out_1 + err_1
    written = json.loads((out / "test.run-report.json").read_text())
    import xarray as xr

    assert xr.open_zarr(out / "mosaic.zarr").attrs["aquila:run_id"] == written["run_id"]
    # the busy run made none of its other products (only, maybe, their empty lock files)
    assert not (tmp_path / "other" / "latest.zarr").exists()
    assert not list(tmp_path.rglob("other.run-report.json"))
    assert not list(tmp_path.rglob("linked.run-report.json"))
    assert leftovers(out) == []


# --------------------------------------------------------------------------- the swap itself


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "rename-aside"])
def test_publish_swaps_in_the_build_and_removes_only_the_old_product(exchange, good, tmp_path,
                                                                     monkeypatch):
    import pipeline.products.publish as publish
    if not exchange:  # as on a system without renameat2: rename aside, then in
        monkeypatch.setattr(publish, "_LIBC", [None])
    elif publish._libc_renameat2() is None:
        pytest.skip("no renameat2 in this C library")
    store = tmp_path / "mosaic.zarr"
    shutil.copytree(good / "mosaic.zarr", store)
    pub = publish.Publication([store], run_id="r1")
    with pub:
        pub.start()
        build = pub.build_of(store)
        shutil.copytree(good / "mosaic.zarr", build, dirs_exist_ok=True)
        (build / "zarr.json").write_text((build / "zarr.json").read_text().replace(
            '"aquila:run_id": "', '"aquila:run_id": "new-'))
        pub.publish({store: '{"new": true}'})
    assert '"aquila:run_id": "new-' in (store / "zarr.json").read_text()
    assert json.loads((tmp_path / "mosaic.zarr.stac.json").read_text()) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mosaic.zarr", "mosaic.zarr.stac.json"]


def _symlink_to_victim(lock: Path, victim: Path) -> None:
    lock.symlink_to(victim)


def _users_file(lock: Path, victim: Path) -> None:
    lock.write_text("my notes, not a lock")


def _folder(lock: Path, victim: Path) -> None:
    lock.mkdir()
    (lock / "x").write_text("mine")


@pytest.mark.parametrize("make", [_symlink_to_victim, _users_file, _folder])
def test_a_lock_path_that_is_not_aquilas_is_refused_untouched(make, tmp_path):
    """``<store>.lock`` is opened without following links and only a lock record Aquila wrote
    (or an empty file) is taken: a link to someone's file, a user's file or a folder at that
    name is refused and stays byte for byte (the lock used to truncate whatever it pointed to)."""
    from pipeline.errors import StoreNotOurs
    from pipeline.products.lock import store_lock

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = tmp_path / "out.zarr"
    make(tmp_path / "out.zarr.lock", victim)
    before = {p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
              for p in tmp_path.rglob("*")}
    with pytest.raises(StoreNotOurs), store_lock(store, run_id="r1"):
        pass
    after = {p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
             for p in tmp_path.rglob("*")}
    assert after == before and victim.read_text() == "precious"


def test_an_aquila_lock_record_is_taken_and_released(tmp_path):
    """A lock file holding a dead holder's record (or nothing) is Aquila's: taken, reported."""
    import json

    from pipeline.products.lock import store_lock

    lock = tmp_path / "out.zarr.lock"
    dead = {"pid": 1, "host": "h", "run_id": "dead-run", "since": "2026-01-01T00:00:00+00:00"}
    lock.write_text(json.dumps(dead))
    with store_lock(tmp_path / "out.zarr", run_id="r2") as held:
        assert held.took_over is not None and held.took_over.run_id == "dead-run"
        assert json.loads(lock.read_text())["run_id"] == "r2"
    assert lock.read_text() == ""


def test_every_product_is_checked_before_the_first_is_swapped_in(tiny_catalog, tmp_path):
    """A run with a mosaic and a cube: while it computes, somebody puts their own file at the
    cube's sidecar name. The run refuses before swapping anything in, so the mosaic (swapped
    first) and the cube are both still the previous run's, byte for byte."""
    from pipeline.engine.run import RunOptions, run_workflow
    from pipeline.errors import StoreNotOurs
    from pipeline.spec.workflow import spec_from_dict

    out = tmp_path / "out"
    doc = make_spec_dict(tiny_catalog.root, out, bounds=(500000, 5000000, 504000, 5004000))
    spec = spec_from_dict(doc, base_dir=tmp_path)
    assert run_workflow(spec, options=RunOptions(direct=True)).status == "success"
    cube_sidecar = out / "cube.zarr.stac.json"

    def products(d: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in d.items()
                if k.startswith(("mosaic.zarr/", "cube.zarr/")) or k == "mosaic.zarr.stac.json"}

    before = products(digest(out))
    assert len(before) > 10

    def sabotage(done: int, total: int) -> None:
        if done == total:  # every chunk written; publishing comes next
            cube_sidecar.write_text('{"note": "mine now"}')

    report = run_workflow(spec, options=RunOptions(direct=True), progress=sabotage)
    assert report.status == "bad_input" and "store_not_aquila" in report.error
    assert "already published" not in report.error
    assert products(digest(out)) == before
    assert cube_sidecar.read_text() == '{"note": "mine now"}'
    assert not [p for p in out.iterdir() if ".aquila-" in p.name or p.name.endswith(".tmp")]
    with pytest.raises(StoreNotOurs):
        from pipeline.products.publish import check_target

        check_target(out / "cube.zarr")


def test_a_chunk_task_that_outlives_its_cancelled_run_writes_nothing(tmp_path):
    """A run cancelled on a shared cluster removes its build directories while a chunk task it
    started still computes (Dask cannot stop a running task). When that task reaches its writes,
    they must not create the build's folders again beside the product: that debris is not
    recognisably Aquila's, so no later run would clean it up. (Seen once in CI: a build directory
    left after ``aquila cancel``.)"""
    import numpy as np
    import zarr

    from pipeline.products.chunkio import write_all
    from pipeline.products.publish import Publication

    store = tmp_path / "out" / "mosaic.zarr"
    pub = Publication([store], run_id="20261207T000000Z-0badc0de")
    pub.start()
    build = pub.build_of(store)
    group = zarr.open_group(str(build), mode="w", zarr_format=3)
    band = group.create_array("red", shape=(4, 4), chunks=(2, 2), dtype="float32",
                              fill_value=np.nan)
    task_view = zarr.open_group(str(build), mode="r+")["red"]  # opened as a task opens it
    pub.discard()  # the cancelled run cleans up; its task is still computing
    with pytest.raises(FileNotFoundError, match="gone .*cancelled or failed"):
        write_all([(task_view, (slice(0, 2), slice(0, 2)), np.ones((2, 2), np.float32))])
    assert leftovers(tmp_path) == [] and not store.exists()
    assert band.store.root == build  # the check read the same folder the task would write
