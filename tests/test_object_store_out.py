"""Products on object storage: ``store: s3://bucket/prefix/name`` against a real S3 endpoint on
loopback (moto's server, tests/s3server.py).

Expectations come from outside the code under test: the same workflow run into local stores
(chunk payloads compared byte for byte), the bucket's own listing, digests taken before an
attack, Icechunk's history of ``main``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.engine.run import RunOptions, run_workflow
from pipeline.products.bucket import (
    BucketPublication,
    check_bucket_target,
    open_bucket_product,
)
from pipeline.products.lease import LeaseHolder, bucket_lease, lease_location
from pipeline.products.objectstore import (
    ObjectLocation,
    object_location,
    put_text,
    s3_settings,
)
from pipeline.spec.workflow import spec_from_dict
from tests.conftest import make_spec_dict

ROOT = Path(__file__).resolve().parents[1]
AQUILA = str(Path(sys.executable).with_name("aquila"))

# Attributes that differ between two runs of one workflow by design: the run's id and time
# (aquila:created), and the spec
# as given (its 'products' name the stores, which differ between a local and a bucket run).
# Everything else in every zarr.json (array metadata, CF attributes, lineage, label, sources,
# times) must be equal.
COARSE = {"resolution": 40.0}  # one chunk: for tests where the pixels are not the point
FINE = {"resolution": 20.0}  # 2 × 2 chunks of 128 px: the tests that compare pixels
RUN_SPECIFIC_ATTRS = frozenset({"aquila:run_id", "aquila:workflow", "aquila:created"})


# --------------------------------------------------------------------------- helpers


def bucket_spec(catalog_root: Path, bucket: str, prefix: str, bounds, **extra) -> dict:
    """The tiny catalog's workflow into ``s3://bucket/prefix/{mosaic,cube}.zarr``."""
    spec = make_spec_dict(catalog_root, Path("unused"), bounds=bounds, **extra)
    spec["products"] = {
        "mosaic": {"store": f"s3://{bucket}/{prefix}/mosaic.zarr", "method": "median"},
        "cube": {"store": f"s3://{bucket}/{prefix}/cube.zarr"},
    }
    return spec


def run_spec(spec: dict, base: Path, **options: Any):
    return run_workflow(spec_from_dict(spec, base_dir=base),
                        options=RunOptions(**({"direct": True} | options)))


def _normalised(doc: dict) -> dict:
    doc = {k: v for k, v in doc.items() if k != "consolidated_metadata"}
    if isinstance(doc.get("attributes"), dict):
        doc["attributes"] = {k: v for k, v in doc["attributes"].items()
                             if k not in RUN_SPECIFIC_ATTRS}
    return doc


def local_product(path: Path) -> tuple[dict[str, bytes], dict[str, dict]]:
    """(chunk key → payload, node path → normalised zarr.json) of a store on disk."""
    chunks, meta = {}, {}
    for f in sorted(path.rglob("*")):
        if f.is_file():
            key = f.relative_to(path).as_posix()
            if f.name == "zarr.json":
                meta[key] = _normalised(json.loads(f.read_bytes()))
            else:
                chunks[key] = f.read_bytes()
    return chunks, meta


def digests(s3, bucket: str) -> dict[str, str]:
    """Every object of ``bucket`` by key, as its ETag (the listing's: one request)."""
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", ())}


def bucket_product(url: str, *, snapshot: str | None = None
                   ) -> tuple[dict[str, bytes], dict[str, dict]]:
    """The same for a bucket product (the tip of ``main``, or ``snapshot``)."""
    session = open_bucket_product(url, snapshot=snapshot)
    return session_product(session)


def session_product(session) -> tuple[dict[str, bytes], dict[str, dict]]:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    store = session.store

    async def everything() -> dict[str, bytes]:
        keys = [k async for k in store.list()]
        out = {}
        for k in keys:
            buf = await store.get(k, prototype=default_buffer_prototype())
            out[k] = buf.to_bytes()
        return out

    chunks, meta = {}, {}
    for key, raw in sync(everything()).items():
        if key.rsplit("/", 1)[-1] == "zarr.json":
            meta[key] = _normalised(json.loads(raw))
        else:
            chunks[key] = raw
    return chunks, meta


def assert_same_product(local: tuple[Mapping, Mapping], bucket: tuple[Mapping, Mapping]) -> None:
    (lc, lm), (bc, bm) = local, bucket
    assert sorted(bc) == sorted(lc), "the same chunks are stored"
    differing = [k for k in lc if lc[k] != bc[k]]
    assert not differing, f"chunk payloads differ: {differing[:5]}"
    assert sorted(bm) == sorted(lm)
    for key in lm:
        if bm[key] != lm[key] and "attributes" in lm[key]:
            la, ba = lm[key]["attributes"], bm[key]["attributes"]
            diff = {k: (la.get(k), ba.get(k)) for k in set(la) | set(ba) if la.get(k) != ba.get(k)}
            assert not diff, f"{key}: attributes differ {diff}"
        assert bm[key] == lm[key], f"{key} differs"


@pytest.fixture(scope="module")
def reference(tiny_catalog, tmp_path_factory):
    """The workflow run into local stores (the expectation for every bucket run)."""
    out = tmp_path_factory.mktemp("local-reference")
    spec = make_spec_dict(tiny_catalog.root, out, bounds=tiny_catalog.area_bounds, **FINE)
    report = run_spec(spec, out)
    assert report.status == "success", report.error
    return {name: local_product(out / f"{name}.zarr") for name in ("mosaic", "cube")}


@pytest.fixture()
def bucket(s3):
    return s3.make_bucket()


# --------------------------------------------------------------------------- a run


def test_a_bucket_run_equals_the_run_on_disk_and_writes_nothing_local(
        s3, bucket, tiny_catalog, reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = bucket_spec(tiny_catalog.root, bucket, "products", tiny_catalog.area_bounds, **FINE)
    report = run_spec(spec, tmp_path)
    assert report.status == "success", report.error
    for name in ("mosaic", "cube"):
        assert_same_product(reference[name],
                            bucket_product(f"s3://{bucket}/products/{name}.zarr"))
    keys = s3.keys(bucket)
    beside = sorted(k for k in keys if k.count("/") == 1)
    assert beside == [
        "products/cube.zarr.collection.json", "products/cube.zarr.lock",
        "products/cube.zarr.stac.json", "products/mosaic.zarr.collection.json",
        "products/mosaic.zarr.lock", "products/mosaic.zarr.stac.json",
        "products/test.run-report.json",
    ]
    put = json.loads(s3.get_bytes(bucket, "products/test.run-report.json"))
    assert put["status"] == "success" and put["run_id"] == report.run_id
    assert put["products"]["mosaic (median)"] == f"s3://{bucket}/products/mosaic.zarr"
    assert any("no pictures drawn" in n for n in put["notes"])
    assert os.listdir(tmp_path) == [], "nothing local (no folder named 's3:')"
    item = json.loads(s3.get_bytes(bucket, "products/mosaic.zarr.stac.json"))
    assert item["properties"]["aquila:run_id"] == report.run_id
    assert item["assets"]["data"]["href"] == "./mosaic.zarr"


def test_the_label_is_kept_in_the_product_and_its_sidecar(s3, bucket, tiny_catalog, tmp_path):
    spec = bucket_spec(tiny_catalog.root, bucket, "labelled", tiny_catalog.area_bounds, **COARSE,
                       audience={"releasable_to": ["NLD"]}, allow_unmarked=True)
    report = run_spec(spec, tmp_path)
    assert report.status == "success", report.error
    _, meta = bucket_product(f"s3://{bucket}/labelled/mosaic.zarr")
    label = meta["zarr.json"]["attributes"]["aquila:label"]
    item = json.loads(s3.get_bytes(bucket, "labelled/mosaic.zarr.stac.json"))
    assert item["properties"]["aquila:label"] == label == report.labels["mosaic (median)"]
    assert "labelled/test.operator-report.json" in s3.keys(bucket, "labelled/")


def test_a_rerun_publishes_a_new_version_readers_of_the_old_keep_theirs(
        s3, bucket, tiny_catalog, reference, tmp_path):
    spec = bucket_spec(tiny_catalog.root, bucket, "rerun", tiny_catalog.area_bounds, **FINE)
    first = run_spec(spec, tmp_path)
    old = open_bucket_product(f"s3://{bucket}/rerun/mosaic.zarr")  # a reader, mid-way
    second = run_spec(spec, tmp_path)
    assert (first.status, second.status) == ("success", "success")
    assert_same_product(reference["mosaic"], bucket_product(f"s3://{bucket}/rerun/mosaic.zarr"))
    import zarr

    assert zarr.open_group(old.store, mode="r").attrs["aquila:run_id"] == first.run_id
    session = open_bucket_product(f"s3://{bucket}/rerun/mosaic.zarr")
    assert zarr.open_group(session.store, mode="r").attrs["aquila:run_id"] == second.run_id


def test_a_mixed_workflow_is_refused(bucket, tiny_catalog, tmp_path):
    from pipeline.errors import SpecError

    spec = bucket_spec(tiny_catalog.root, bucket, "mixed", tiny_catalog.area_bounds)
    spec["products"]["cube"] = {"store": str(tmp_path / "cube.zarr")}
    with pytest.raises(SpecError, match="one kind of storage"):
        run_spec(spec, tmp_path)


def test_store_locations_parse_every_spelling():
    want = ObjectLocation("b", "p/q/m.zarr")
    for spelling in ("s3://b/p/q/m.zarr", "s3:/b/p/q/m.zarr", "/work/x/s3:/b/p/q/m.zarr"):
        assert object_location(spelling) == want
    assert object_location("/data/out/m.zarr") is None
    assert want.sibling("r.json") == ObjectLocation("b", "p/q/r.json")


# --------------------------------------------------------------------------- one writer


def test_two_builds_at_once_publish_one_whole_version_never_a_mix(s3, bucket, tiny_catalog,
                                                                   tmp_path):
    """Past the lease (a run paused beyond its expiry): both build on one base, the first to
    move ``main`` wins, the second is refused and ``main`` is exactly the first's commit."""
    import zarr

    from pipeline.errors import RunError

    store = ObjectLocation(bucket, "race/m.zarr")
    settings = s3_settings()
    a = BucketPublication([store], run_id="A", settings=settings)
    b = BucketPublication([store], run_id="B", settings=settings)

    def layout(value: float):
        def write(_loc, zstore):
            g = zarr.open_group(zstore, mode="w-", attributes={"aquila:product": "test"})
            g.create_array("v", shape=(4,), chunks=(2,), dtype="f4", fill_value=0)
        return write, value

    for pub, value in ((a, 1.0), (b, 2.0)):
        write, _ = layout(value)
        pub.start(write)
    for pub, value in ((a, 1.0), (b, 2.0)):
        forks = []
        for half in (0, 1):  # two "tasks", each its own fork and chunk
            fork = pub.fork(store)
            zarr.open_array(fork.store, path="v", mode="r+")[2 * half:2 * half + 2] = value
            forks.append(fork)
        pub.merge(store, forks)
    a.publish({}, summary={})
    with pytest.raises(RunError) as err:
        b.publish({}, summary={})
    assert err.value.reason == "publish_conflict"
    a.discard()
    b.discard()
    session = open_bucket_product(f"s3://{bucket}/race/m.zarr")
    values = zarr.open_array(session.store, path="v", mode="r")[:]
    assert list(values) == [1.0] * 4, "one version, whole"


def test_a_live_lease_refuses_a_second_run_which_changes_nothing(s3, bucket, tiny_catalog,
                                                                 tmp_path):
    spec = bucket_spec(tiny_catalog.root, bucket, "busy", tiny_catalog.area_bounds, **COARSE)
    assert run_spec(spec, tmp_path).status == "success"
    before = digests(s3, bucket)
    store = ObjectLocation(bucket, "busy/cube.zarr")
    with bucket_lease(store, run_id="other", settings=s3_settings()):
        report = run_spec(spec, tmp_path)
        assert report.status == "busy" and report.exit_code == 75
        assert "being written by run other" in report.error
    after = digests(s3, bucket)
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == {
        k: v for k, v in before.items() if not k.endswith(".lock")}, "nothing changed"


def test_an_expired_lease_of_another_host_is_taken_over_and_reported(s3, bucket, tiny_catalog,
                                                                     tmp_path):
    spec = bucket_spec(tiny_catalog.root, bucket, "expired", tiny_catalog.area_bounds, **COARSE)
    dead = LeaseHolder(4242, "elsewhere", "pid:[1]", "20250101T000000Z-dead",
                       "2025-01-01T00:00:00+00:00", "2025-01-01T00:02:00+00:00")
    where = lease_location(ObjectLocation(bucket, "expired/mosaic.zarr"))
    put_text(where, json.dumps(dead.__dict__), s3_settings())
    report = run_spec(spec, tmp_path)
    assert report.status == "success", report.error
    assert any("took over the lease" in n and "20250101T000000Z-dead" in n
               for n in report.notes), report.notes
    live = LeaseHolder(4242, "elsewhere", "pid:[1]", "20250101T000000Z-live",
                       "2025-01-01T00:00:00+00:00", "2999-01-01T00:00:00+00:00")
    put_text(where, json.dumps(live.__dict__), s3_settings())
    assert run_spec(spec, tmp_path).status == "busy", "an unexpired lease elsewhere is live"


def test_a_lease_that_cannot_be_renewed_stops_the_publish(s3, bucket):
    store = ObjectLocation(bucket, "renew/m.zarr")
    with bucket_lease(store, run_id="me", settings=s3_settings(), seconds=0.3) as (_, held):
        put_text(lease_location(store), json.dumps({"released": True}), s3_settings())
        deadline = time.monotonic() + 5
        while held.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.lost is not None and "could not be renewed" in held.lost


# --------------------------------------------------------------------------- a killed driver


def _cli_env(s3, extra: Mapping[str, str] = ()) -> dict[str, str]:
    env = {**os.environ, **s3.env(), **dict(extra)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {path.name}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_a_killed_driver_leaves_the_old_product_and_the_rerun_takes_its_lease_over(
        s3, bucket, tiny_catalog, reference, tmp_path):
    """SIGKILL of ``aquila run --direct`` mid-writes: ``main`` is the previous version; the
    next run takes the dead driver's lease at once (same host), reports it, removes its branch
    and publishes the same product as a run never killed."""
    from tests.pausing import child_env

    spec = bucket_spec(tiny_catalog.root, bucket, "killed", tiny_catalog.area_bounds, **FINE)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    first = run_spec(spec, tmp_path)
    assert first.status == "success"
    before = bucket_product(f"s3://{bucket}/killed/mosaic.zarr")
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    proc = subprocess.Popen(
        [AQUILA, "run", str(path), "--direct", "--no-progress", "-q"],
        env=child_env("write", pauses, _cli_env(s3)), cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(pauses / "paused-write", proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert bucket_product(f"s3://{bucket}/killed/mosaic.zarr") == before, "main untouched"
    again = subprocess.run([AQUILA, "run", str(path), "--direct", "--json", "--no-progress"],
                           env=_cli_env(s3), cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert any("took over the lease" in n for n in doc["notes"]), doc["notes"]
    assert any("left by a killed run" in n for n in doc["notes"]), doc["notes"]
    for name in ("mosaic", "cube"):
        assert_same_product(reference[name], bucket_product(f"s3://{bucket}/killed/{name}.zarr"))
    assert not (tmp_path / "s3:").exists()


def test_check_refuses_a_prefix_holding_anything_else(s3, bucket, tmp_path):
    from pipeline.errors import StoreNotOurs

    s3.put_file(bucket, "theirs/m.zarr/data.bin", ROOT / "pyproject.toml")
    with pytest.raises(StoreNotOurs, match="holds objects Aquila did not write"):
        check_bucket_target(ObjectLocation(bucket, "theirs/m.zarr"), s3_settings())


# --------------------------------------------------------------------------- a wrong endpoint


@pytest.mark.parametrize("command", ["run", "nightly"])
def test_an_unreachable_endpoint_is_one_line_and_the_report_lands_locally(
        command, tiny_catalog, tmp_path):
    """A mistyped AWS_ENDPOINT_URL (nothing listens there): the bucket run, and the night into a
    bucket store, each end with one ``[store_unreachable]`` line naming the stores and the
    variable to check, exit 1, no traceback (before: obstore's error escaped as one, with its
    40-line debug dump); the report, which the bucket cannot take, is in the temporary
    folder, its ``report_error`` one line too."""
    if command == "run":
        doc = bucket_spec(tiny_catalog.root, "bkt", "p", tiny_catalog.area_bounds, **COARSE)
        where = ["s3://bkt/p/cube.zarr", "s3://bkt/p/mosaic.zarr"]
        extra = ["--direct"]
    else:
        doc = make_spec_dict(tiny_catalog.root, tmp_path / "out",
                             bounds=tiny_catalog.area_bounds, **COARSE)
        where = ["s3://bkt/p/night.icechunk"]
        extra = ["--direct", "--store", where[0]]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1", "TMPDIR": str(temp)}
    done = subprocess.run([AQUILA, command, str(spec), "--no-progress", *extra], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Debug source" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "[store_unreachable] the object store failed for " + ", ".join(where) in last, last
    assert "AWS_ENDPOINT_URL" in last
    kept, = temp.glob("aquila-*.json")
    report = json.loads(kept.read_text())
    assert report["status"] == "failed" and "store_unreachable" in report["error"]
    assert "\n" not in report["report_error"] and "not put at s3://bkt/p/" in \
        report["report_error"]
