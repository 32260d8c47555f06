"""The chunk task's bounded memo of index maps and sun factors (pipeline/engine/memo.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.engine.memo import ChunkMemo, held_bytes
from pipeline.engine.warp import SourceWindow

MIB = 2**20


def test_broadcast_maps_count_their_vectors_and_full_maps_their_size():
    v = np.arange(1024, dtype=np.int32)
    rows = np.broadcast_to(v[:, None], (1024, 1024))
    cols = np.broadcast_to(np.arange(512, dtype=np.int32)[None, :], (1024, 512))
    assert held_bytes(SourceWindow(0, 0, 10, 10, rows, cols)) == 1024 * 4 + 512 * 4
    full = np.zeros((1024, 1024), np.int32)
    assert held_bytes(SourceWindow(0, 0, 10, 10, full, full[:, :])) == 4 * MIB  # one base
    assert held_bytes((np.zeros(10, np.float64), None, "x")) == 80


def test_the_newest_entry_stays_and_older_ones_leave_least_recently_used_first():
    memo = ChunkMemo(budget=10 * MIB)
    for key in "abcde":
        memo[key] = np.zeros(MIB, np.int32)  # 4 MiB each
    assert list(memo) == ["c", "d", "e"] and memo.held == 12 * MIB
    assert "c" in memo and memo["c"] is not None  # c is now the most recently used
    memo["f"] = np.zeros(2 * MIB, np.int32)  # 8 MiB
    assert list(memo) == ["e", "c", "f"] and memo.held == 16 * MIB  # d, least recent, left
    memo["g"] = np.zeros(16 * MIB, np.int32)  # 64 MiB, beyond the budget alone: still kept
    assert list(memo) == ["f", "g"] and memo.held == 72 * MIB


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5)), max_size=40),
       st.integers(0, 12))
def test_the_memo_is_a_memo(ops, budget_mib):
    """Against a plain dict: every key the memo still has maps to what was last set; the bytes
    it holds are the sum of its entries; besides the newest it holds at most the budget."""
    memo, plain = ChunkMemo(budget=budget_mib * MIB), {}
    for key, mib in ops:
        if key in memo:
            assert memo[key] is plain[key]
        value = np.zeros(mib * MIB // 4, np.int32)
        memo[key] = value
        plain[key] = value
        assert memo[key] is value  # the newest entry is never dropped
        assert memo.held == sum(held_bytes(v) for v in memo.values())
        assert memo.held - held_bytes(value) <= budget_mib * MIB or len(memo) == 1
