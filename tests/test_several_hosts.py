"""Several hosts, nothing shared: a ``dask scheduler`` and two ``dask worker`` processes, each in
its own fresh working folder and ``TMPDIR``, the scenes only in a bucket (the driver keeps the
catalog's JSON, its asset links rewritten to ``s3://``; the COGs are deleted locally), the
products written to the bucket by ``aquila run --scheduler``. The products must equal, chunk
payload for chunk payload, a run of the same workflow on local scenes into local stores
(attributes that differ by design: ``RUN_SPECIFIC_ATTRS`` in tests/test_object_store_out.py).

The second test SIGKILLs one worker process while it writes its first chunk: the run still
publishes the same product (Dask reruns the lost task; the lost fork is never merged), and a
rerun gives it again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_spec_dict
from tests.test_object_store_out import (
    FINE,
    assert_same_product,
    bucket_product,
    local_product,
    run_spec,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def scenes_to_bucket(catalog: Path, s3, bucket: str, dest: Path) -> Path:
    """Upload every COG of ``catalog`` to ``s3://bucket/scenes/…`` and copy its JSON documents
    to ``dest`` with the asset links rewritten there; no COG is left under ``dest``."""
    for tif in sorted(catalog.rglob("*.tif")):
        s3.put_file(bucket, f"scenes/{tif.relative_to(catalog).as_posix()}", tif)
    for doc in sorted(catalog.rglob("*.json")):
        rel = doc.relative_to(catalog)
        data = json.loads(doc.read_text())
        for asset in (data.get("assets") or {}).values():
            local = (doc.parent / asset["href"]).resolve().relative_to(catalog.resolve())
            asset["href"] = f"s3://{bucket}/scenes/{local.as_posix()}"
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(json.dumps(data))
    assert not list(dest.rglob("*.tif"))
    return dest


class Hosts:
    """A scheduler and two nanny-managed workers, each process in its own empty folder."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.base, self.env, self.procs = base, env, []
        self.scheduler_file = base / "scheduler" / "scheduler.json"

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        home = self.base / name
        (home / "tmp").mkdir(parents=True)
        self.procs.append(subprocess.Popen(
            [str(BIN / "dask"), *args], cwd=home, env=env | {"TMPDIR": str(home / "tmp")},
            stdout=subprocess.DEVNULL, stderr=(home / "log").open("wb")))

    def start(self, worker_env: dict[str, str]) -> str:
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", ":0",
                                  "--scheduler-file", str(self.scheduler_file)], self.env)
        for k in (1, 2):
            self._start(f"worker-{k}", ["worker", "--scheduler-file", str(self.scheduler_file),
                                        "--host", "127.0.0.1", "--nthreads", "1",
                                        "--dashboard-address", ":0", "--no-dashboard"],
                        worker_env)
        address = self._address(time.monotonic() + 60)
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        return str(address)

    def _address(self, deadline: float) -> str:
        """The scheduler's address from its file, once the file is whole: the scheduler
        creates it before writing it (CI read it empty once)."""
        while True:
            try:
                return str(json.loads(self.scheduler_file.read_text())["address"])
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                assert time.monotonic() < deadline, "the scheduler did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture()
def setup(s3, tiny_catalog, tmp_path) -> Iterator[dict]:
    """The bucket with the scenes, the driver's catalog, the reference run and the env."""
    bucket = s3.make_bucket()
    driver = tmp_path / "driver"
    driver.mkdir()
    catalog = scenes_to_bucket(tiny_catalog.root, s3, bucket, driver / "catalog")
    ref = tmp_path / "reference"
    spec = make_spec_dict(tiny_catalog.root, ref, bounds=tiny_catalog.area_bounds, **FINE)
    assert run_spec(spec, ref).status == "success"
    env = {**os.environ, **s3.env()}
    for name in ("PYTHONPATH", "AQUILA_TEST_PAUSE"):
        env.pop(name, None)
    wf = make_spec_dict(catalog, Path("unused"), bounds=tiny_catalog.area_bounds, **FINE)
    wf["products"] = {
        "mosaic": {"store": f"s3://{bucket}/products/mosaic.zarr", "method": "median"},
        "cube": {"store": f"s3://{bucket}/products/cube.zarr"},
    }
    wf["allowed_roots"] = [f"s3://{bucket}/scenes/", str(catalog)]
    (driver / "workflow.yaml").write_text(yaml.safe_dump(wf))
    yield {"bucket": bucket, "driver": driver, "reference": ref, "env": env,
           "hosts": tmp_path / "hosts"}
    shutil.rmtree(tmp_path / "hosts", ignore_errors=True)


def _run(setup: dict, address: str) -> dict:
    done = subprocess.run(
        [str(BIN / "aquila"), "run", "workflow.yaml", "--scheduler", address, "--json",
         "--no-progress"],
        cwd=setup["driver"], env=setup["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _assert_equals_reference(setup: dict) -> None:
    for name in ("mosaic", "cube"):
        assert_same_product(local_product(setup["reference"] / f"{name}.zarr"),
                            bucket_product(f"s3://{setup['bucket']}/products/{name}.zarr"))


def test_two_workers_without_a_shared_disk_write_the_products_of_a_local_run(setup, s3):
    hosts = Hosts(setup["hosts"], setup["env"])
    try:
        address = hosts.start(setup["env"])
        doc = _run(setup, address)
        assert doc["status"] == "success", doc["error"]
        assert len(doc["scenes_used"]) > 0
        _assert_equals_reference(setup)
        scenes = s3.requests_for(f"/{setup['bucket']}/scenes/")
        assert scenes, "the workers read the scenes from the bucket"
    finally:
        hosts.stop()
    assert sorted(os.listdir(setup["driver"])) == ["catalog", "workflow.yaml"], (
        "the report and sidecars are in the bucket, nothing beside the driver's spec")


@pytest.mark.slow  # a cluster of three processes, a worker killed and restarted, two runs
def test_a_worker_killed_mid_write_and_a_rerun_give_the_same_product(setup):
    from tests.pausing import child_env

    pauses = setup["hosts"].parent / "pauses"
    pauses.mkdir()
    hosts = Hosts(setup["hosts"], setup["env"])
    try:
        address = hosts.start(child_env("write", pauses, setup["env"]))
        driver = subprocess.Popen(
            [str(BIN / "aquila"), "run", "workflow.yaml", "--scheduler", address, "--json",
             "--no-progress"],
            cwd=setup["driver"], env=setup["env"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (pauses / "paused-write").exists():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no worker reached its first write"
            time.sleep(0.05)
        os.kill(int((pauses / "paused-write").read_text()), signal.SIGKILL)
        (pauses / "resume-write").touch()
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
        assert json.loads(out)["status"] == "success"
        _assert_equals_reference(setup)
        again = _run(setup, address)
        assert again["status"] == "success"
        _assert_equals_reference(setup)
    finally:
        hosts.stop()
