"""Specs and plans that cannot hang, crash or silently move the grid (issue #13, items 10-12, 14).

Absurd grids, task counts, time depths and per-task memory are refused in under a second, naming
the limit; non-finite numbers, deep or duplicate-key YAML, devices as groups files and zero
workers end in one line and exit code 2 (the real ``aquila`` console script); bounds are kept
exactly or refused with the nearest bounds that fit, and the written product sits where they say.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from shapely.geometry import box

from pipeline.errors import AquilaError, InputError
from pipeline.plan.grid import TargetGrid
from pipeline.spec.workflow import load_spec, spec_from_dict
from tests.conftest import make_spec_dict

AQUILA = str(Path(sys.executable).with_name("aquila"))
TINY = (500000.0, 5000000.0, 504000.0, 5004000.0)  # the tiny catalog's area, EPSG:32632
FAST = 1.0  # seconds: a refusal must come before anything grid-sized is built


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real console script. Address space capped at 8 GiB: a hostile input must not take
    the machine down even if the code under test regresses (e.g. reads /dev/zero whole)."""

    def cap() -> None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = 8 * 2**30 if hard == resource.RLIM_INFINITY else min(hard, 8 * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))

    return subprocess.run(
        [AQUILA, *args], capture_output=True, text=True, timeout=timeout, preexec_fn=cap,
    )


def _one_clean_line(out: subprocess.CompletedProcess, *needles: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)


def _write(tmp_path: Path, spec: dict, extra: str = "", name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False) + extra)
    return path


def _spec(tmp_path: Path, catalog: Path | None = None, **grid) -> dict:
    d = make_spec_dict(catalog or tmp_path, tmp_path / "out", bounds=TINY, cube=False)
    d["grid"].update(grid)
    d["grid"] = {k: v for k, v in d["grid"].items() if v is not None}
    return d


def _refused(fn, *, reason: str, needles: tuple[str, ...]) -> AquilaError:
    t = time.perf_counter()
    with pytest.raises(AquilaError) as err:
        fn()
    took = time.perf_counter() - t
    assert err.value.reason == reason, err.value
    assert took < FAST, f"refused after {took:.2f} s"
    for needle in needles:
        assert needle in err.value.message, (needle, err.value.message)
    return err.value


# --------------------------------------------------------------------------- item 10: limits

# (grid keys, limits, the limit named, the value found): each computed by hand from the bounds
HUGE_GRIDS = [
    pytest.param(  # 1e7 m at 10 m: 10^6 x 10^6 px
        {"bounds": [0, 0, 1e7, 1e7], "resolution": 10}, None,
        "limits.max_pixels", "1,000,000 × 1,000,000", id="bounds-1e7m-at-10m",
    ),
    pytest.param(  # the demo area at 1 cm: 2*10^6 px a side
        {"bounds": [500000, 5000000, 520000, 5020000], "resolution": 0.01}, None,
        "limits.max_pixels", "2,000,000 × 2,000,000", id="demo-area-at-1cm",
    ),
    pytest.param(  # 10^10 px is allowed, but 64 px chunks make ceil(100000/64)^2 of them
        {"bounds": [0, 0, 1e6, 1e6], "resolution": 10, "chunk": 64}, None,
        "limits.max_tasks", "2,442,969 chunks", id="small-chunks",
    ),
    pytest.param(  # a spec's own, lower ceiling: 400 x 400 px > 100 000
        {}, {"max_pixels": 100_000}, "limits.max_pixels = 100,000", "400 × 400", id="own-limit",
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("grid", "limits", "limit", "found"), HUGE_GRIDS)
def test_huge_grid_given_by_bounds_is_refused_at_once(tmp_path, grid, limits, limit, found):
    d = _spec(tmp_path, **grid)
    if limits:
        d["limits"] = limits
    _refused(lambda: spec_from_dict(d, base_dir=tmp_path), reason="plan_too_large",
             needles=(limit, found, "raise " + limit.split(" ")[0]))


@pytest.mark.timeout(30)
def test_grid_api_refuses_before_building(tmp_path):
    """TargetGrid.from_bounds (nightly and library callers) checks the same arithmetic."""
    from pipeline.plan.extent import PlanLimits

    _refused(
        lambda: TargetGrid.from_bounds((0, 0, 1e9, 1e9), crs="EPSG:32632", resolution=0.5,
                                       chunk=1024, limits=PlanLimits()),
        reason="plan_too_large", needles=("limits.max_pixels", "2,000,000,000 × 2,000,000,000"),
    )


@pytest.mark.timeout(30)
def test_huge_grid_derived_from_continent_footprints_is_refused_at_once(tiny_catalog, tmp_path):
    """No bounds: the grid is the union of the footprints. Scenes spanning Europe at 1 m."""
    from pipeline.engine.run import discover, make_plan, outputs_of, target_grid

    d = _spec(tmp_path, tiny_catalog.root, bounds=None, resolution=1.0)
    spec = spec_from_dict(d, base_dir=tmp_path)
    scenes = [dataclasses.replace(s, footprint=box(-10, 35, 30, 60)) for s in
              discover(spec).scenes]

    def plan():
        grid = target_grid(spec, scenes)
        make_plan(scenes, grid=grid, outputs=outputs_of(spec), limits=spec.limits.plan_limits())

    _refused(plan, reason="plan_too_large",
             needles=("the scenes' footprints", "limits.max_pixels"))


@pytest.mark.timeout(180)
def test_cli_run_refuses_a_huge_derived_grid_in_under_a_second(tiny_catalog, tmp_path):
    """The tiny catalog (4 km) at 1 mm and no bounds: 4*10^6 px a side, from the real run."""
    d = _spec(tmp_path, tiny_catalog.root, bounds=None, resolution=0.001)
    report = tmp_path / "report.json"
    out = _cli("run", str(_write(tmp_path, d)), "--direct", "--no-progress",
               "--report", str(report))
    _one_clean_line(out, "plan_too_large", "limits.max_pixels")
    rep = json.loads(report.read_text())
    planning = rep["seconds"]["total"] - rep["seconds"]["discover"]
    assert planning < FAST, rep["seconds"]


def _tiny_plan(tiny_catalog, tmp_path, method: str, limits: dict):
    from pipeline.engine.run import discover, make_plan, outputs_of, target_grid

    d = _spec(tmp_path, tiny_catalog.root, chunk=128)
    d["products"]["mosaic"]["method"] = method
    d["limits"] = limits
    spec = spec_from_dict(d, base_dir=tmp_path)
    scenes = list(discover(spec).scenes)
    t = time.perf_counter()
    try:
        return make_plan(scenes, grid=target_grid(spec, scenes), outputs=outputs_of(spec),
                         limits=spec.limits.plan_limits())
    finally:
        assert time.perf_counter() - t < FAST * 5  # the tiny plan itself takes milliseconds


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("method", "memory", "refused"),
    [
        ("median", "1MiB", True),  # T slots x 4 bands x 128^2 x 4 B: several MiB
        ("median", "1GiB", False),
        ("latest", "1MiB", False),  # streams: 128^2 x (4*4+1 + 4*4+22) B = 0.86 MiB
        ("latest", "500KB", True),
    ],
)
def test_task_memory_is_estimated_and_refused_with_the_number(
    tiny_catalog, tmp_path, method, memory, refused
):
    if not refused:
        plan = _tiny_plan(tiny_catalog, tmp_path, method, {"max_task_memory": memory})
        deepest = max(len(t.slots) for t in plan.tasks)
        assert deepest >= 2  # the table's "several MiB" holds: a stack needs 2+ slots
        return
    with pytest.raises(InputError) as err:
        _tiny_plan(tiny_catalog, tmp_path, method, {"max_task_memory": memory})
    msg = err.value.message
    assert err.value.reason == "plan_too_large"
    assert "limits.max_task_memory" in msg and "MiB" in msg and "128 × 128 px" in msg
    if method == "median":  # the stack the README names: T × B × chunk² × 4
        plan = _tiny_plan(tiny_catalog, tmp_path, method, {})
        worst = max(len(t.slots) for t in plan.tasks)
        assert f"{worst} time slots × 4 bands" in msg
        assert f"about {worst * 4 * 128 * 128 * 4 / 2**20:,.0f} MiB" in msg


@pytest.mark.timeout(60)
def test_time_slots_beyond_the_limit_are_refused(tiny_catalog, tmp_path):
    plan = _tiny_plan(tiny_catalog, tmp_path, "median", {})
    n = len(plan.slots)
    assert n >= 2
    with pytest.raises(InputError, match=rf"{n} time slots.*limits.max_time_slots = 1\b"):
        _tiny_plan(tiny_catalog, tmp_path, "median", {"max_time_slots": 1})


@pytest.mark.parametrize(
    ("limits", "needle"),
    [
        ({"max_pixels": 0}, "limits.max_pixels"),
        ({"max_task_memory": "lots"}, "limits.max_task_memory"),
        ({"max_tasks": 1.5}, "limits.max_tasks"),
        ({"max_taks": 5}, "did you mean 'max_tasks'"),
    ],
)
def test_limits_are_validated_strictly(tmp_path, limits, needle):
    d = _spec(tmp_path)
    d["limits"] = limits
    with pytest.raises(InputError, match=needle):
        spec_from_dict(d, base_dir=tmp_path)


def test_demo_and_benchmark_grids_fit_the_default_limits(tmp_path):
    """The bundled workflows and the benchmarks' grids (peers: the 20 km medium area at 10 m in
    512 px chunks; nightly: 3 × 3 tiles of 4 km at 10 m in 200 px chunks) plan under the
    defaults, and peers' deepest median stack (36 slots × 4 bands × 512²) is far below them."""
    from pipeline.plan.extent import PlanLimits

    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "workflows").glob("*.yaml")):
        load_spec(path)
    for size, chunk in ((20000, 512), (12000, 200)):
        TargetGrid.from_bounds((500000, 5000000, 500000 + size, 5000000 + size),
                               crs="EPSG:32632", resolution=10, chunk=chunk, limits=PlanLimits())
    assert PlanLimits().max_task_memory > 4 * (36 * 4 * 512**2 * 4)  # 4x headroom


# --------------------------------------------------------------------------- item 11: tracebacks

NON_FINITE = [
    pytest.param("  resolution: 10\n", "  resolution: .inf\n", "grid.resolution", id="res-inf"),
    pytest.param("  resolution: 10\n", "  resolution: 1e400\n", "grid.resolution", id="res-1e400"),
    pytest.param("  resolution: 10\n", "  resolution: .nan\n", "grid.resolution", id="res-nan"),
    pytest.param("- 500000.0\n", "- -.inf\n", "grid.bounds", id="bounds-inf"),
    pytest.param("method: median\n", "method: percentile\n    q: .nan\n",
                 "products.mosaic.q", id="q-nan"),
]


@pytest.mark.parametrize(("old", "new", "key"), NON_FINITE)
def test_non_finite_numbers_are_refused_in_one_line(tmp_path, old, new, key):
    text = yaml.safe_dump(_spec(tmp_path), sort_keys=False, default_flow_style=False)
    text = text.replace("resolution: 10.0\n", "resolution: 10\n")
    assert old in text
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace(old, new, 1))
    out = _cli("validate", str(path))
    _one_clean_line(out, key, "finite")


DEEP = [
    pytest.param("x: " + "[" * 10_000 + "]" * 10_000 + "\n", id="10000-deep-sequence"),
    pytest.param("x: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", id="5000-deep-mapping"),
    pytest.param("x:\n" + "".join(" " * i + "-\n" for i in range(1, 700)), id="block-nesting"),
]


@pytest.mark.parametrize("attack", DEEP)
def test_deeply_nested_yaml_is_refused_in_one_line(tmp_path, attack):
    out = _cli("validate", str(_write(tmp_path, _spec(tmp_path), attack)))
    _one_clean_line(out, "nested deeper than", "spec.yaml")


def test_a_geojson_multipolygon_is_not_too_deep(tmp_path):
    d = _spec(tmp_path)
    ring = [[9.0, 45.0], [9.1, 45.0], [9.1, 45.1], [9.0, 45.0]]
    d["intersects"] = {"type": "MultiPolygon", "coordinates": [[ring]]}
    assert load_spec(_write(tmp_path, d)).intersects["type"] == "MultiPolygon"


DUPLICATES = [  # (text to append or replace, the key, first line, second line)
    pytest.param(None, "name: again\n", "'name'", id="top-level"),
    pytest.param("  resolution: 10.0\n", "  resolution: 10.0\n  resolution: 20.0\n",
                 "'resolution'", id="nested"),
    pytest.param(None, "'name': again\n", "'name'", id="quoted-spelling"),
]


@pytest.mark.parametrize(("old", "new", "key"), DUPLICATES)
def test_duplicate_keys_are_refused_with_both_lines(tmp_path, old, new, key):
    text = yaml.safe_dump(_spec(tmp_path), sort_keys=False)
    text = text.replace(old, new, 1) if old else text + new
    lines = text.splitlines()
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    out = _cli("validate", str(path))
    _one_clean_line(out, f"duplicate key {key}")
    k = key.strip("'")
    first, again = [i + 1 for i, line in enumerate(lines) if re.match(rf"\s*'?{k}'?:", line)]
    assert f"first at line {first}, again at line {again}" in out.stderr


def _groups_spec(tmp_path: Path, groups_file: str) -> Path:
    d = _spec(tmp_path)
    d["audience"] = {"group": "G", "groups_file": groups_file}
    return _write(tmp_path, d)


def _fifo(tmp_path: Path) -> str:
    path = tmp_path / "groups.fifo"
    os.mkfifo(path)
    return str(path)


def _dup_groups(tmp_path: Path) -> str:
    path = tmp_path / "groups.yaml"
    path.write_text("groups:\n  G: [NLD]\n  G: [NOR]\n")
    return str(path)


GROUPS = [
    pytest.param(lambda p: "/dev/zero", "not a regular file", id="dev-zero"),
    pytest.param(_fifo, "not a regular file", id="fifo"),
    pytest.param(lambda p: str(p), "not a regular file", id="folder"),
    pytest.param(_dup_groups, "duplicate key 'G': first at line 2, again at line 3", id="dup"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("make", "needle"), GROUPS)
def test_groups_file_that_is_not_a_small_yaml_file_is_refused(tmp_path, make, needle):
    from pipeline.catalog.discover import releasability_of

    spec = load_spec(_groups_spec(tmp_path, make(tmp_path)))
    with pytest.raises(InputError, match="groups_file") as err:
        releasability_of(spec)
    assert needle in err.value.message


@pytest.mark.timeout(120)
def test_cli_run_with_dev_zero_as_groups_file_ends_in_one_line(tmp_path):
    out = _cli("run", str(_groups_spec(tmp_path, "/dev/zero")), "--direct", "--no-progress")
    _one_clean_line(out, "groups_file /dev/zero", "not a regular file")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["run", "nightly"])
@pytest.mark.parametrize(
    ("flag", "value"),
    [("--workers", "0"), ("--workers", "-1"), ("--threads", "0"), ("--gdal-cache-mb", "0"),
     ("--gdal-cache-mb", "-5")],
)
def test_cluster_sizes_below_one_are_refused_by_the_parser(tmp_path, command, flag, value):
    out = _cli(command, str(tmp_path / "spec.yaml"), flag, value, timeout=30)
    _one_clean_line(out, f"argument {flag}", "at least 1")


@pytest.mark.parametrize("key", ["n_workers", "threads_per_worker"])
def test_cluster_profile_with_zero_workers_is_refused(tmp_path, key):
    from pipeline.engine.cluster import load_cluster_profile

    path = tmp_path / "profile.yaml"
    path.write_text(f"{key}: 0\n")
    with pytest.raises(InputError, match=f"{key}: 0 is too small"):
        load_cluster_profile(path)


# --------------------------------------------------------------------------- item 14: the grid

# Landsat-like: pixel edges 15 m off the multiples of 30 m (499995 = 30 * 16666.5)
LANDSAT = (499995.0, 4999995.0, 503595.0, 5003595.0)


@pytest.mark.parametrize(
    ("anchor", "origin", "shape"),
    [
        (None, (499995.0, 5003595.0), (120, 120)),  # kept exactly
        ("center", (499995.0, 5003595.0), (120, 120)),  # centres on multiples: already so
        ("edge", (499980.0, 5003610.0), (121, 121)),  # floor/ceil to multiples of 30, by hand
    ],
)
def test_grid_origin_is_where_the_bounds_and_anchor_say(tmp_path, anchor, origin, shape):
    d = _spec(tmp_path, bounds=list(LANDSAT), resolution=30, anchor=anchor)
    from pipeline.engine.run import target_grid

    grid = target_grid(spec_from_dict(d, base_dir=tmp_path), [])
    a, _, c, _, e, f = grid.transform
    assert (c, f) == origin and (a, e) == (30.0, -30.0) and grid.shape == shape


@pytest.mark.parametrize(
    ("anchor", "line"),
    [
        (None, "120 × 120 px of 30 in EPSG:32632, bounds [499995, 4999995, 503595, 5003595] "
               "(exactly grid.bounds)"),
        ("edge", "121 × 121 px of 30 in EPSG:32632, bounds [499980, 4999980, 503610, 5003610] "
                 "(snapped by grid.anchor edge)"),
    ],
)
def test_validate_prints_the_grid_it_will_write(tmp_path, anchor, line):
    d = _spec(tmp_path, bounds=list(LANDSAT), resolution=30, anchor=anchor)
    out = _cli("validate", str(_write(tmp_path, d)))
    assert out.returncode == 0, out.stderr
    assert f"grid: {line}" in out.stdout


MISFITS = [  # bounds, resolution, shrunk, grown: computed by hand, origin (xmin, ymax) kept
    ([500015, 5000015, 520000, 5020000], 30,
     "[500015, 5000020, 519995, 5020000]", "[500015, 4999990, 520025, 5020000]"),
    ([0, 0, 1005, 1000], 10, "[0, 0, 1000, 1000]", "[0, 0, 1010, 1000]"),
    ([0, 0, 5, 5], 10, None, "[0, -5, 10, 5]"),  # less than a pixel: only growing fits
]


@pytest.mark.parametrize(("bounds", "res", "shrunk", "grown"), MISFITS)
def test_bounds_that_are_not_whole_pixels_are_refused_with_the_nearest_that_are(
    tmp_path, bounds, res, shrunk, grown
):
    d = _spec(tmp_path, bounds=bounds, resolution=res)
    with pytest.raises(InputError) as err:
        spec_from_dict(d, base_dir=tmp_path)
    msg = err.value.message
    assert err.value.reason == "spec_invalid" and "grid.anchor" in msg
    assert grown in msg
    assert (shrunk in msg) if shrunk else "shrunk" not in msg


def test_written_product_sits_exactly_on_bounds_with_a_15m_offset(tiny_catalog, tmp_path):
    import rioxarray  # noqa: F401 - registers .rio
    import xarray as xr

    from pipeline.engine.run import RunOptions, run_workflow

    d = _spec(tmp_path, tiny_catalog.root, bounds=list(LANDSAT), resolution=30)
    d["products"]["mosaic"]["method"] = "latest"
    spec = spec_from_dict(d, base_dir=tmp_path)
    report = run_workflow(spec, options=RunOptions(direct=True))
    assert report.status == "success", report.error
    ds = xr.open_zarr(spec.products.mosaic.store, consolidated=False)
    t = ds.rio.transform()
    assert (t.c, t.f, t.a, t.e) == (499995.0, 5003595.0, 30.0, -30.0)
    assert ds.rio.shape == (120, 120)
    assert float(ds.x[0]) == 499995.0 + 15 and float(ds.y[0]) == 5003595.0 - 15
    assert report.grid["bounds"] == list(LANDSAT)
    assert report.grid["bounds_from"] == "grid.bounds, exactly"


def test_derived_bounds_are_snapped_and_the_report_says_so(tiny_catalog, tmp_path):
    from pipeline.engine.run import discover, grid_record, target_grid

    d = _spec(tmp_path, tiny_catalog.root, bounds=None, resolution=30)
    spec = spec_from_dict(d, base_dir=tmp_path)
    grid = target_grid(spec, list(discover(spec).scenes))
    rec = grid_record(spec, grid)
    xmin, ymin, xmax, ymax = rec["bounds"]
    assert all(v % 30 == 0 for v in rec["bounds"])  # edges on multiples of the resolution
    assert (xmax - xmin, ymax - ymin) == (grid.shape[1] * 30, grid.shape[0] * 30)
    assert "snapped" in rec["bounds_from"] and "footprints" in rec["bounds_from"]
