"""Nightly runs: seven nights equal one full run; empty nights commit nothing; past nights open.

Real parts throughout: generated COGs, a real LocalCluster with worker processes (the shared
``cluster`` fixture), a real Icechunk repository; every night is compared with a plain
``aquila run`` over the same catalog (no ledger, no diff, plain Zarr).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.engine.cluster import ClusterOptions
from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.products.transaction import NightlyStore
from pipeline.spec.workflow import spec_from_dict
from tests.arrivals import item_files, publish
from tests.nightly_helpers import (
    REPROCESSED,
    assert_same,
    current,
    full_run,
    load,
    make_arrivals,
    night_spec,
    time_strictly_increasing,
)


@pytest.fixture(scope="module")
def arrivals(tmp_path_factory):
    return make_arrivals(tmp_path_factory.mktemp("arrivals") / "full")


@pytest.mark.slow
def test_seven_nights_equal_one_full_run(arrivals, cluster, tmp_path):
    full, nights, replaced = arrivals
    live = tmp_path / "live"
    store = tmp_path / "night.icechunk"
    published: list[str] = []
    reports, references = [], {}
    for n, ids in enumerate(nights, 1):
        published += ids
        publish(full, live, published)
        spec = night_spec(live, tmp_path / "out", store=store)
        report = run_nightly(
            spec_from_dict(spec, base_dir=tmp_path),
            options=NightOptions(
                store=store, cluster=ClusterOptions(scheduler=cluster.scheduler.address)
            ),
        )
        reports.append(report)
        assert report.status == ("nothing_new" if not ids else "success"), (n, report.error)
        night = current(store)
        assert time_strictly_increasing(night)
        if n in (2, 4, 5, 7):  # appended, inserted (late), replaced (reprocessed), final
            references[n] = full_run(spec, tmp_path / f"full-{n}")
            assert_same(night, references[n])  # equals a full run over tonight's catalog
    # one commit per night that had something new, none for the empty night
    history = NightlyStore.open(store, create=False).nights()
    assert [h.run_id for h in history] == [r.run_id for r in reversed(reports) if r.snapshot]
    assert len(history) == 6 and reports[2].snapshot is None
    assert "nothing new: no commit" in reports[2].notes
    # the late arrival was inserted and renumbered the slots after it
    assert reports[3].slots["first_renumbered"] is not None
    assert reports[3].slots["after"] == reports[3].slots["before"] + 2
    # the reprocessed scene replaced its old publication in the same slot
    r5 = reports[4]
    assert r5.replaced == [
        {"old": replaced, "new": REPROCESSED, "rule": "processing version 05.11 > 05.10"}
    ]
    assert r5.slots["after"] == r5.slots["before"] and r5.new == [REPROCESSED]
    cube = load(current(store), "cube")
    slot = [
        s["index"]
        for s in load(current(store), "latest").attrs["sources"]
        if REPROCESSED in s["scenes"]
    ]
    assert len(slot) == 1 and not any(
        replaced in s["scenes"] for s in load(current(store), "latest").attrs["sources"]
    )
    before = load(current(store, reports[3].run_id), "cube")  # night 4, before the replacement
    diff = cube["red"].values[slot[0]] - before["red"].values[slot[0]]
    assert np.nanmax(np.abs(diff - 0.002)) < 1e-6  # the new calibration (offset + 0.002)
    # past nights stay readable: night 2 as it was published equals a full run of night 2
    assert_same(current(store, reports[1].run_id), references[2])
    # the ledger records every ingested scene with its checksum and version
    state = NightlyStore.open(store, create=False).state()
    ingested = {e.id: e for e in state.ingested()}
    assert set(ingested) == set(item_files(live)) - {replaced}
    assert ingested[REPROCESSED].version["version"] == "05.11"
    assert all(len(e.checksum) == 64 for e in state.entries)
    assert [e.id for e in state.entries if e.status == "duplicate"] == [replaced]


def test_history_lists_the_nights_from_the_store(arrivals, tmp_path):
    full, nights, _ = arrivals
    live, store = tmp_path / "live", tmp_path / "n.icechunk"
    publish(full, live, nights[0])
    spec = night_spec(live, tmp_path / "out", store=store)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    report = run_nightly(
        spec_from_dict(spec, base_dir=tmp_path), options=NightOptions(store=store, direct=True)
    )
    assert report.status == "success"
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "history", str(store), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(out.stdout)
    assert [r["run_id"] for r in rows] == [report.run_id]
    assert rows[0]["snapshot"] == report.snapshot and rows[0]["new"] == len(nights[0])
    written = json.loads((tmp_path / "n.icechunk.night-report.json").read_text())
    assert written["run_id"] == report.run_id and written["exit_code"] == 0
    assert (tmp_path / "n.icechunk.reports" / f"{report.run_id}.json").is_file()


def _night(live, tmp_path, store, *, blend: int = 0, **kw):
    spec = night_spec(live, tmp_path / "out", store=store, **kw)
    if blend:
        spec["products"]["mosaics"][0]["blend"] = {"width": blend}
    report = run_nightly(
        spec_from_dict(spec, base_dir=tmp_path), options=NightOptions(store=store, direct=True)
    )
    return spec, report


def test_a_night_with_a_late_arrival_a_reprocessed_and_a_changed_item(arrivals, tmp_path):
    """Night 2 inserts a scene before existing slots, replaces a scene by its newer baseline,
    re-normalises an item whose document changed, and appends a new scene: the store equals a
    full run, and only the new and changed slots are read from their assets."""
    full, nights, replaced = arrivals
    live, store = tmp_path / "live", tmp_path / "n.icechunk"
    first = nights[0] + nights[1]
    publish(full, live, first)
    _, r1 = _night(live, tmp_path, store)
    assert r1.status == "success" and r1.slots["after"] == len(first)
    late, new = nights[3]
    publish(full, live, [*first, late, new, REPROCESSED])
    changed = next(i for i in first if i != replaced)
    path = item_files(live)[changed]
    doc = json.loads(path.read_text())
    for asset in doc["assets"].values():
        for band in asset.get("raster:bands", []):
            if "data" in asset.get("roles", []):
                band["scale"] = band["scale"] * 1.01
    path.write_text(json.dumps(doc))
    spec, r2 = _night(live, tmp_path, store)
    assert r2.status == "success", r2.error
    assert sorted(r2.new) == sorted([late, new, REPROCESSED]) and r2.changed == [changed]
    assert [x["old"] for x in r2.replaced] == [replaced]
    assert r2.reused == len(first) - 1  # the changed item alone was normalised again
    assert_same(current(store), full_run(spec, tmp_path / "full"))
    # reads scale with what is new: slots whose scenes did not change come from the cube
    fresh = {e.id: e for e in NightlyStore.open(store).state().entries}
    touched = sum(len(fresh[i].chunks) for i in [*r2.new, *r2.changed])  # (scene, chunk) pairs
    assert r2.chunks["slot_reads"] == touched and r2.chunks["slot_copies"] > 0
    # and a third night with nothing new commits nothing
    _, r3 = _night(live, tmp_path, store)
    assert r3.status == "nothing_new" and r3.snapshot is None and r3.exit_code == 0
    assert r3.reused == r3.items_found and len(NightlyStore.open(store).nights()) == 2
    # one snapshot per night (the store's creation alone had its own: the groups)
    history = NightlyStore.open(store).repo.ancestry(branch="main")
    kinds = [dict(a.metadata or {}).get("aquila:kind") for a in history]
    assert kinds == ["night", "night", "prepare", None], kinds


def test_best_pixel_and_blended_mosaics_refresh_exactly(arrivals, tmp_path):
    """Mosaics with a halo (best-pixel's cloud distance, seam blending) and quality masks
    cannot be recomposed from the cube: their touched chunks read every slot from the scenes,
    and still equal a full run."""
    full, nights, _ = arrivals
    live, store = tmp_path / "live", tmp_path / "n.icechunk"
    mosaics = {"best": "best-pixel", "latest": "latest"}
    publish(full, live, nights[0])
    _night(live, tmp_path, store, mosaics=mosaics, blend=6)
    publish(full, live, nights[0] + nights[1])
    spec, r2 = _night(live, tmp_path, store, mosaics=mosaics, blend=6)
    assert spec["products"]["mosaics"][0] == {
        "store": str(tmp_path / "out" / "latest.zarr"),
        "method": "latest",
        "blend": {"width": 6},
    }
    assert r2.status == "success", r2.error
    assert_same(current(store), full_run(spec, tmp_path / "full"), groups=("cube", *mosaics))


def test_a_changed_radiometry_refuses_to_append_and_says_rebuild(arrivals, tmp_path):
    """Pixels made with other mask classes or dilation must not be mixed into one cube."""
    full, nights, _ = arrivals
    live, store = tmp_path / "live", tmp_path / "n.icechunk"
    publish(full, live, nights[0])
    _, first = _night(live, tmp_path, store)
    assert first.status == "success"
    publish(full, live, nights[1])
    _, second = _night(live, tmp_path, store, radiometry={"dilate": 1})
    assert second.status == "bad_input" and second.exit_code == 2
    assert "radiometry" in second.error and "--rebuild" in second.error
    assert [n.run_id for n in NightlyStore.open(store, create=False).nights()] == [first.run_id]
