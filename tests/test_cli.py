"""The console script, end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from tests.conftest import make_spec_dict

BIN = Path(sys.executable).parent


def aquila(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "aquila"), *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_explains_commands_and_exit_codes():
    out = aquila("--help")
    assert out.returncode == 0
    for word in ("run", "validate", "demo-catalog", "exit codes", "--scheduler"):
        assert word in out.stdout
    run_help = aquila("run", "--help").stdout
    for flag in ("--scheduler", "--workers", "--threads", "--direct", "--report"):
        assert flag in run_help


def test_typo_in_spec_exits_2_with_a_helpful_message(tmp_path, tiny_catalog):
    spec = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds)
    spec["grid"]["chunks"] = spec["grid"].pop("chunk")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = aquila("run", str(path))
    assert out.returncode == 2
    assert "unknown key 'grid.chunks'" in out.stderr and "did you mean 'chunk'" in out.stderr
    assert not (tmp_path / "mosaic.zarr").exists()


def test_no_scene_is_bad_input(tmp_path, tiny_catalog):
    spec = make_spec_dict(
        tiny_catalog.root,
        tmp_path,
        bounds=tiny_catalog.area_bounds,
        datetime="2020-01-01/2020-01-31",
    )
    path = tmp_path / "empty.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = aquila("run", str(path), "--direct")
    assert out.returncode == 2
    assert "no_scenes" in out.stdout
    report = json.loads((tmp_path / "test.run-report.json").read_text())
    assert report["status"] == "bad_input"


@pytest.fixture()
def external_scheduler(tmp_path):
    """A cluster started the way an operator would: `dask scheduler` and `dask worker`."""
    sched_file = tmp_path / "scheduler.json"
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    ]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "dask"),
                    "worker",
                    "--scheduler-file",
                    str(sched_file),
                    "--nworkers",
                    "2",
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
            address = c.scheduler.address
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_run_against_an_external_scheduler(tmp_path, tiny_catalog, external_scheduler):
    spec = make_spec_dict(
        tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds, method="latest", cube=False
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = aquila("run", str(path), "--scheduler", external_scheduler, "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "dashboard: http://127.0.0.1:" in out.stdout
    assert "success" in out.stdout
    m = xr.open_zarr(tmp_path / "mosaic.zarr")
    assert (m["source"].values >= 0).mean() > 0.99
    assert np.isfinite(m["red"].values).mean() > 0.99
    assert not (tmp_path / "cube.zarr").exists(), "the spec asked for the mosaic alone"


def test_quicklook_writes_a_png(median_store_for_cli, tmp_path):
    png = tmp_path / "q.png"
    out = aquila("quicklook", str(median_store_for_cli), str(png), "--step", "2")
    assert out.returncode == 0, out.stderr
    import rasterio

    with rasterio.open(png) as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint8"
        assert ds.width == 200 and ds.height == 200  # 400 px at step 2
        assert ds.read().max() > 0


@pytest.fixture()
def median_store_for_cli(tmp_path, tiny_catalog):
    spec = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds, cube=False)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert aquila("run", str(path), "--direct", "--no-progress").returncode == 0
    return tmp_path / "mosaic.zarr"


def test_chunk_bar_starts_on_the_first_chunk_and_counts():
    """The progress bar of run and nightly: nothing is drawn before the first progress call (a run
    that fails early prints no empty bar), then done/total."""
    import io

    from rich.console import Console

    from pipeline.cli.progress import ChunkBar

    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    bar = ChunkBar(console, disable=False)
    assert console.file.getvalue() == ""
    bar(1, 4)
    bar(4, 4)
    bar.stop()
    assert "4/4" in console.file.getvalue()


def test_the_reader_flags_default_to_what_the_python_api_uses():
    """`aquila run` without reader flags reads as a caller of the Python API does (one GDAL
    cache size, one retry count, one HTTP timeout), not a second set of defaults."""
    import argparse

    from pipeline.cli.common import add_reader_flags, reader_settings
    from pipeline.io.settings import ReaderSettings

    parser = argparse.ArgumentParser()
    add_reader_flags(parser)
    got, api = reader_settings(parser.parse_args([])), ReaderSettings()
    assert (got.gdal_cache_mb, got.retry, got.http_timeout_s) == (
        api.gdal_cache_mb, api.retry, api.http_timeout_s)
    assert reader_settings(parser.parse_args(["--gdal-cache-mb", "64"])).gdal_cache_mb == 64
