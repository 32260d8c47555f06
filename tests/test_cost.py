"""The cost model (pipeline/plan/cost.py) against numbers worked out by hand, and
``aquila validate --cost`` end to end. The model's check against a real demo run lives in
benchmarks/rates.py (a demo run is too slow for the tests)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shapely.geometry import box

from pipeline.catalog.scene import BandSource, QualitySource, RasterGrid, Scene
from pipeline.plan.chunks import MosaicOutput, Outputs, make_plan
from pipeline.plan.cost import (
    Rates,
    cluster_for,
    estimate,
    parse_duration,
    source_pixels,
    workload_of_plan,
)
from pipeline.plan.grid import TargetGrid
from tests.conftest import make_spec_dict

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CRS = "EPSG:32632"
BANDS = ("blue", "green", "red", "nir")

# round numbers, so every expectation below can be checked with pencil and paper
RATES = Rates(
    read_px_s=1e6, bytes_per_source_px=2.0, warp_px_s=1e5, warp_same_crs_px_s=1e6,
    calibrate_px_s=1e6, mask_px_s=1e5, merge_px_s=1e6, composite_px_slot_s={"latest": 1e5},
    write_px_s=1e5, task_bytes_per_px=10.0, task_fixed_bytes=1000.0,
    worker_base_bytes=1e6, read_call_s=0.001, warp_call_s=0.01,
)


def scene(day: int) -> Scene:
    """A scene covering the whole 2 km grid: 4 bands (one file each) on a 10 m grid, one
    quality source on a 20 m grid, in the grid's CRS."""
    grid10 = RasterGrid(CRS, (10.0, 0.0, 499000.0, 0.0, -10.0, 5003000.0), (400, 400))
    grid20 = RasterGrid(CRS, (20.0, 0.0, 499000.0, 0.0, -20.0, 5003000.0), (200, 200))
    bands = tuple(BandSource(b, b, f"/x/{day}/{b}.tif", 1, "uint16", 0, 1e-4, 0.0, grid10)
                  for b in BANDS)
    quality = (QualitySource("scl", f"/x/{day}/scl.tif", 1, "uint8", grid20),)
    return Scene(f"s{day}", "north", "p", dt.datetime(2025, 6, day, 10, tzinfo=dt.UTC),
                 box(8.98, 45.1, 9.04, 45.2), bands, quality)  # around the grid, lon/lat


@pytest.fixture()
def plan():
    """2 × 2 chunks of 100 px (10 m, a 2 km square), two scenes on two days → 2 slots."""
    grid = TargetGrid.from_bounds((500000, 5000000, 502000, 5002000), crs=CRS,
                                  resolution=10, chunk=100)
    outputs = Outputs(BANDS, "nearest", None, (MosaicOutput(Path("m.zarr"), "latest"),))
    return make_plan([scene(1), scene(2)], grid=grid, outputs=outputs)


def test_the_plan_is_what_the_hand_counts_assume(plan):
    assert len(plan.tasks) == 4
    assert all(len(t.slots) == 2 for t in plan.tasks)


def test_work_and_seconds_by_hand(plan):
    work = workload_of_plan(plan, source_px=source_pixels(plan), rates=RATES)
    # each scene: 4 km² of the grid, 4 bands at 100 m² a pixel + quality at 400 m²
    source = 2 * (4 * 4e6 / 100 + 4e6 / 400)  # 340 000 px
    assert work.source_px == pytest.approx(source, rel=1e-3)
    touches = 4 * 2  # 4 tasks × 2 scenes, each over a 100 × 100 task
    assert work.reads == touches * 5  # 4 band files + 1 quality file
    assert work.warp_calls == touches * 2  # a 10 m and a 20 m grid
    est = estimate(work, plan.outputs, rates=RATES, threads=2, gdal_cache_bytes=0)
    px = 100 * 100
    expected = {
        "read": 340_000 / 1e6 + 40 * 0.001,  # 0.38
        "decode": 8 * px / 1e5,  # 0.8
        "warp": 8 * px * 2 / 1e6 + 16 * 0.01,  # 0.32
        "calibrate": 8 * px * 4 / 1e6,  # 0.32
        "composite": 8 * px * 4 / 1e6 + 4 * px * 2 / 1e5,  # merge 0.32 + latest 0.8
        "write": 4 * px * (4 + 1 + 1) / 1e5,  # bands, count, source: 2.4
    }
    for phase, seconds in expected.items():
        assert est.seconds_by_phase[phase] == pytest.approx(seconds, rel=1e-3), phase
    assert est.core_seconds == pytest.approx(5.34, rel=1e-3)
    assert est.core_hours == pytest.approx(5.34 / 3600, rel=1e-3)
    assert est.bytes_read == pytest.approx(680_000, rel=1e-3)
    assert work.tasks == 4
    # latest streams: slot buffer (16 + 1 B/px) and its state (16 + 22 B/px), + measured extra
    task = px * (4 * 4 + 1 + 4 * 4 + 22) + 10 * px + 1000
    assert est.task_peak_bytes == task
    assert est.worker_peak_bytes == 2 * task + 1_000_000


def test_the_cluster_for_a_deadline_by_hand():
    c = cluster_for(5.34, 680_000, deadline_s=4, threads=1, margin=1.5, tasks=4)
    assert (c.workers, c.cores, c.bound_by) == (3, 3, "cpu")  # ceil(8.01 / 4)
    assert c.hours == pytest.approx(8.01 / 3 / 3600)
    net = cluster_for(5.34, 680_000, deadline_s=4, threads=1, margin=1.5, tasks=40,
                      bandwidth_bytes_s=1e4)
    assert (net.workers, net.bound_by) == (26, "network")  # ceil(1 020 000 / 40 000)
    capped = cluster_for(5.34, 680_000, deadline_s=4, threads=1, margin=1.5, tasks=2)
    assert capped.workers == 2  # more workers than tasks would stay idle


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("90m", 5400), ("45s", 45),
                                               ("1.5h", 5400), ("600", 600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def aquila(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "aquila"), *args], capture_output=True, text=True,
                          timeout=120)


def test_validate_cost_on_the_demo_workflow_without_a_catalog():
    out = aquila("validate", "--json", "--cost", str(ROOT / "workflows" / "demo.yaml"),
                 "--revisit", "5", "--deadline", "1h")
    assert out.returncode == 0, out.stderr
    cost = json.loads(out.stdout)["cost"]
    for key in ("core_hours", "core_seconds", "bytes_read", "tasks", "task_peak_bytes",
                "worker_peak_bytes", "seconds_by_phase", "cluster", "workload"):
        assert key in cost
    assert cost["tasks"] == 4  # 30 days at a 5-day revisit: every chunk, 6 slots
    assert cost["cluster"]["workers"] >= 1


def test_validate_cost_searches_the_catalog(tmp_path, tiny_catalog):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(make_spec_dict(tiny_catalog.root, tmp_path,
                                                  bounds=tiny_catalog.area_bounds)))
    out = aquila("validate", "--cost", str(spec))
    assert out.returncode == 0, out.stderr
    assert "cost estimate (plan" in out.stdout and "core-hours" in out.stdout
    assert "GiB per worker" in out.stdout
