"""The Python API (pipeline.load / mosaic / run) against independent expectations: the stores
``aquila run`` writes, NumPy's nanmedian, odc-stac on the same items, and the real corpus read
with rasterio × the item's own scale/offset. Real parts only: generated COGs, a real
``distributed.LocalCluster``, real files."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pystac
import pytest
import xarray as xr

import pipeline
from pipeline.api import prepare
from pipeline.api.cube import load_options
from pipeline.errors import InputError, NoScenesError, ReadError, SpecError
from tests.conftest import SHARED_REAL, make_spec_dict
from tests.test_run import run as run_spec

BANDS = ["blue", "green", "red", "nir"]
CHUNK = 128
ROOT = Path(__file__).resolve().parents[1]


def _open(path: Path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(path).load()


def _load_kwargs(cat) -> dict:
    return {"bands": BANDS, "crs": "EPSG:32632", "resolution": 10.0,
            "bounds": cat.area_bounds, "chunks": CHUNK}


@pytest.fixture(scope="module")
def written(tiny_catalog, tmp_path_factory):
    """What ``aquila run`` writes for the tiny catalog: cube, median, latest and a seam-blended
    best-pixel mosaic (in this process: the same chunk task a worker runs)."""
    out = tmp_path_factory.mktemp("api-run")
    spec = make_spec_dict(tiny_catalog.root, out, bounds=tiny_catalog.area_bounds, chunk=CHUNK)
    spec["products"]["mosaics"] = [
        {"store": str(out / "latest.zarr"), "method": "latest"},
        {"store": str(out / "best.zarr"), "method": "best-pixel", "blend": {"width": 16},
         "priority": ["north", "east", "south"]},
    ]
    report = run_spec(spec, direct=True)
    assert report.status == "success", report.error
    return {name: _open(out / f"{name}.zarr") for name in ("cube", "mosaic", "latest", "best")}


@pytest.fixture(scope="module")
def loaded(tiny_catalog):
    return pipeline.load(str(tiny_catalog.catalog_href), **_load_kwargs(tiny_catalog))


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True)


def _n_chunks(ds: xr.Dataset) -> int:
    return int(np.prod([len(c) for c in ds[BANDS[0]].chunks[-2:]]))


# --------------------------------------------------------------------------- load


def test_load_is_lazy_with_one_fused_task_per_chunk(loaded, tiny_catalog):
    import dask.array as da

    ds = loaded
    assert set(ds.data_vars) == set(BANDS)
    assert all(isinstance(ds[b].data, da.Array) for b in BANDS)
    assert ds[BANDS[0]].dims == ("time", "y", "x")
    n = _n_chunks(ds)
    assert n == (400 // CHUNK + 1) ** 2  # 400 px at 128 px: 4 × 4 chunks
    graph = ds.__dask_graph__()
    fused = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("aquila-cube-")]
    assert len(fused) == n  # ONE fused task per output chunk (all scenes, all slots)
    assert len(graph) == n * (1 + len(BANDS))  # plus one band selection per chunk
    assert len(ds.time) == len(tiny_catalog.scenes)  # tiny: one scene per slot
    assert ds.rio.crs.to_epsg() == 32632
    assert "crs_wkt" in ds["spatial_ref"].attrs
    assert ds.attrs["aquila:rejected"] == [] and ds.attrs["aquila:withheld"] == 0


def test_load_computes_what_aquila_run_writes(loaded, written):
    cube = written["cube"]
    got = loaded.compute()
    np.testing.assert_array_equal(got["time"].values, cube["time"].values)
    assert list(got["collection"].values) == list(cube["collection"].values)
    np.testing.assert_array_equal(got["x"].values, cube["x"].values)
    np.testing.assert_array_equal(got["y"].values, cube["y"].values)
    assert got["spatial_ref"].attrs["crs_wkt"] == cube["spatial_ref"].attrs["crs_wkt"]
    for b in BANDS:
        _same(got[b].values, cube[b].values)
        assert np.isfinite(got[b].values).mean() > 0.5


def test_load_takes_pystac_items_and_dicts_alike(tiny_catalog, loaded):
    items = pystac.ItemCollection(
        pystac.Catalog.from_file(str(tiny_catalog.catalog_href)).get_items(recursive=True)
    )
    roots = [str(tiny_catalog.root)]
    window = {"y": slice(100, 260), "x": slice(200, 330)}
    expected = loaded.isel(window).compute()
    for given in (items, list(items), [i.to_dict() for i in items]):
        ds = pipeline.load(given, allowed_roots=roots, **_load_kwargs(tiny_catalog))
        got = ds.isel(window).compute()
        for b in BANDS:
            _same(got[b].values, expected[b].values)


def test_reads_happen_at_compute_time_not_at_construction(catalog_copy, tiny_catalog):
    ds = pipeline.load(str(catalog_copy / "catalog.json"), **_load_kwargs(tiny_catalog))
    for tif in catalog_copy.rglob("*.tif"):  # break every raster after construction
        tif.write_bytes(b"not a GeoTIFF any more")
    with pytest.raises(ReadError, match="Fix or remove the item"):
        ds.compute()
    skipped = pipeline.load(str(catalog_copy / "catalog.json"), read_errors="skip",
                            **_load_kwargs(tiny_catalog)).compute()  # left out, logged
    assert all(np.isnan(skipped[b].values).all() for b in BANDS)


def test_chunks_as_a_mapping_and_refusals(tiny_catalog):
    kw = _load_kwargs(tiny_catalog)
    kw["chunks"] = {"y": 256, "x": 256, "time": -1}
    ds = pipeline.load(str(tiny_catalog.catalog_href), **kw)
    assert ds["red"].chunks[1] == (256, 144)
    for bad in ({"y": 256, "x": 128}, {"y": 256, "x": 256, "time": 1}):
        with pytest.raises(SpecError, match="chunks"):
            pipeline.load(str(tiny_catalog.catalog_href), **{**kw, "chunks": bad})
    with pytest.raises(SpecError, match="groupby"):
        pipeline.load(str(tiny_catalog.catalog_href), **{**kw, "groupby": "id"})
    with pytest.raises(SpecError, match="not a CRS"):
        pipeline.load(str(tiny_catalog.catalog_href), **{**kw, "crs": "EPSG:0"})


# --------------------------------------------------------------------------- bad input


def _item_dict(tiny_catalog) -> dict:
    item = next(pystac.Catalog.from_file(str(tiny_catalog.catalog_href)).get_items(
        recursive=True))
    item.make_asset_hrefs_absolute()
    return item.to_dict()


def test_an_href_outside_the_allowed_roots_is_rejected_before_any_io(tiny_catalog, tmp_path):
    good = _item_dict(tiny_catalog)
    bad = _item_dict(tiny_catalog)
    bad["id"] = "outside"
    outside = tmp_path / "elsewhere" / "B04.tif"  # does not even exist: no read is attempted
    for asset in bad["assets"].values():
        asset["href"] = str(outside)
    ds = pipeline.load([good, bad], allowed_roots=[str(tiny_catalog.root)],
                       **_load_kwargs(tiny_catalog))
    rejected = ds.attrs["aquila:rejected"]
    assert [r["item"] for r in rejected] == ["outside"]
    assert rejected[0]["reason"] == "href_not_allowed"  # not asset_missing: refused, not read
    assert str(outside) in rejected[0]["message"]
    assert "outside" not in ds.attrs["aquila:scenes_planned"]
    with pytest.raises(NoScenesError, match="href_not_allowed"):
        pipeline.load([bad], allowed_roots=[str(tiny_catalog.root)],
                      **_load_kwargs(tiny_catalog))


def test_items_as_objects_need_allowed_roots(tiny_catalog):
    with pytest.raises(SpecError, match="allowed_roots"):
        pipeline.load([_item_dict(tiny_catalog)], **_load_kwargs(tiny_catalog))


def test_an_audience_withholds_unmarked_items_and_says_how_many(tiny_catalog):
    with pytest.raises(NoScenesError, match="6 withheld"):
        pipeline.load(str(tiny_catalog.catalog_href), audience={"releasable_to": ["NLD"]},
                      **_load_kwargs(tiny_catalog))
    prepared = prepare(
        str(tiny_catalog.catalog_href),
        load_options(audience={"releasable_to": ["NLD"]}, allow_unmarked=True,
                     **_load_kwargs(tiny_catalog)),
    )
    assert len(prepared.plan.scenes) == 6 and prepared.report.withheld == ()
    assert prepared.report.attrs()["aquila:audience"]["releasable_to"] == ["NLD"]


# --------------------------------------------------------------------------- mosaic


def test_mosaic_of_the_loaded_cube_is_numpy_nanmedian(loaded, written):
    m = pipeline.mosaic(loaded, "median")
    assert _n_chunks(m) * (1 + len(BANDS) + 1) + len(loaded.__dask_graph__()) == len(
        m.__dask_graph__())
    got = m.compute()
    cube = loaded.compute()
    count = np.isfinite(cube["blue"].values).sum(axis=0)
    _same(got["count"].values, count.astype(np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        for b in BANDS:
            expected = np.nanmedian(cube[b].values, axis=0)
            valid = np.isfinite(expected)
            assert valid.mean() > 0.5
            np.testing.assert_allclose(got[b].values[valid], expected[valid], rtol=0,
                                       atol=1e-7)
            assert np.isnan(got[b].values[~valid]).all()
            _same(got[b].values, written["mosaic"][b].values)  # and what the run wrote


def test_mosaic_layers_equal_the_run_stores(loaded, written, tiny_catalog):
    latest = pipeline.mosaic(loaded, "latest").compute()
    for name in (*BANDS, "count", "source"):
        _same(latest[name].values, written["latest"][name].values)
    best = pipeline.mosaic(str(tiny_catalog.catalog_href), "best-pixel", blend={"width": 16},
                           priority=["north", "east", "south"], **_load_kwargs(tiny_catalog))
    n = _n_chunks(best)
    assert len(best.__dask_graph__()) == n * (1 + len(BANDS) + 4)  # count source score weight
    got = best.compute()
    for name in (*BANDS, "count", "source", "score", "weight"):
        _same(got[name].values, written["best"][name].values)
    with pytest.raises(Exception, match="quality masks and a halo"):
        pipeline.mosaic(loaded, "best-pixel")


# --------------------------------------------------------------------------- odc-stac


def test_load_agrees_with_odc_stac_on_the_same_items(tiny_catalog, loaded):
    """Per time slot and band, Aquila's cube (quality masks off) and odc-stac's DN × scale +
    offset, nodata → NaN, on the same GeoBox: equal within 1e-4 on ≥ 99.5 % of the pixels
    where either has a value (nearest differs only at source pixel edges)."""
    odc_stac = pytest.importorskip("odc.stac")
    from odc.geo.geobox import GeoBox

    ds = pipeline.load(str(tiny_catalog.catalog_href), quality_mask=False,
                       **_load_kwargs(tiny_catalog)).compute()
    gbox = GeoBox.from_bbox(tiny_catalog.area_bounds, "EPSG:32632", resolution=10.0)
    items = list(pystac.Catalog.from_file(str(tiny_catalog.catalog_href)).get_items(
        recursive=True))
    for item in items:
        item.make_asset_hrefs_absolute()
    agree = total = 0
    for item in items:
        theirs = odc_stac.load([item], bands=BANDS, geobox=gbox, resampling="nearest",
                               use_overviews=False).isel(time=0)
        slot = _slot_of(ds, item)
        for band in BANDS:
            scale, offset, nodata = _calibration(item, band)
            dn = theirs[band].values
            ref = np.where(dn == nodata, np.nan, dn * scale + offset).astype(np.float32)
            mine = ds[band].values[slot]
            either = np.isfinite(ref) | np.isfinite(mine)
            close = np.isfinite(ref) & np.isfinite(mine) & (np.abs(ref - mine) <= 1e-4)
            agree += int((close & either).sum())
            total += int(either.sum())
    assert total > 0
    assert agree / total >= 0.995, f"{agree} of {total} pixels agree"


def _slot_of(ds: xr.Dataset, item: pystac.Item) -> int:
    assert item.datetime is not None
    when = np.datetime64(item.datetime.astimezone(dt.UTC).replace(tzinfo=None), "ns")
    matches = [i for i, (t, c) in enumerate(zip(ds.time.values, ds.collection.values,
                                                strict=True))
               if c == item.collection_id and abs(t - when) <= np.timedelta64(1, "s")]
    assert len(matches) == 1, item.id
    return matches[0]


def _calibration(item: pystac.Item, band: str) -> tuple[float, float, float]:
    for asset in item.assets.values():
        for i, b in enumerate(asset.extra_fields.get("eo:bands") or []):
            if band in (b.get("common_name"), b.get("name")):
                rb = (asset.extra_fields.get("raster:bands") or [{}])[i]
                return float(rb.get("scale", 1)), float(rb.get("offset", 0)), rb.get("nodata")
    raise KeyError(band)


# --------------------------------------------------------------------------- run


def test_run_on_a_callers_client_leaves_it_usable(tiny_catalog, tmp_path, written):
    from distributed import Client, LocalCluster

    spec = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds,
                          chunk=CHUNK)
    with (LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                       dashboard_address=":0") as lc, Client(lc) as client):
        result = pipeline.run(spec, client=client)
        assert result.status == "success" and result.ok
        assert set(result.products) == {"cube", "mosaic (median)"}
        assert all(p.is_dir() for p in result.products.values())
        assert result.report_path.is_file()
        assert client.status == "running"
        assert client.submit(sum, [1, 2, 3]).result() == 6  # still usable after the run
        prefixes = client.run_on_scheduler(lambda dask_scheduler: list(
            dask_scheduler.task_prefixes))
        assert any(p.startswith("aquila-test-chunk") for p in prefixes)  # the run went there
    cube = result.open("cube").load()
    for b in BANDS:
        _same(cube[b].values, written["cube"][b].values)


def test_run_raises_on_a_bad_spec_and_reports(tiny_catalog, tmp_path):
    spec = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds,
                          chunk=CHUNK, bbox=[100.0, 10.0, 101.0, 11.0])  # nothing there
    with pytest.raises(InputError, match="no usable scene"):
        pipeline.run(spec, direct=True)
    result = pipeline.run(spec, direct=True, check=False)
    assert result.status == "bad_input" and not result.ok and result.report_path.is_file()


# --------------------------------------------------------------------------- real corpus

S2_DIR = SHARED_REAL / "sentinel2/earth-search-v1/S2A_29RKH_20200219_0_L2A"
S2_PREFIX = ("https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/29/R/KH/"
             "2020/2/S2A_29RKH_20200219_0_L2A/")


@pytest.mark.skipif(not S2_DIR.is_dir(), reason=f"the shared real-data corpus is not at "
                    f"{SHARED_REAL} (see its SOURCES.md)")
def test_real_sentinel2_item_window_equals_rasterio_times_scale_and_offset():
    import rasterio

    item = pystac.Item.from_file(str(S2_DIR / "S2A_29RKH_20200219_0_L2A.json"))
    with rasterio.open(S2_DIR / "B04.tif") as src:  # the corpus' local (reduced) red band
        dn, left, top = src.read(1), src.bounds.left, src.bounds.top
        bounds = tuple(src.bounds)
    ds = pipeline.load([item], bands=["red", "nir"], crs="EPSG:32629", resolution=100.0,
                       bounds=bounds, chunks=256, quality_mask=False,
                       allowed_roots=[str(S2_DIR)], href_mirrors={S2_PREFIX: str(S2_DIR)})
    assert ds["red"].chunks[1][0] == 256 and len(ds.time) == 1
    window = ds["red"].isel(time=0, y=slice(300, 364), x=slice(300, 364))
    assert float(window.x[0]) == left + 300 * 100 + 50 and float(window.y[0]) == top - 30050
    got = window.compute().values
    rb = item.assets["red"].extra_fields["raster:bands"][0]  # the item's own calibration
    raw = dn[300:364, 300:364]
    expected = np.where(raw == rb["nodata"], np.nan, raw * rb["scale"] + rb["offset"])
    assert np.isfinite(expected).mean() > 0.9
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6, equal_nan=True)


# --------------------------------------------------------------------------- package


def test_importing_a_lower_layer_does_not_import_xarray_or_dask():
    code = ("import sys, pipeline.kernels, pipeline; "
            "assert 'xarray' not in sys.modules and 'dask' not in sys.modules, 'eager'; "
            "assert callable(pipeline.load) and 'xarray' in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_python_api_guide_runs(tmp_path, monkeypatch):
    """Every ```python block of docs/python-api.md, in order (it generates its catalog)."""
    text = (ROOT / "docs" / "python-api.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "guide"}
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), scope)  # noqa: S102
