"""Nightly mosaics updated from their committed values (latest, earliest, min, max).

A night that only appends slots to a chunk folds the new slots into the committed mosaic
(:class:`pipeline.engine.compose.FoldState`) instead of recomposing it from every slot. The
expectation is independent of that path: the stack kernels over the whole history (property
test), and a plain ``aquila run`` over tonight's catalog (end to end).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.engine.compose import FoldState, composite_method
from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.plan.chunks import MosaicOutput, SlotScenes
from pipeline.plan.increment import Fold, _fold
from pipeline.plan.methods import FOLDABLE_METHODS, can_fold
from pipeline.spec.workflow import spec_from_dict
from tests.arrivals import publish
from tests.nightly_helpers import assert_same, current, full_run, make_arrivals, night_spec


@pytest.fixture(scope="module")
def arrivals(tmp_path_factory):
    return make_arrivals(tmp_path_factory.mktemp("arrivals") / "full")


FOLDED = {"latest": "latest", "earliest": "earliest", "min": "min", "max": "max"}

# values with ties, signed zeros and NaN (no data): what min/max and latest must order exactly
_VALUES = st.sampled_from([np.nan, -0.0, 0.0, 0.25, -0.25, 0.5, 1.0])


@settings(max_examples=80, deadline=None)
@given(
    method=st.sampled_from(sorted(FOLDABLE_METHODS)),
    stack=hnp.arrays(np.float32, st.tuples(st.integers(2, 7), st.integers(1, 3),
                                           st.integers(1, 4), st.integers(1, 4)),
                     elements=_VALUES),
    data=st.data(),
)
def test_folding_new_slots_gives_the_whole_stacks_mosaic(method, stack, data):
    """The mosaic of some of the slots (the committed night, numbered its own way), taken up
    again, renumbered and given the others (tonight's new slots, wherever they fall in time),
    equals the stack kernel over every slot: bands (signed zeros included), count, source."""
    t = stack.shape[0]
    committed = data.draw(st.lists(st.booleans(), min_size=t, max_size=t)
                          .filter(any), label="committed")
    # cube indices tonight: increasing, with gaps (other chunks' slots sit between them); the
    # committed night numbered its slots without tonight's new ones (a late arrival renumbers)
    gaps = data.draw(st.lists(st.integers(0, 3), min_size=t, max_size=t), label="gaps")
    tonight = [int(j) for j in np.cumsum(np.array(gaps) + 1) - 1]
    before = {k: tonight[k] - sum(not c for c in committed[:k]) for k in range(t) if committed[k]}
    spec = MosaicOutput(store=Path("m.zarr"), method=method)

    def stack_kernel(ks: list[int], index: dict[int, int]) -> dict[str, np.ndarray]:
        return composite_method(spec, np.ascontiguousarray(stack[ks]),
                                [SlotScenes(index[k], ()) for k in ks],
                                bands=["b"] * stack.shape[1], qa_masked=None)

    state = FoldState(spec, stack_kernel(list(before), before),
                      moved=[(i, tonight[k]) for k, i in before.items() if i != tonight[k]])
    for k in data.draw(st.permutations([k for k in range(t) if not committed[k]]), label="new"):
        if np.isfinite(stack[k]).all(axis=0).any():  # an empty slot is never folded (nor read)
            state.update(tonight[k], stack[k])
    got, want = state.result(), stack_kernel(list(range(t)), dict(enumerate(tonight)))
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].tobytes() == want[name].tobytes(), name


def test_only_unblended_foldable_methods_fold():
    m = {k: MosaicOutput(store=Path(f"{k}.zarr"), method=k) for k in ("latest", "max", "median")}
    assert can_fold([m["latest"], m["max"]])
    assert not can_fold([m["latest"], m["median"]]) and not can_fold([])
    blended = MosaicOutput(store=Path("b.zarr"), method="latest", blend_width=4)
    assert not can_fold([blended])
    with pytest.raises(ValueError, match="median mosaic cannot be folded"):
        FoldState(m["median"], {})


def _night(live: Path, tmp_path: Path, store: Path, mosaics=FOLDED):
    spec = night_spec(live, tmp_path / "out", store=store, mosaics=mosaics)
    report = run_nightly(
        spec_from_dict(spec, base_dir=tmp_path), options=NightOptions(store=store, direct=True)
    )
    assert report.status == "success", report.error
    return spec, report


def test_appending_nights_fold_and_equal_a_full_run(arrivals, tmp_path):
    """Night 2 appends a scene: the chunks it touches fold it in, reading no committed slot but
    their cube blocks' own; night 3 inserts a late arrival before committed slots (renumbering
    them) and appends one: the chunks fold them in and renumber their sources. Each night
    equals a full run."""
    full, nights, _ = arrivals
    live, store = tmp_path / "live", tmp_path / "n.icechunk"
    published = list(nights[0])
    publish(full, live, published)
    _, r1 = _night(live, tmp_path, store)
    assert r1.chunks["mosaic_folds"] == 0  # a new store: nothing committed to fold into
    published += nights[1]
    publish(full, live, published)
    spec, r2 = _night(live, tmp_path, store)
    assert r2.chunks["mosaic_folds"] == r2.chunks["mosaic"] > 0
    assert r2.slots["first_renumbered"] is None
    assert_same(current(store), full_run(spec, tmp_path / "full-2"), groups=("cube", *FOLDED))
    published += nights[3]  # a late arrival and a new scene
    publish(full, live, published)
    spec, r3 = _night(live, tmp_path, store)
    assert r3.slots["first_renumbered"] is not None
    assert r3.chunks["mosaic_folds"] == r3.chunks["mosaic"] > 0
    assert_same(current(store), full_run(spec, tmp_path / "full-3"), groups=("cube", *FOLDED))
    for before, after in _night_pairs(store):
        written, same = _mosaic_chunks_written(store, before, after, FOLDED)
        assert written > 0
        assert same == [], f"mosaic chunks rewritten with the bytes they had: {same[:5]}"


def test_a_fold_over_the_keep_bound_writes_every_layer(arrivals, tmp_path, monkeypatch):
    """Committed layers larger than the bound are not kept for the unchanged-layer check (a
    second copy of the fold's state): the fold then writes every layer, and still equals a full
    run."""
    import pipeline.engine.night_chunk as night_chunk

    full, nights, _ = arrivals
    live, store = tmp_path / "live", tmp_path / "n.icechunk"
    publish(full, live, list(nights[0]))
    _night(live, tmp_path, store)
    monkeypatch.setattr(night_chunk, "_KEEP_COMMITTED", 1024)
    publish(full, live, [*nights[0], *nights[1]])
    spec, r2 = _night(live, tmp_path, store)
    assert r2.chunks["mosaic_folds"] == r2.chunks["mosaic"] > 0
    assert_same(current(store), full_run(spec, tmp_path / "full"), groups=("cube", *FOLDED))
    ((before, after),) = _night_pairs(store)
    written, same = _mosaic_chunks_written(store, before, after, FOLDED)
    assert same and written == r2.chunks["mosaic"] * _layers_per_chunk()


def _layers_per_chunk() -> int:
    """Mosaic layers of a chunk in :data:`FOLDED`: 4 bands and count, and source where the
    method picks one observation."""
    from pipeline.plan.methods import mosaic_layers

    return sum(5 + len(mosaic_layers(m)) for m in FOLDED.values())


def _night_pairs(store: Path) -> list[tuple[str, str]]:
    """(snapshot before, snapshot after) of each night after the first."""
    from pipeline.products.transaction import NightlyStore

    snaps = [n.snapshot for n in reversed(NightlyStore.open(store, create=False).nights())]
    return list(zip(snaps, snaps[1:], strict=False))


def _mosaic_chunks_written(store: Path, before: str, after: str, groups) -> tuple[int, list]:
    """How many chunks of the mosaics' arrays a night wrote (Icechunk's diff of the two
    snapshots), and those it wrote with the bytes they already had."""
    import zarr

    from pipeline.products.transaction import NightlyStore

    s = NightlyStore.open(store, create=False)
    diff = s.repo.diff(from_snapshot_id=before, to_snapshot_id=after)
    old, new = s.readonly(before), s.readonly(after)
    written, same = 0, []
    for path, coords in diff.updated_chunks.items():
        if path.strip("/").split("/")[0] not in groups:
            continue
        a = zarr.open_array(old.store, path=path.strip("/"), mode="r")
        b = zarr.open_array(new.store, path=path.strip("/"), mode="r")
        for c in coords:
            written += 1
            region = tuple(slice(i * n, (i + 1) * n) for i, n in zip(c, b.chunks, strict=True))
            x, y = np.ascontiguousarray(a[region]), np.ascontiguousarray(b[region])
            if x.dtype == y.dtype and x.tobytes() == y.tobytes():
                same.append((path, tuple(c)))
    return written, same


def test_a_median_beside_keeps_recomposing(arrivals, tmp_path):
    """One mosaic that cannot fold (the median) makes every touched chunk recompose them all."""
    full, nights, _ = arrivals
    live, store = tmp_path / "live", tmp_path / "n.icechunk"
    mosaics = {"median": "median", "latest": "latest"}
    publish(full, live, nights[0])
    _night(live, tmp_path, store, mosaics)
    publish(full, live, nights[0] + nights[1])
    _, r2 = _night(live, tmp_path, store, mosaics)
    assert r2.chunks["mosaic"] > 0 and r2.chunks["mosaic_folds"] == 0


def _plans(mosaics=("latest",), tonight_mosaics=None):
    def plan(methods):
        outputs = SimpleNamespace(mosaics=tuple(
            MosaicOutput(store=Path(f"{m}.zarr"), method=m) for m in methods))
        return SimpleNamespace(outputs=outputs)

    return plan(mosaics), plan(tonight_mosaics or mosaics)


@pytest.mark.parametrize(
    ("tonight", "fold"),
    [
        ({0: ("a",), 1: ("b",), 2: ("c",)}, Fold((2,), ())),  # appended
        ({0: ("x",), 1: ("a",), 2: ("b",), 4: ("c",)}, Fold((0, 4), ((0, 1), (1, 2)))),  # late
        ({0: ("a",), 1: ("b",)}, Fold((), ())),  # slots moved elsewhere: nothing new here
        ({0: ("b",), 1: ("a",)}, None),  # reordered: the latest is no longer the latest
        ({0: ("a",), 2: ("c",)}, None),  # a slot gone
        ({0: ("a",), 1: ("b", "y")}, None),  # a scene joined a committed slot here
    ],
)
def test_a_chunk_folds_only_when_tonight_adds_slots_in_order(tonight, fold):
    old, new = _plans()
    assert _fold(old, new, {0: ("a",), 1: ("b",)}, tonight) == fold


def test_changed_mosaic_parameters_recompose():
    old, new = _plans(("latest",), ("earliest",))
    assert _fold(old, new, {0: ("a",)}, {0: ("a",), 1: ("b",)}) is None
    assert _fold(*_plans(), {}, {0: ("a",)}) is None  # nothing committed to fold into
