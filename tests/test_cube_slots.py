"""Committed cube slots read back in batches equal zarr's own reads (absent chunks as NaN,
edge chunks cropped), through an Icechunk session; other layouts fall back to zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from pipeline.cube.slots import CubeSlots
from pipeline.cube.store import COMPRESSOR


def _cube(store, compressor):
    group = zarr.open_group(store, mode="w")
    rng = np.random.default_rng(3)
    for band in ("blue", "red"):
        a = group.create_array(
            band,
            shape=(40, 12, 12),
            chunks=(1, 5, 5),
            dtype="float32",
            compressors=[compressor],
            fill_value=np.nan,
        )
        for t in range(0, 40, 3):  # every third slot has data, in some chunks only
            a[t, :10, :] = rng.random((10, 12), dtype=np.float32)
    return group


@pytest.mark.parametrize(("compressor", "fast"), [(COMPRESSOR, True), (ZstdCodec(), False)])
def test_batched_reads_equal_zarr_reads(tmp_path, compressor, fast):
    import icechunk

    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    session = repo.writable_session("main")
    _cube(session.store, compressor)
    session.commit("cube")
    group = zarr.open_group(repo.readonly_session("main").store, mode="r")
    for iy, ix in ((0, 0), (1, 2), (2, 2)):  # (2, 2): a 2 x 2 edge chunk, no data at all
        region = (slice(5 * iy, min(5 * iy + 5, 12)), slice(5 * ix, min(5 * ix + 5, 12)))
        wanted = list(range(0, 40, 2))
        slots = CubeSlots(group, ["blue", "red"], region, (iy, ix), wanted)
        assert slots.fast is fast
        for s in wanted:
            expected = np.stack([group[b][(s, *region)] for b in ("blue", "red")])
            np.testing.assert_array_equal(slots.get(s), expected, err_msg=f"{(iy, ix)} {s}")
        assert not slots.ready and not slots.pending  # nothing held once read
