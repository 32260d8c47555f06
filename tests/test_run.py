"""End to end on real parts: generated COGs, a real LocalCluster (processes), real Zarr stores.

Outputs are checked against independent expectations: the generator's true reflectance, a NumPy
reduction of the cube, and the direct (no-Dask) path.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401  (.rio accessor)
import xarray as xr

from pipeline.demo import truth_reflectance
from pipeline.engine.cluster import ClusterOptions
from pipeline.engine.run import RunOptions, run_workflow
from pipeline.spec.workflow import spec_from_dict
from tests.conftest import make_spec_dict

BANDS = ["blue", "green", "red", "nir"]


def run(spec_dict: dict, *, scheduler: str | None = None, direct: bool = False, base=Path(".")):
    spec = spec_from_dict(spec_dict, base_dir=base)
    opts = RunOptions(cluster=ClusterOptions(scheduler=scheduler), direct=direct)
    return run_workflow(spec, options=opts)


@pytest.fixture(scope="module")
def median_run(tiny_catalog, cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("median")
    spec = make_spec_dict(tiny_catalog.root, out, bounds=tiny_catalog.area_bounds)
    report = run(spec, scheduler=cluster.scheduler.address)
    return report, out


def open_store(path: Path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain open must not warn (consolidated metadata)
        return xr.open_zarr(path)


def test_mosaic_layout_crs_and_lineage(median_run, tiny_catalog):
    report, out = median_run
    assert report.status == "success", report.error
    assert report.exit_code == 0
    m = open_store(out / "mosaic.zarr")
    for b in BANDS:
        assert m[b].dtype == np.float32 and m[b].dims == ("y", "x")
    assert m.rio.crs.to_epsg() == 32632
    # pixel-centre coordinates: first x = xmin + res/2, first y = ymax - res/2
    xmin, _, _, ymax = tiny_catalog.area_bounds
    assert m.x.values[0] == xmin + 5 and m.y.values[0] == ymax - 5
    assert m["count"].dtype == np.uint16
    assert sorted(m.attrs["aquila:scenes"]) == sorted(s.item_id for s in tiny_catalog.scenes)
    assert m.attrs["aquila:workflow"]["name"] == "test"
    assert m.attrs["aquila:status"] == "complete"
    written = json.loads((out / "test.run-report.json").read_text())
    assert written["status"] == "success" and written["tasks"] == report.tasks


def test_mosaic_equals_truth_where_a_clear_observation_exists(median_run):
    _, out = median_run
    m = open_store(out / "mosaic.zarr")
    X, Y = np.meshgrid(m.x.values, m.y.values)
    have = m["count"].values > 0
    assert have.mean() > 0.99, "the tiny catalog has a clear observation nearly everywhere"
    for b in BANDS:
        err = np.abs(m[b].values - truth_reflectance(b, X, Y))[have]
        print(f"{b}: max |mosaic - truth| = {err.max():.5f}")
        assert err.max() < 0.01


def test_median_equals_numpy_nanmedian_of_the_cube(median_run):
    _, out = median_run
    cube = open_store(out / "cube.zarr").load()
    m = open_store(out / "mosaic.zarr").load()
    valid = np.all([np.isfinite(cube[b].values) for b in BANDS], axis=0)  # (t, y, x)
    np.testing.assert_array_equal(m["count"].values, valid.sum(axis=0))
    for b in BANDS:
        stack = np.where(valid, cube[b].values, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = np.nanmedian(stack.astype(np.float64), axis=0).astype(np.float32)
        np.testing.assert_allclose(m[b].values, ref, rtol=0, atol=1e-7, equal_nan=True)


def test_cube_layout(median_run, tiny_catalog):
    _, out = median_run
    cube = open_store(out / "cube.zarr")
    assert cube.rio.crs.to_epsg() == 32632
    assert cube["blue"].dims == ("time", "y", "x") and cube["blue"].dtype == np.float32
    t = cube.time.values
    assert (np.diff(t) > np.timedelta64(0)).all(), "time strictly increasing"
    assert set(cube.collection.values) == {"north", "south", "east"}
    # every scene of the tiny catalog is on its own solar day: one slot per scene
    assert len(t) == len(tiny_catalog.scenes)


def test_latest_mosaic_points_at_the_latest_valid_slot(tiny_catalog, cluster, tmp_path):
    spec = make_spec_dict(
        tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds, method="latest"
    )
    report = run(spec, scheduler=cluster.scheduler.address)
    assert report.status == "success", report.error
    cube = open_store(tmp_path / "cube.zarr").load()
    m = open_store(tmp_path / "mosaic.zarr").load()
    valid = np.all([np.isfinite(cube[b].values) for b in BANDS], axis=0)
    t = valid.shape[0]
    # independent expectation: the highest slot index with a valid observation
    expected = np.where(valid.any(0), t - 1 - np.argmax(valid[::-1], axis=0), -1)
    np.testing.assert_array_equal(m["source"].values, expected)
    yy, xx = np.nonzero(expected >= 0)
    for b in BANDS:
        np.testing.assert_array_equal(m[b].values[yy, xx], cube[b].values[expected[yy, xx], yy, xx])
    assert [s["index"] for s in m.attrs["sources"]] == list(range(t))


def test_direct_path_gives_identical_output(tiny_catalog, cluster, tmp_path, median_run):
    _, dask_out = median_run
    spec = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds)
    report = run(spec, direct=True)
    assert report.status == "success"
    for name in ("mosaic.zarr", "cube.zarr"):
        a = open_store(dask_out / name).load()
        b = open_store(tmp_path / name).load()
        for var in a.data_vars:
            np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=f"{name}:{var}")


def test_broken_item_missing_asset_and_corrupt_file_are_reported(catalog_copy, cluster, tmp_path):
    items = sorted(catalog_copy.glob("*/*/*.json"))
    broken, missing, corrupt = items[0], items[2], items[4]
    broken.write_text("{ this is not json")
    tif = sorted(missing.parent.glob("*.tif"))[0]
    tif.unlink()
    bad = sorted(corrupt.parent.glob("*.tif"))[0]
    bad.write_bytes(b"II*\x00" + b"\x00" * 64)  # a TIFF header and nothing else
    spec = make_spec_dict(catalog_copy, tmp_path, bounds=(500000, 5000000, 504000, 5004000))
    report = run(spec, scheduler=cluster.scheduler.address)
    reasons = {r["item"]: r["reason"] for r in report.rejected}
    assert reasons[broken.stem] == "item_unreadable"
    assert reasons[missing.stem] == "asset_missing"
    assert any(tif.name in r["message"] for r in report.rejected)
    # the corrupt file is a read failure, never nodata: named in the report, exit code 3
    assert [f["item"] for f in report.read_failures] == [corrupt.stem]
    assert report.status == "partial" and report.exit_code == 3
    m = open_store(tmp_path / "mosaic.zarr")
    assert corrupt.stem not in m.attrs["aquila:scenes"]
    assert (m["count"].values > 0).mean() > 0.9  # the mosaic is still produced


def test_tasks_grow_with_chunks_not_scenes(tmp_path_factory, cluster):
    from distributed import get_task_stream

    from pipeline.demo import generate_catalog

    root = tmp_path_factory.mktemp("many") / "catalog"
    cat = generate_catalog(root, preset="tiny", scenes_per_provider=14)  # 42 scenes
    ids = sorted(s.item_id for s in cat.scenes)
    counts = {}
    for n in (10, 40):
        keep = set(ids[:: max(1, len(ids) // n)][:n])
        sub = tmp_path_factory.mktemp(f"sub{n}")
        shutil.copytree(root, sub / "catalog")
        for item in (sub / "catalog").glob("*/*/*.json"):
            if item.stem not in keep:
                shutil.rmtree(item.parent)
        _drop_dangling_links(sub / "catalog")
        spec = make_spec_dict(
            sub / "catalog", sub / "out", bounds=cat.area_bounds, chunk=128, cube=False
        )
        with get_task_stream(cluster) as ts:
            report = run(spec, scheduler=cluster.scheduler.address)
        assert report.status == "success", report.error
        assert len(report.scenes_used) == n
        chunk_tasks = [t for t in ts.data if t["key"].startswith("aquila-test-chunk-r")]
        counts[n] = (report.tasks, report.compute_tasks, len(chunk_tasks))
    # 4 km at 10 m in 128-px chunks = 4 × 4 = 16 chunks, whatever the number of scenes,
    # computed 2 × 2 per task on the scheduler's 2 threads (pipeline.plan.fuse)
    assert counts[10] == counts[40] == (16, 4, 4), counts


def _drop_dangling_links(root: Path) -> None:
    for coll in root.glob("*/collection.json"):
        doc = json.loads(coll.read_text())
        doc["links"] = [
            link
            for link in doc["links"]
            if link["rel"] != "item" or (coll.parent / link["href"]).exists()
        ]
        coll.write_text(json.dumps(doc))


def test_several_mosaics_from_one_read(tiny_catalog, tmp_path, median_run):
    _, first = median_run
    spec = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds,
                          cube=False)
    spec["products"]["mosaics"] = [{"store": str(tmp_path / "latest.zarr"), "method": "latest"}]
    report = run(spec, direct=True)
    assert report.status == "success", report.error
    assert set(report.products) >= {"mosaic (median)", "mosaic (latest)"}
    median = open_store(tmp_path / "mosaic.zarr").load()
    reference = open_store(first / "mosaic.zarr").load()
    for b in BANDS:  # the same median as the median-only run
        np.testing.assert_array_equal(median[b].values, reference[b].values)
    latest = open_store(tmp_path / "latest.zarr")
    assert latest.attrs["aquila:method"] == "latest" and "source" in latest
    np.testing.assert_array_equal(latest["count"].values, median["count"].values)


@pytest.mark.parametrize("resampling", ["bilinear", "average"])
def test_gdal_resampling_paths_match_truth(tiny_catalog, tmp_path, resampling):
    spec = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds,
                          cube=False)
    spec["grid"]["resampling"] = resampling
    report = run(spec, direct=True)
    assert report.status == "success", report.error
    m = open_store(tmp_path / "mosaic.zarr")
    X, Y = np.meshgrid(m.x.values, m.y.values)
    have = m["count"].values > 0
    assert have.mean() > 0.98
    for b in BANDS:
        err = np.abs(m[b].values - truth_reflectance(b, X, Y))[have]
        print(f"{resampling} {b}: max |mosaic - truth| = {err.max():.5f}")
        assert err.max() < 0.01
