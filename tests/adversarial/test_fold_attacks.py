"""Hostile nights for mosaics updated from their committed values (latest, earliest, min, max).

A folded mosaic keeps whatever its committed layers hold, so a committed scene that must leave
it, or whose pixels changed, must never be folded over: a scene withdrawn from the catalog (as
one no longer releasable to the audience is), and a committed scene's COG rewritten in place,
each while another scene is appended. The chunks they touch are recomposed; every night equals
a plain ``aquila run`` over tonight's catalog.
"""

from __future__ import annotations

import pytest

from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.spec.workflow import spec_from_dict
from tests.adversarial.test_nightly_change import _rewrite_scene
from tests.arrivals import publish
from tests.nightly_helpers import assert_same, current, full_run, make_arrivals, night_spec

FOLDED = {"latest": "latest", "earliest": "earliest", "min": "min", "max": "max"}


@pytest.fixture(scope="module")
def arrivals(tmp_path_factory):
    return make_arrivals(tmp_path_factory.mktemp("arrivals") / "full")


def _night(live, tmp_path, store):
    spec = night_spec(live, tmp_path / "out", store=store, mosaics=FOLDED)
    report = run_nightly(
        spec_from_dict(spec, base_dir=tmp_path), options=NightOptions(store=store, direct=True)
    )
    assert report.status == "success", report.error
    return spec, report


@pytest.mark.parametrize("attack", ["withdrawn", "rewritten in place"])
def test_a_committed_scene_that_changed_is_never_folded_over(arrivals, tmp_path, attack):
    full, nights, _ = arrivals
    live, store = tmp_path / "live", tmp_path / "n.icechunk"
    first = nights[0] + nights[1]
    publish(full, live, first)
    _night(live, tmp_path, store)
    victim, appended = first[0], nights[5][0]  # the earliest scene; one acquired after them all
    tonight = [i for i in first if i != victim or attack != "withdrawn"]
    publish(full, live, [*tonight, appended])
    if attack == "rewritten in place":
        _rewrite_scene(live, victim, how="replace", checksum=False)  # a new file, same item
    spec, report = _night(live, tmp_path, store)
    assert report.new == [appended]
    if attack == "withdrawn":
        assert report.removed == [victim]
    else:
        assert report.changed_in_place == [victim]
    assert report.chunks["mosaic_folds"] < report.chunks["mosaic"]  # its chunks recomposed
    assert_same(current(store), full_run(spec, tmp_path / "full"), groups=("cube", *FOLDED))
