"""``aquila export`` of products in a bucket (``s3://bucket/prefix/name``): a run's mosaic and a
nightly store's group, read from a real S3 endpoint on loopback (moto's server,
``tests/s3server.py``). The expectation is the same workflow run into a local store and
exported from there (the local export is itself checked against xarray's reading of the store
in ``tests/test_export.py``): the same pixels, grid and label, byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from pipeline.cli.main import main as aquila
from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.errors import InputError, ProductNotFound, RunError
from pipeline.products.export import export_product
from pipeline.products.transaction import NightlyStore
from pipeline.spec.workflow import spec_from_dict
from tests.conftest import make_spec_dict
from tests.nightly_helpers import night_spec
from tests.s3server import refusing_endpoint
from tests.test_object_store_out import bucket_spec, run_spec

BOUNDS_EXTRA = {"resolution": 20.0, "audience": {"releasable_to": ["NLD"]},
                "allow_unmarked": True}


def tiff(path: Path) -> tuple[np.ndarray, dict, dict]:
    with rasterio.open(path) as src:
        return src.read(), dict(src.profile), src.tags()


@pytest.fixture()
def published(s3, tiny_catalog, tmp_path) -> tuple[str, Path]:
    """The tiny catalog's workflow published to a bucket and, the same, to local disk."""
    bucket = s3.make_bucket()
    spec = bucket_spec(tiny_catalog.root, bucket, "p", tiny_catalog.area_bounds, **BOUNDS_EXTRA)
    assert run_spec(spec, tmp_path / "b").status == "success"
    local = tmp_path / "local"
    d = make_spec_dict(tiny_catalog.root, local, bounds=tiny_catalog.area_bounds, **BOUNDS_EXTRA)
    assert run_spec(d, local).status == "success"
    return f"s3://{bucket}/p", local


def test_a_mosaic_in_a_bucket_exports_as_the_same_product_on_disk(published, tmp_path):
    url, local = published
    from_bucket = export_product(f"{url}/mosaic.zarr", tmp_path / "b.tif", format="cog")
    from_disk = export_product(local / "mosaic.zarr", tmp_path / "d.tif", format="cog")
    (bp, bprof, btags), (dp, dprof, dtags) = tiff(from_bucket.path), tiff(from_disk.path)
    assert np.isfinite(dp).any()  # real pixels, not an empty product
    np.testing.assert_array_equal(bp, dp)
    assert (bprof["crs"], bprof["transform"]) == (dprof["crs"], dprof["transform"])
    assert json.loads(btags["AQUILA_LABEL"]) == json.loads(dtags["AQUILA_LABEL"])
    assert btags["AQUILA_STATUS"] == "complete"
    assert from_bucket.source == f"{url}/mosaic.zarr" and from_bucket.snapshot


def test_the_cli_exports_a_bucket_cube_slot_and_says_where_from(published, tmp_path, capsys):
    url, local = published
    out = tmp_path / "slot.nc"
    code = aquila(["export", f"{url}/cube.zarr", "--format", "netcdf", "--time", "0",
                   str(out), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    assert doc["store"] == f"{url}/cube.zarr" and doc["out"] == str(out)
    got = xr.open_dataset(out)
    want = xr.open_zarr(local / "cube.zarr").isel(time=0)
    for name in ("blue", "nir"):
        np.testing.assert_array_equal(got[name].values.squeeze(), want[name].values)


def test_a_missing_bucket_product_and_nightly_options_on_a_run_product_are_refused(
        published, tmp_path):
    url, _ = published
    with pytest.raises(ProductNotFound, match="no product at s3://"):
        export_product(f"{url}/nothing.zarr", tmp_path / "x.tif", format="cog")
    with pytest.raises(RunError, match="could not read s3://aquila-no-such-bucket/p/m.zarr: "
                       ".*check the bucket's name") as err:  # no such bucket: storage, not input
        export_product("s3://aquila-no-such-bucket/p/m.zarr", tmp_path / "x.tif", format="cog")
    assert err.value.reason == "store_unreachable"
    with pytest.raises(InputError, match="--at and --group are for nightly stores"):
        export_product(f"{url}/mosaic.zarr", tmp_path / "x.tif", format="cog", group="latest")
    assert not (tmp_path / "x.tif").exists()


def test_a_nightly_store_in_a_bucket_exports_its_group(s3, tiny_catalog, tmp_path):
    bucket = s3.make_bucket()
    url = f"s3://{bucket}/n/n.icechunk"
    spec = night_spec(tiny_catalog.root, tmp_path / "out", res=40.0)
    report = run_nightly(spec_from_dict(spec, base_dir=tmp_path),
                         options=NightOptions(store=Path(url), direct=True))
    assert report.status == "success", report.error
    done = export_product(url, tmp_path / "latest.tif", format="cog", group="latest")
    assert done.snapshot == report.snapshot
    pixels, _, tags = tiff(done.path)
    session = NightlyStore.open(Path(url), create=False).readonly(report.snapshot)
    want = xr.open_zarr(session.store, group="latest", consolidated=False)
    assert np.isfinite(pixels).any()
    for i, name in enumerate(("blue", "green", "red", "nir")):
        np.testing.assert_array_equal(pixels[i], want[name].values)
    assert tags["AQUILA_STATUS"] == "complete"


def _repo(url: str):
    """An Icechunk repository created at ``url`` by someone else (not Aquila)."""
    from pipeline.products.objectstore import icechunk_storage, object_location, s3_settings
    from pipeline.products.transaction import _icechunk

    return _icechunk().Repository.create(icechunk_storage(object_location(url), s3_settings()))


def test_a_foreign_repository_and_one_never_published_are_named_as_such(s3, tmp_path):
    import zarr

    bucket = s3.make_bucket()
    theirs = _repo(f"s3://{bucket}/theirs.zarr")
    session = theirs.writable_session("main")
    zarr.create_group(session.store, attributes={"aquila:status": "complete"})
    session.commit("not Aquila's")
    with pytest.raises(ProductNotFound, match="commits Aquila did not make") as err:
        export_product(f"s3://{bucket}/theirs.zarr", tmp_path / "x.tif", format="cog")
    assert err.value.reason == "not_a_product"
    _repo(f"s3://{bucket}/killed.zarr")  # a first run killed before it published: root only
    with pytest.raises(ProductNotFound, match="no published product yet"):
        export_product(f"s3://{bucket}/killed.zarr", tmp_path / "x.tif", format="cog")
    assert not (tmp_path / "x.tif").exists()


def test_a_refusing_endpoint_is_one_line_and_a_run_failure(s3, tmp_path, capsys, monkeypatch):
    """The storage failed (credentials refused), not the input: exit 1, one line. (The same
    path as an endpoint nobody answers at, which Icechunk retries for ~30 s before it gives up:
    tests/test_object_store_out.py runs that case through obstore, which gives up sooner.)"""
    with refusing_endpoint() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        code = aquila(["export", "s3://bkt/p/mosaic.zarr", "--format", "cog",
                       str(tmp_path / "x.tif")])
    err = capsys.readouterr().err
    assert code == 1, err  # the storage failed, not the input: exit 1, not 2
    assert err.count("\n") == 1 and "[store_unreachable] could not read s3://bkt/p/mosaic.zarr" \
        in err and "AWS_ENDPOINT_URL" in err
    assert not (tmp_path / "x.tif").exists()


def test_a_local_folder_named_s3_colon_stays_local(published, tmp_path, capsys, monkeypatch):
    """``s3:/b/…`` is what a shell makes of a mistyped URL, and a folder may have that name:
    when it exists here it is read from disk, and the JSON names the path as given, tidied."""
    _, local = published
    (tmp_path / "s3:" / "bkt").mkdir(parents=True)
    shutil.copytree(local / "mosaic.zarr", tmp_path / "s3:" / "bkt" / "mosaic.zarr")
    monkeypatch.chdir(tmp_path)
    code = aquila(["export", "./s3:/bkt/mosaic.zarr/", "--format", "cog", "m.tif", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    assert doc["store"] == doc["source"] == "s3:/bkt/mosaic.zarr"
    np.testing.assert_array_equal(
        tiff(tmp_path / "m.tif")[0],
        tiff(export_product(local / "mosaic.zarr", tmp_path / "d.tif", format="cog").path)[0])
