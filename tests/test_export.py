"""``aquila export``: COG, GeoTIFF and netCDF of real products (a run's cube and mosaics, a
nightly Icechunk store), compared pixel for pixel with xarray's reading of the store, the grid
with the spec's own numbers, and the label with one computed here by hand."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from pipeline.cli.main import main as aquila
from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.engine.run import RunOptions, run_workflow
from pipeline.errors import InputError
from pipeline.products.export import export, export_product, staged
from pipeline.products.transaction import NightlyStore, open_night
from pipeline.spec.workflow import spec_from_dict
from tests.arrivals import publish
from tests.conftest import make_spec_dict
from tests.nightly_helpers import night_spec

BOUNDS = (500000, 5000000, 504000, 5004000)
MARK = {"classification": "RESTRICTED", "releasable_to": ["NLD", "NOR"], "caveats": ["A"],
        "owner": "NLD", "licence": "CC-BY-4.0"}
# the high-water mark of scenes that all carry MARK, for an audience of NLD: by hand
LABEL = {"classification": "RESTRICTED", "releasable_to": ["NLD", "NOR"], "caveats": ["A"],
         "licences": ["CC-BY-4.0"], "owners": ["NLD"]}
AUDIENCE = {"releasable_to": ["NLD"]}


@pytest.fixture(scope="module")
def marked(tiny_catalog, tmp_path_factory) -> Path:
    """The tiny catalog, every item marked with MARK."""
    root = tmp_path_factory.mktemp("export-catalog") / "catalog"
    shutil.copytree(tiny_catalog.root, root)
    for path in sorted(root.glob("*/*/*.json")):
        doc = json.loads(path.read_text())
        doc["properties"]["aquila:marking"] = MARK
        path.write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def products(marked, tmp_path_factory) -> Path:
    """A labelled run: cube, median mosaic and latest mosaic (with its source layer), 20 m."""
    out = tmp_path_factory.mktemp("export-run")
    d = make_spec_dict(marked, out, bounds=BOUNDS, chunk=64, resolution=20.0, audience=AUDIENCE)
    d["products"]["mosaics"] = [{"store": str(out / "latest.zarr"), "method": "latest"}]
    report = run_workflow(spec_from_dict(d, base_dir=out), options=RunOptions(direct=True))
    assert report.status == "success", report.error
    return out


@pytest.fixture(scope="module")
def nightly(marked, tmp_path_factory) -> tuple[Path, list[str]]:
    """A nightly store of two nights (3 scenes, then all), 40 m; its snapshots oldest first."""
    base = tmp_path_factory.mktemp("export-nightly")
    ids = sorted(p.stem for p in marked.glob("*/*/*.json") if p.stem != "collection")
    store = base / "n.icechunk"
    snapshots = []
    for k in (3, len(ids)):
        publish(marked, base / "live", ids[:k])
        spec = night_spec(base / "live", base / "out", store=store, res=40.0, audience=AUDIENCE)
        report = run_nightly(spec_from_dict(spec, base_dir=base),
                             options=NightOptions(store=store, direct=True))
        assert report.status == "success", report.error
        snapshots.append(report.snapshot)
    return store, snapshots


def read_tiff(path: Path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.tags(), src.descriptions, src.overviews(1)


def assert_bands_equal(pixels: np.ndarray, ds: xr.Dataset, names) -> None:
    for i, name in enumerate(names):
        expected = ds[name].values
        assert pixels[i].dtype == expected.dtype, name
        np.testing.assert_array_equal(pixels[i], expected, err_msg=name)  # NaN == NaN here
        assert np.isfinite(expected).any(), name  # a test of real pixels, not of empty ones


def no_strays(folder: Path) -> list[str]:
    return [p for p in os.listdir(folder) if p.startswith(".")]


# --------------------------------------------------------------------------- GeoTIFF


def test_cog_of_a_mosaic_is_valid_has_overviews_and_equals_the_store(products, tmp_path):
    out = export(products / "mosaic.zarr", tmp_path / "mosaic.tif", format="cog")
    valid, errors, _ = cog_validate(str(out), quiet=True)
    assert valid, errors
    pixels, profile, tags, names, overviews = read_tiff(out)
    assert overviews == [2]  # 200 px in 128-px tiles: one level
    ds = xr.open_zarr(products / "mosaic.zarr")
    assert names == ("blue", "green", "red", "nir")
    assert_bands_equal(pixels, ds, names)
    assert profile["crs"] == CRS.from_epsg(32632)
    assert profile["crs"] == CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"])
    assert profile["transform"] == Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 5004000.0)
    assert np.isnan(profile["nodata"]) and profile["tiled"]
    assert json.loads(tags["AQUILA_LABEL"]) == LABEL
    assert tags["AQUILA_STATUS"] == "complete" and tags["AQUILA_PRODUCT"] == "mosaic (median)"


def test_cog_of_one_cube_slot_by_index_and_by_date(products, tmp_path):
    ds = xr.open_zarr(products / "cube.zarr")
    day = str(ds.time.values[2])[:10]
    assert sum(str(t).startswith(day) for t in ds.time.values) == 1  # the date names one slot
    by_index = export(products / "cube.zarr", tmp_path / "i.tif", format="cog", time=2)
    by_date = export(products / "cube.zarr", tmp_path / "d.tif", format="cog", time=day)
    pixels, profile, tags, names, _ = read_tiff(by_index)
    assert_bands_equal(pixels, ds.isel(time=2), names)
    assert np.array_equal(read_tiff(by_date)[0], pixels, equal_nan=True)
    assert tags["AQUILA_TIME_INDEX"] == "2" and tags["AQUILA_TIME"].startswith(day)
    assert json.loads(tags["AQUILA_LABEL"]) == LABEL
    assert json.loads(tags["AQUILA_SLOT_LABEL"]) == LABEL
    assert cog_validate(str(by_index), quiet=True)[0]


def test_geotiff_of_a_lineage_layer_keeps_its_type_and_nodata(products, tmp_path):
    out = export(products / "latest.zarr", tmp_path / "source.tif", format="geotiff",
                 bands=["source"])
    pixels, profile, tags, names, overviews = read_tiff(out)
    ds = xr.open_zarr(products / "latest.zarr")
    assert names == ("source",) and profile["dtype"] == "int32" and profile["nodata"] == -1
    np.testing.assert_array_equal(pixels[0], ds["source"].values)
    assert (pixels[0] >= 0).any() and overviews == []  # plain: no overviews
    # the spec's own numbers (ds.rio needed rioxarray imported by whichever test ran before)
    assert profile["transform"] == Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 5004000.0)


def test_mixed_types_are_refused_not_converted(products, tmp_path):
    with pytest.raises(InputError, match="count uint16") as err:
        export(products / "latest.zarr", tmp_path / "m.tif", format="cog", bands=["red", "count"])
    assert err.value.reason == "mixed_dtypes"
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- nightly


def test_cog_of_a_nightly_mosaic_now_and_as_of_the_first_night(nightly, tmp_path):
    store, (first, last) = nightly
    now = export_product(store, tmp_path / "now.tif", format="cog", group="latest")
    then = export_product(store, tmp_path / "then.tif", format="cog", group="latest", at=first)
    assert (now.snapshot, then.snapshot) == (last, first)
    for done, run in ((now, None), (then, first)):
        assert cog_validate(str(done.path), quiet=True)[0]
        pixels, profile, tags, names, overviews = read_tiff(done.path)
        ds = xr.open_zarr(open_night(store, run=run).store, group="latest", consolidated=False)
        assert_bands_equal(pixels, ds, names)
        assert overviews == [2]
        assert profile["transform"] == Affine(40.0, 0.0, 500000.0, 0.0, -40.0, 5004000.0)
        assert json.loads(tags["AQUILA_LABEL"]) == LABEL
    assert not np.array_equal(read_tiff(now.path)[0], read_tiff(then.path)[0], equal_nan=True)


def test_nightly_at_a_date_picks_the_newest_night_by_then(nightly, tmp_path):
    store, (_, last) = nightly
    newest = NightlyStore.open(store, create=False).nights()[0].written_at
    done = export_product(store, tmp_path / "c.nc", format="netcdf", group="cube",
                          at=newest.date().isoformat())
    assert done.snapshot == last
    with pytest.raises(InputError, match="no night published by") as err:
        export(store, tmp_path / "x.nc", format="netcdf", group="cube", at="2001-01-01")
    assert err.value.reason == "night_missing"
    with pytest.raises(InputError, match="cube, latest, mosaic") as err:
        export(store, tmp_path / "y.nc", format="netcdf")
    assert err.value.reason == "group_missing"


# --------------------------------------------------------------------------- netCDF


def test_netcdf_of_the_cube_round_trips_values_crs_and_label(products, tmp_path):
    out = export(products / "cube.zarr", tmp_path / "cube.nc", format="netcdf")
    store = xr.open_zarr(products / "cube.zarr")
    with xr.open_dataset(out, engine="netcdf4") as nc:
        assert set(nc.data_vars) == set(store.data_vars)
        for name in [*store.data_vars, "time", "x", "y"]:
            assert nc[name].dtype == store[name].dtype, name
            np.testing.assert_array_equal(nc[name].values, store[name].values, err_msg=name)
        assert list(nc["collection"].values) == [str(c) for c in store["collection"].values]
        mapping = nc[nc["red"].attrs["grid_mapping"]]
        assert CRS.from_wkt(mapping.attrs["crs_wkt"]) == CRS.from_epsg(32632)
        assert nc.attrs["Conventions"] == "CF-1.8"
        assert json.loads(nc.attrs["aquila:label"]) == LABEL
        assert json.loads(nc.attrs["aquila:slot_labels"]) == [LABEL] * store.sizes["time"]


def test_netcdf_of_a_mosaic_keeps_integer_layers_as_integers(products, tmp_path):
    out = export(products / "latest.zarr", tmp_path / "latest.nc", format="netcdf")
    store = xr.open_zarr(products / "latest.zarr")
    with xr.open_dataset(out, engine="netcdf4") as nc:
        for name in ("count", "source", "red"):
            assert nc[name].dtype == store[name].dtype, name
            np.testing.assert_array_equal(nc[name].values, store[name].values, err_msg=name)
        sources = json.loads(nc.attrs["sources"])
        assert sources == json.loads(json.dumps(store.attrs["sources"]))


# --------------------------------------------------------------------------- refusals (CLI)


def run_cli(capsys, *argv: str) -> tuple[int, dict]:
    code = aquila(["export", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_an_existing_out_is_refused_and_left_alone(products, tmp_path, capsys):
    out = tmp_path / "taken.tif"
    out.write_bytes(b"mine")
    code, doc = run_cli(capsys, str(products / "mosaic.zarr"), "--format", "cog", str(out))
    assert (code, doc["reason"]) == (2, "output_exists")
    assert "exists" in doc["error"] and out.read_bytes() == b"mine"
    assert no_strays(tmp_path) == []


def test_an_incomplete_product_is_refused(products, tmp_path, capsys):
    import zarr

    copy = tmp_path / "mosaic.zarr"
    shutil.copytree(products / "mosaic.zarr", copy)
    zarr.open_group(str(copy), mode="a").attrs["aquila:status"] = "incomplete"
    code, doc = run_cli(capsys, str(copy), "--format", "netcdf", str(tmp_path / "m.nc"))
    assert (code, doc["reason"]) == (2, "product_incomplete")
    assert "not a complete product" in doc["error"]
    assert not (tmp_path / "m.nc").exists() and no_strays(tmp_path) == []


def test_an_unknown_band_and_a_cube_without_time_are_refused(products, tmp_path, capsys):
    code, doc = run_cli(capsys, str(products / "mosaic.zarr"), "--format", "cog",
                        "--bands", "red,swir", str(tmp_path / "a.tif"))
    assert (code, doc["reason"]) == (2, "band_missing")
    assert "'swir'" in doc["error"] and "red" in doc["error"]
    code, doc = run_cli(capsys, str(products / "cube.zarr"), "--format", "geotiff",
                        str(tmp_path / "b.tif"))
    assert (code, doc["reason"]) == (2, "time_required")
    assert "--time" in doc["error"] and "--format netcdf" in doc["error"]
    assert os.listdir(tmp_path) == []


def test_the_cli_writes_and_reports_json(products, tmp_path, capsys):
    out = tmp_path / "sub" / "cube.tif"
    code, doc = run_cli(capsys, str(products / "cube.zarr"), "--format", "cog", "--time", "-1",
                        str(out))
    assert code == 0 and doc["status"] == "success" and doc["out"] == str(out)
    assert doc["label"] == LABEL and doc["bytes"] == out.stat().st_size
    store = xr.open_zarr(products / "cube.zarr")
    assert doc["time"] == str(store.time.values[-1])[:19]


def test_a_damaged_store_fails_and_leaves_no_file(products, tmp_path, capsys):
    copy = tmp_path / "mosaic.zarr"
    shutil.copytree(products / "mosaic.zarr", copy)
    chunk = next(p for p in sorted((copy / "red" / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(b"not a blosc frame")
    target = tmp_path / "out"
    for fmt, name in (("cog", "m.tif"), ("netcdf", "m.nc")):
        code, doc = run_cli(capsys, str(copy), "--format", fmt, str(target / name))
        assert code == 1 and doc["status"] == "failed", doc
        assert os.listdir(target) == []  # neither OUT nor a temporary file


def test_ctrl_c_inside_the_write_removes_the_temporary_file(tmp_path):
    out = tmp_path / "x.tif"
    with pytest.raises(KeyboardInterrupt), staged(out) as tmp:
        tmp.write_bytes(b"half")
        tmp.with_name(tmp.name + ".ovr.tmp").write_bytes(b"gdal's")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_help_explains_formats_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        aquila(["export", "--help"])
    text = capsys.readouterr().out
    for word in ("cog", "geotiff", "netcdf", "--time", "--at", "--group", "exit codes", "130"):
        assert word in text, word
