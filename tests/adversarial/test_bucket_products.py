"""Bucket products (``store: s3://…``) that are not Aquila's to replace: whatever stands at the
product's prefix or beside it, a run is refused before any work (``store_not_aquila``, exit 2)
and every object of the bucket is left exactly as it was (ETags taken before the attack).
"""

from __future__ import annotations

import json

import pytest

from tests.test_object_store_out import COARSE, bucket_spec, digests, run_spec

PREFIX = "prod"


def _foreign_object(s3, bucket, tmp_path):
    (tmp_path / "notes.txt").write_text("a user's file")
    s3.put_file(bucket, f"{PREFIX}/mosaic.zarr/notes.txt", tmp_path / "notes.txt")


def _plain_zarr(s3, bucket, tmp_path):
    """Someone's plain Zarr store at the product's key (zarr.json and a chunk)."""
    (tmp_path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                    "attributes": {}}))
    s3.put_file(bucket, f"{PREFIX}/cube.zarr/zarr.json", tmp_path / "zarr.json")
    s3.put_file(bucket, f"{PREFIX}/cube.zarr/b/c/0/0", tmp_path / "zarr.json")


def _foreign_repository(s3, bucket, tmp_path):
    """An Icechunk repository with a commit another program made."""
    import icechunk
    import zarr

    from pipeline.products.objectstore import ObjectLocation, icechunk_storage, s3_settings

    repo = icechunk.Repository.create(
        icechunk_storage(ObjectLocation(bucket, f"{PREFIX}/mosaic.zarr"), s3_settings()))
    session = repo.writable_session("main")
    zarr.open_group(session.store, mode="w").create_array("x", shape=(2,), dtype="f4")
    session.commit("someone else's data")


def _foreign_sidecar(s3, bucket, tmp_path):
    (tmp_path / "item.json").write_text(json.dumps({"type": "Feature", "properties": {}}))
    s3.put_file(bucket, f"{PREFIX}/mosaic.zarr.stac.json", tmp_path / "item.json")


def _foreign_lock(s3, bucket, tmp_path):
    (tmp_path / "lock").write_text("not a lease")
    s3.put_file(bucket, f"{PREFIX}/cube.zarr.lock", tmp_path / "lock")


@pytest.mark.parametrize(
    ("attack", "says"),
    [
        (_foreign_object, "holds objects Aquila did not write (notes.txt)"),
        (_plain_zarr, "holds objects Aquila did not write"),
        (_foreign_repository, "commits Aquila did not make"),
        (_foreign_sidecar, "mosaic.zarr.stac.json beside it, which is not a STAC sidecar"),
        (_foreign_lock, "is not a lease Aquila wrote"),
    ],
    ids=["object-at-prefix", "plain-zarr", "foreign-icechunk", "foreign-sidecar",
         "foreign-lock"],
)
def test_what_is_not_aquilas_at_a_bucket_product_is_refused_untouched(
        s3, tiny_catalog, tmp_path, attack, says):
    bucket = s3.make_bucket()
    attack(s3, bucket, tmp_path)
    before = digests(s3, bucket)
    spec = bucket_spec(tiny_catalog.root, bucket, PREFIX, tiny_catalog.area_bounds, **COARSE)
    report = run_spec(spec, tmp_path)
    assert report.status == "bad_input" and report.exit_code == 2, report.error
    assert report.error.startswith("[store_not_aquila]") and says in report.error
    assert digests(s3, bucket) == before, "every object as it was, nothing added"
