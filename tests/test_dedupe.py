"""One acquisition published twice is kept once, by the documented rule, whatever the order."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from pipeline.catalog.dedupe import drop_duplicates, same_acquisition
from pipeline.catalog.items.normalise import normalise_doc
from pipeline.catalog.items.options import NormaliseOptions
from pipeline.catalog.scene import Scene
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.io.hrefs import HrefPolicy
from tests.conftest import SHARED_REAL

T0 = dt.datetime(2025, 7, 31, 13, 3, 19, tzinfo=dt.UTC)


def scene(sid, *, collection="c", platform="sentinel-2b", when=T0, area=(0, 0, 1, 1), **facts):
    return Scene(
        id=sid,
        collection=collection,
        provider="sentinel-2",
        datetime=when,
        footprint=box(*area),
        bands=(),
        platform=platform,
        extra=tuple(sorted((k, str(v)) for k, v in facts.items())),
    )


def test_level_2_is_kept_over_level_1_of_the_same_acquisition():
    l1 = scene("S2B_24MUV_L1C", collection="sentinel-2-l1c", level=1, version="05.11")
    l2 = scene("S2B_T24MUV_L2A", collection="sentinel-2-c1-l2a", level=2, version="05.11")
    kept, dups = drop_duplicates([l1, l2])
    assert [s.id for s in kept] == ["S2B_T24MUV_L2A"]
    assert (dups[0].kept, dups[0].dropped, dups[0].rule) == (
        "S2B_T24MUV_L2A",
        "S2B_24MUV_L1C",
        "processing level 2 > 1",
    )


def test_newer_baseline_then_later_generation_wins():
    old = scene("A_N0400", level=2, version="04.00", generated="2022-01-26T00:00:00+00:00")
    new = scene("A_N0509", level=2, version="05.09", generated="2021-01-01T00:00:00+00:00")
    assert drop_duplicates([old, new])[1][0].rule == "processing version 05.09 > 04.00"
    first = scene(
        "LC08_..._20201106_02_T2", level=2, version="02", generated="2020-11-06T00:00:00+00:00"
    )
    again = scene(
        "LC08_..._20210101_02_T1", level=2, version="02", generated="2021-01-01T00:00:00+00:00"
    )
    kept, dups = drop_duplicates([again, first])
    assert [s.id for s in kept] == [again.id] and dups[0].rule.startswith("product generated")


def test_full_tie_is_broken_by_collection_and_id_not_by_order():
    a = scene("b", collection="x")
    b = scene("a", collection="y")
    assert drop_duplicates([a, b])[0] == drop_duplicates([b, a])[0] == [b]


def test_adjacent_tiles_and_other_platforms_and_later_passes_are_not_duplicates():
    a = scene("T24MUA", area=(0, 0, 1, 1))
    assert not same_acquisition(a, scene("T24MUV", area=(0, 0.9, 1, 1.9)))  # 10 % overlap
    assert not same_acquisition(a, scene("other", platform="sentinel-2a"))
    assert not same_acquisition(a, scene("later", when=T0 + dt.timedelta(seconds=3)))
    assert same_acquisition(
        a, scene("again", when=T0 + dt.timedelta(seconds=1), area=(0, 0, 1, 0.95))
    )


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(6))))
def test_the_kept_set_does_not_depend_on_discovery_order(order):
    base = [
        scene("p1", level=1),
        scene("p2", level=2, updated="2025-01-01"),
        scene("p3", level=2, updated="2025-02-01"),
        scene("q1", area=(5, 5, 6, 6)),
        scene("r1", when=T0 + dt.timedelta(hours=1)),
        scene("r2", when=T0 + dt.timedelta(hours=1), version="05.11"),
    ]
    kept, dups = drop_duplicates([base[i] for i in order])
    # p: level 2 beats 1, then the later record; r: a version on one side only is no evidence,
    # so the tie-break (greater id) keeps r2; q is alone
    assert sorted(s.id for s in kept) == ["p3", "q1", "r2"]
    assert len(kept) + len(dups) == 6


@pytest.mark.skipif(not SHARED_REAL.is_dir(), reason=f"no shared corpus at {SHARED_REAL}")
def test_the_real_24mua_published_in_two_earth_search_collections():
    options = NormaliseOptions(policy=HrefPolicy.for_catalog("x", ("https://",)), check_files=False)
    scenes = []
    for name in (
        "S2B_24MUA_20250731_0_L2A",
        "S2B_T24MUA_20250731T130245_L2A",
        "S2B_T24MUV_20250731T130245_L2A",
    ):
        path = SHARED_REAL / "sentinel2" / "earth-search-v1" / f"{name}.json"
        doc = ItemDoc.from_dict(json.loads(path.read_text()), self_href=str(path))
        scenes.append(normalise_doc(doc, bands=("red",), options=options))
    kept, dups = drop_duplicates(scenes)
    # same product (same s2:product_uri, baseline 05.11, generation time); the legacy record was
    # written last (updated 14:22:36 vs 14:13:59), so rule 4 keeps it. T24MUV is the next tile.
    assert sorted(s.id for s in kept) == [
        "S2B_24MUA_20250731_0_L2A",
        "S2B_T24MUV_20250731T130245_L2A",
    ]
    assert dups[0].dropped == "S2B_T24MUA_20250731T130245_L2A"
    assert dups[0].rule.startswith("metadata updated 2025-07-31T14:22:36")
