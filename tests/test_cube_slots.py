"""Committed cube slots read back a block at a time equal zarr's own reads (absent chunks as NaN,
edge chunks and a short last block cropped), through an Icechunk session; other layouts fall
back to zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from pipeline.products.slots import CubeSlots
from pipeline.products.store import COMPRESSOR


def _cube(store, compressor, block):
    group = zarr.open_group(store, mode="w")
    rng = np.random.default_rng(3)
    for band in ("blue", "red"):
        a = group.create_array(
            band,
            shape=(38, 12, 12),
            chunks=(block, 5, 5),
            dtype="float32",
            compressors=[compressor],
            fill_value=np.nan,
        )
        for t in range(0, 38, 3):  # every third slot has data, in some chunks only
            a[t, :10, :] = rng.random((10, 12), dtype=np.float32)
    return group


@pytest.mark.parametrize(
    ("compressor", "block", "fast"),
    [(COMPRESSOR, 8, True), (COMPRESSOR, 1, True), (ZstdCodec(), 8, False)],
)
def test_block_reads_equal_zarr_reads(tmp_path, compressor, block, fast):
    import icechunk

    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    session = repo.writable_session("main")
    _cube(session.store, compressor, block)
    session.commit("cube")
    group = zarr.open_group(repo.readonly_session("main").store, mode="r")
    for iy, ix in ((0, 0), (1, 2), (2, 2)):  # (2, 2): a 2 x 2 edge chunk, no data at all
        region = (slice(5 * iy, min(5 * iy + 5, 12)), slice(5 * ix, min(5 * ix + 5, 12)))
        slots = CubeSlots([group["blue"], group["red"]], region, (iy, ix))
        assert slots.fast is fast and slots.block == block
        for s in range(0, 38, 2):  # slot 36/37: the last block holds 6 (38 % 8) slots
            expected = np.stack([group[b][(s, *region)] for b in ("blue", "red")])
            np.testing.assert_array_equal(slots.get(s), expected, err_msg=f"{(iy, ix)} {s}")
