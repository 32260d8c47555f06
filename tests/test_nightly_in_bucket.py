"""``aquila nightly`` with its store in a bucket: the same nights as on disk, byte for byte.

Real parts: moto's standalone S3 server on loopback (``tests/s3server.py``), a real Icechunk
repository in it, generated COGs; the expectation is the same nights run into a store on local
disk (the nightly code on disk is itself checked against plain ``aquila run`` in
``tests/test_nightly.py``). Also: the lease keeps a second night out and changes nothing; a prefix
holding someone else's objects is refused untouched; a night killed after its commit, before the
publication, leaves the last night published, and the rerun takes the dead lease over and
publishes what an undisturbed night does; ``aquila history`` reads the nights from the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.products.lease import bucket_lease
from pipeline.products.objectstore import ObjectLocation, s3_settings
from pipeline.products.transaction import NightlyStore
from pipeline.spec.workflow import spec_from_dict
from tests.arrivals import publish
from tests.nightly_helpers import night_spec
from tests.s3server import refusing_endpoint
from tests.test_object_store_out import ROOT, _cli_env, digests, session_product

LEDGER = "_aquila/"  # the ledger array: run ids and times, compared as facts below


def _ids(tiny_catalog) -> list[str]:
    return [s.item_id for s in sorted(tiny_catalog.scenes, key=lambda s: s.datetime)]


def _night(spec: dict, base: Path, store: str | Path, **options):
    return run_nightly(spec_from_dict(spec, base_dir=base),
                       options=NightOptions(store=Path(store), **({"direct": True} | options)))


def _tip(store: str | Path) -> tuple[dict, dict]:
    """(chunk payloads, normalised zarr.json) of ``main``, the ledger's chunks left out."""
    s = NightlyStore.open(Path(store), create=False)
    chunks, meta = session_product(s.readonly())
    return ({k: v for k, v in chunks.items() if not k.startswith(LEDGER)},
            {k: v for k, v in meta.items() if not k.startswith(LEDGER)})


def _facts(store: str | Path):
    """The ledger as facts (what was ingested, from what, used where), without run ids."""
    state = NightlyStore.open(Path(store), create=False).state()
    assert state is not None
    return sorted((e.key, e.checksum, e.status, e.used_in) for e in state.entries), state.slots


def _same(disk: Path, bucket_url: str) -> None:
    (dc, dm), (bc, bm) = _tip(disk), _tip(bucket_url)
    assert sorted(bc) == sorted(dc), "the same chunks are stored"
    assert [k for k in dc if dc[k] != bc[k]] == [], "chunk payloads differ"
    assert bm == dm, "metadata and attributes (run-specific ones aside) differ"
    assert _facts(bucket_url) == _facts(disk)


@pytest.fixture()
def live(tiny_catalog, tmp_path):
    """A live copy of the tiny catalog holding the first night's four scenes."""
    ids = _ids(tiny_catalog)
    path = tmp_path / "live"
    publish(tiny_catalog.root, path, [ids[0], ids[1], ids[3], ids[4]])
    return path


def test_two_nights_in_a_bucket_equal_the_same_nights_on_disk(s3, tiny_catalog, live,
                                                              tmp_path, monkeypatch):
    bucket = s3.make_bucket()
    url = f"s3://{bucket}/nights/n.icechunk"
    disk = tmp_path / "disk" / "n.icechunk"
    spec = night_spec(live, tmp_path / "out")
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder either

    reports = []
    for night in (1, 2):
        if night == 2:  # a late arrival (ids[2]) inserted before later slots, and a new scene
            publish(tiny_catalog.root, live, _ids(tiny_catalog))
        on_disk = _night(spec, tmp_path, disk)
        in_bucket = _night(spec, tmp_path, url)
        assert on_disk.status == in_bucket.status == "success", in_bucket.error
        assert in_bucket.store == url and in_bucket.new == on_disk.new
        _same(disk, url)
        reports.append(in_bucket)
    assert reports[1].slots["first_renumbered"] is not None, "night 2 renumbered slots"

    keys = set(digests(s3, bucket))
    for r in reports:  # every night's report kept beside the store, the latest on top
        assert f"nights/n.icechunk.reports/{r.run_id}.json" in keys
    latest = json.loads(s3.get_bytes(bucket, "nights/n.icechunk.night-report.json"))
    assert latest["run_id"] == reports[1].run_id and latest["exit_code"] == 0
    assert reports[1].products["report"] == f"{url}.night-report.json"
    item = json.loads(s3.get_bytes(bucket, "nights/n.icechunk.stac.json"))
    disk_item = json.loads((disk.parent / "n.icechunk.stac.json").read_text())
    assert item["properties"]["aquila:label"] == disk_item["properties"]["aquila:label"]
    assert item["properties"]["aquila:snapshot"] == reports[1].snapshot
    assert item["assets"]["data"]["href"] == "./n.icechunk"
    sources = [x["href"] for x in item["links"] if x["rel"] == "derived_from"]
    assert sources and all(h.startswith("file:///") for h in sources), (
        "a bucket's sidecar links a local source by its absolute URL, not a path relative "
        f"to the working folder: {sources}")
    assert "nights/n.icechunk.collection.json" in keys
    lease = json.loads(s3.get_bytes(bucket, "nights/n.icechunk.lock"))
    assert lease.get("released") is True, "the lease is handed back"
    assert not any(p.name.startswith("s3") for p in tmp_path.iterdir()), "nothing local"

    # a third night finds nothing new and commits nothing
    third = _night(spec, tmp_path, url)
    assert third.status == "nothing_new"
    assert len(NightlyStore.open(Path(url), create=False).nights()) == 2

    history = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "history", url, "--json"],
        env=_cli_env(s3), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)
    assert [r["run_id"] for r in rows] == [reports[1].run_id, reports[0].run_id]


def test_a_live_lease_keeps_a_second_night_out_and_it_changes_nothing(s3, live, tmp_path):
    bucket = s3.make_bucket()
    url = f"s3://{bucket}/busy/n.icechunk"
    spec = night_spec(live, tmp_path / "out")
    assert _night(spec, tmp_path, url).status == "success"
    before = digests(s3, bucket)
    with bucket_lease(ObjectLocation(bucket, "busy/n.icechunk"), run_id="other",
                      settings=s3_settings()):
        report = _night(spec, tmp_path, url, rebuild=True)
        assert report.status == "busy" and report.exit_code == 75, report.error
        assert "being written by run other" in report.error
    after = digests(s3, bucket)
    unchanged = {k: v for k, v in before.items() if ".lock" not in k and ".reports/" not in k
                 and not k.endswith(".night-report.json")}
    assert {k: after[k] for k in unchanged} == unchanged, "the store and sidecars unchanged"


def test_a_prefix_holding_someone_elses_objects_is_refused_untouched(s3, live, tmp_path):
    bucket = s3.make_bucket()
    s3.put_file(bucket, "theirs/n.icechunk/data.bin", ROOT / "pyproject.toml")
    before = digests(s3, bucket)
    report = _night(night_spec(live, tmp_path / "out"), tmp_path, f"s3://{bucket}/theirs/n.icechunk")
    assert report.status == "bad_input" and "did not write" in report.error, report.error
    assert digests(s3, bucket) == before, "not a byte written: no lease, no report"


def test_a_night_killed_before_its_publication_is_rerun_to_the_undisturbed_night(
        s3, tiny_catalog, live, tmp_path):
    """SIGKILL of ``aquila nightly --direct`` between its commit and the move of ``main``: the
    published night stays the first; the rerun takes the dead driver's lease over at once (same
    host), removes its branch, and publishes what a night never killed publishes."""
    from tests.pausing import child_env

    bucket = s3.make_bucket()
    url, clean = f"s3://{bucket}/killed/n.icechunk", f"s3://{bucket}/clean/n.icechunk"
    spec = night_spec(live, tmp_path / "out")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    for store in (url, clean):
        assert _night(spec, tmp_path, store).status == "success"
    publish(tiny_catalog.root, live, _ids(tiny_catalog))
    assert _night(spec, tmp_path, clean).status == "success"
    first = NightlyStore.open(Path(url), create=False).tip()
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "nightly", str(path), "--store", url,
         "--direct", "--no-progress", "-q"],
        env=child_env("committed", marks, _cli_env(s3)), cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        from tests.test_object_store_out import _wait_for

        _wait_for(marks / "paused-committed", proc, timeout_s=120)
        assert NightlyStore.open(Path(url), create=False).tip() == first
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert NightlyStore.open(Path(url), create=False).tip() == first, "main untouched"
    rerun = _night(spec, tmp_path, url)
    assert rerun.status == "success", rerun.error
    assert rerun.lock["took_over"] is not None and rerun.lock["lease"].endswith(".lock")
    assert any("took over the lock" in n for n in rerun.notes), rerun.notes
    assert any("unpublished branch" in n for n in rerun.notes), rerun.notes
    (kc, km), (cc, cm) = _tip(url), _tip(clean)
    assert kc == cc and km == cm
    assert _facts(url) == _facts(clean)
    assert NightlyStore.open(Path(url), create=False).stale_branches() == []


def test_history_of_a_bucket_that_refuses_is_one_line(tmp_path):
    """``aquila history s3://…`` against an endpoint that answers every request with S3's 403
    (credentials refused): one ``[store_unreachable]`` line naming the store, exit 1; before,
    Icechunk's error escaped as a traceback (also for an endpoint nobody answers at, after
    ~40 s of its retries)."""
    with refusing_endpoint() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
            "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_REGION": "us-east-1"}
        done = subprocess.run([str(Path(sys.executable).with_name("aquila")), "history",
                               "s3://bkt/p/night.icechunk"], env=env, capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "[store_unreachable] the object store failed for " \
        "s3://bkt/p/night.icechunk" in lines[0] and "AWS_ENDPOINT_URL" in lines[0], lines
