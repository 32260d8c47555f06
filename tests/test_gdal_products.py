"""Products every tool opens: GDAL's Zarr driver (and so QGIS) with georeferencing, CF
attributes that cf_xarray understands, overview levels, and no absolute path of the machine that
ran the job in the attributes.

GDAL 3.10 (rasterio's wheels, QGIS before GDAL 3.11) cannot decode Zarr v3's ``bytes`` codec, so
a product that GDAL must open is written with ``format: zarr2``; the default stays Zarr v3. A
nightly (Icechunk) store is opened by GDAL through ``aquila export`` (tests/test_export.py).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml

from pipeline.engine.run import RunOptions, run_workflow
from pipeline.spec.workflow import load_spec

BANDS = ["blue", "green", "red", "nir"]
CHUNK = 128


def _spec(catalog: Path, bounds) -> dict:
    """A spec as a user writes one: paths relative to the spec file."""
    rel = f"{catalog.name}/catalog.json"
    return {
        "version": 1, "name": "gdal", "catalog": rel, "bands": BANDS,
        "grid": {"crs": "EPSG:32632", "resolution": 10.0, "bounds": list(bounds),
                 "chunk": CHUNK, "resampling": "nearest"},
        "products": {
            "cube": {"store": "out/cube.zarr", "format": "zarr2"},
            "mosaic": {"store": "out/median.zarr", "method": "median", "format": "zarr2"},
            "mosaics": [
                {"store": "out/best.zarr", "method": "best-pixel", "format": "zarr2",
                 "blend": {"width": 4}},
                {"store": "out/latest.zarr", "method": "latest"},  # default: Zarr v3
            ],
        },
    }


@pytest.fixture(scope="module")
def products(tiny_catalog, tmp_path_factory):
    work = tmp_path_factory.mktemp("gdal")
    shutil.copytree(tiny_catalog.root, work / "catalog")
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec(work / "catalog", tiny_catalog.area_bounds)))
    report = run_workflow(load_spec(spec), options=RunOptions(direct=True))
    assert report.status == "success", report
    return work, tiny_catalog


def _expected_transform(bounds, res=10.0):
    xmin, _, _, ymax = bounds
    return (res, 0.0, xmin, 0.0, -res, ymax)


@pytest.mark.parametrize(("store", "variables"), [
    ("median.zarr", [*BANDS, "count"]),
    ("best.zarr", [*BANDS, "count", "source", "score", "weight"]),
    ("cube.zarr", BANDS),
])
def test_gdal_opens_zarr2_products_with_crs_transform_and_the_same_values(products, store,
                                                                         variables):
    work, catalog = products
    path = work / "out" / store
    ds = xr.open_zarr(path)
    for name in variables:
        with rasterio.open(f'ZARR:"{path}":/{name}') as src:
            assert src.crs.to_epsg() == 32632, name
            assert tuple(src.transform)[:6] == pytest.approx(
                _expected_transform(catalog.area_bounds)), name
            got = src.read()
        want = ds[name].values
        if want.ndim == 2:
            want = want[None]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name  # a cube's time slots are GDAL's bands
        assert np.array_equal(got, want, equal_nan=want.dtype.kind == "f"), name
        if want.dtype.kind == "f":  # a test that cannot pass on an all-NaN product
            assert np.isfinite(want).mean() > 0.5, name


def test_gdal_opens_the_overview_levels_at_their_own_resolution(products):
    work, catalog = products
    path = work / "out" / "best.zarr"
    base = xr.open_zarr(path)
    assert base.attrs["aquila:overviews"] == [2]  # 400 px: one level (200 px) above 256 px
    layout = base.attrs["multiscales"]["layout"]
    assert [e["asset"] for e in layout] == ["overviews/1"]
    assert layout[0]["proj:shape"] == [200, 200]
    with rasterio.open(f'ZARR:"{path}":/overviews/1/red') as src:
        xmin, _, _, ymax = catalog.area_bounds
        assert tuple(src.transform)[:6] == pytest.approx((20.0, 0.0, xmin, 0.0, -20.0, ymax))
        coarse = src.read(1)
    full = base["red"].values
    # independent expectation: the mean of the finite values of each 2 × 2 block
    blocks = full.reshape(200, 2, 200, 2).transpose(0, 2, 1, 3).reshape(200, 200, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        want = np.nanmean(blocks.astype(np.float64), axis=-1).astype(np.float32)
    np.testing.assert_allclose(coarse, want, rtol=1e-6, equal_nan=True)
    src_blocks = base["source"].values.reshape(200, 2, 200, 2).transpose(0, 2, 1, 3)
    src_blocks = src_blocks.reshape(200, 200, 4)
    valid = src_blocks != -1  # lineage: each block's first valid pixel, row by row
    first = np.where(valid.any(-1), valid.argmax(-1), 0)
    want_source = np.take_along_axis(src_blocks, first[..., None], -1)[..., 0]
    with rasterio.open(f'ZARR:"{path}":/overviews/1/source') as src:
        assert np.array_equal(src.read(1), want_source)
    # where a coarse pixel has reflectance, it names an observation
    assert (want_source[np.isfinite(coarse)] >= 0).all()
    with rasterio.open(f'ZARR:"{path}":/overviews/1/count') as src:  # count: the block's max
        assert np.array_equal(src.read(1), base["count"].values.reshape(200, 2, 200, 2).max((1, 3)))


def test_zarr3_stays_the_default_and_opens_in_xarray(products):
    work, _ = products
    latest = work / "out" / "latest.zarr"
    assert (latest / "zarr.json").exists() and not (latest / ".zgroup").exists()
    assert (work / "out" / "best.zarr" / ".zgroup").exists()
    assert np.isfinite(xr.open_zarr(latest)["red"].values).mean() > 0.5


def test_cf_xarray_finds_the_axes_and_the_crs(products):
    import cf_xarray  # noqa: F401  (registers the .cf accessor)

    work, _ = products
    for store in ("cube.zarr", "median.zarr", "latest.zarr"):
        ds = xr.open_zarr(work / "out" / store)
        assert ds.attrs["Conventions"].startswith("CF-"), store
        axes = ds.cf.axes
        assert axes["X"] == ["x"] and axes["Y"] == ["y"], (store, axes)
        if store == "cube.zarr":
            assert axes["T"] == ["time"]
        assert ds.cf.grid_mapping_names == {"transverse_mercator": ["spatial_ref"]}, store
        assert ds.cf.standard_names["projection_x_coordinate"] == ["x"]
        for band in BANDS:
            assert ds[band].attrs["units"] == "1" and ds[band].attrs["long_name"]
            assert ds[band].attrs["grid_mapping"] == "spatial_ref"
    best = xr.open_zarr(work / "out" / "best.zarr")
    assert set(best["red"].attrs["ancillary_variables"].split()) == {
        "count", "source", "score", "weight"}
    for layer in ("count", "source", "score", "weight"):
        assert best[layer].attrs["units"] == "1" and best[layer].attrs["long_name"]


def test_no_absolute_path_of_this_machine_in_any_product_metadata(products):
    work, _ = products
    here = str(work)
    for meta in (work / "out").rglob("*"):
        if meta.name in ("zarr.json", ".zattrs", ".zmetadata"):
            assert here not in meta.read_text(), meta
    attrs = xr.open_zarr(work / "out" / "median.zarr").attrs
    recorded = attrs["aquila:workflow"]
    assert recorded["catalog"] == "catalog/catalog.json"  # as the spec file gives it
    assert recorded["products"]["mosaic"]["store"] == "out/median.zarr"


def test_a_rerun_replaces_a_zarr2_product_and_a_foreign_file_in_one_is_refused(products,
                                                                              tmp_path):
    from pipeline.errors import StoreNotOurs
    from pipeline.products.publish import check_target, product_problem

    work, _ = products
    product = tmp_path / "best.zarr"
    shutil.copytree(work / "out" / "best.zarr", product)
    assert product_problem(product) is None  # a v2 product is recognised as Aquila's
    (product / "notes.txt").write_text("a user's file")
    with pytest.raises(StoreNotOurs, match="notes.txt"):
        check_target(product)
    before = json.loads((product / ".zattrs").read_text())
    assert before["aquila:product"].startswith("mosaic")
