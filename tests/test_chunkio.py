"""Whole chunks written past zarr-python (pipeline.products.chunkio) store exactly the bytes zarr
stores: same keys, same encoded chunks, fill-value chunks deleted; arrays opened from their
metadata equal zarr's; other layouts and partial selections go through zarr."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

import pipeline.products.chunkio as chunkio
from pipeline.products.store import COMPRESSOR

LAYERS = {  # name -> (dtype, fill value, chunks, shape)
    "cube": ("float32", np.nan, (8, 5, 5), (19, 12, 12)),
    "red": ("float32", np.nan, (5, 5), (12, 12)),
    "zero": ("float32", 0.0, (5, 5), (12, 12)),
    "count": ("uint16", 0, (5, 5), (12, 12)),
    "source": ("int32", -1, (5, 5), (12, 12)),
}


def _repo(path):
    import icechunk

    return icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))


def _layout(store, compressor=COMPRESSOR):
    group = zarr.open_group(store, mode="w")
    for name, (dtype, fill, chunks, shape) in LAYERS.items():
        group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, compressors=[compressor],
            fill_value=fill,
        )  # fmt: skip
    return group


def _writes(arrays):
    """Whole chunks (inner, edge, all-fill, -0.0 in a 0.0-filled array), a chunk of the fill
    value over one that had data, and a selection that is not one chunk."""
    rng = np.random.default_rng(5)
    out = []
    for name, (dtype, fill, _, _) in LAYERS.items():
        a = arrays[name]
        lead = (slice(8, 16),) if a.ndim == 3 else ()
        edge = (slice(16, 19),) if a.ndim == 3 else ()
        for sel in [
            (*lead, slice(0, 5), slice(5, 10)),
            (*lead, slice(10, 12), slice(0, 5)),
            (*edge, slice(5, 10), slice(10, 12)),
        ]:
            size = tuple(s.stop - s.start for s in sel)
            values = (rng.random(size) * 100).astype(dtype)
            if np.dtype(dtype).kind == "f":
                values[..., 0, :] = np.nan
            out.append((a, sel, values))
        fill_sel = (*lead, slice(5, 10), slice(5, 10))
        out.append((a, fill_sel, np.full([s.stop - s.start for s in fill_sel], fill, dtype)))
        if name == "zero":  # -0.0 is not the fill value 0.0: stored
            out.append((a, (slice(0, 5), slice(0, 5)), np.full((5, 5), -0.0, np.float32)))
    return out


def _stored(store) -> dict[str, bytes]:
    from zarr.core.sync import sync

    async def listing():
        return [k async for k in store.list()]

    keys = [k for k in sync(listing()) if "/c/" in k]
    return dict(zip(keys, [r.to_bytes() for r in chunkio.fetch(store, keys)], strict=True))


@pytest.mark.parametrize("compressor", [COMPRESSOR, ZstdCodec()])
def test_writes_store_what_zarr_stores(tmp_path, compressor):
    stores = {}
    for way in ("zarr", "direct"):
        repo = _repo(tmp_path / way)
        session = repo.writable_session("main")
        group = _layout(session.store, compressor)
        arrays = {name: group[name] for name in LAYERS}
        for a, sel, _ in _writes(arrays):  # data first where fill values are written later
            a[sel] = np.ones([s.stop - s.start for s in sel], a.dtype)
        session.commit("before")
        session = repo.writable_session("main")
        opened = chunkio.open_arrays(session.store, list(LAYERS), mode="r+")
        arrays = dict(zip(LAYERS, opened, strict=True))
        writes = _writes(arrays)
        if way == "zarr":
            for a, sel, values in writes:
                a[sel] = values
        else:
            chunkio.write_all(writes)
        session.commit("writes")
        stores[way] = _stored(repo.readonly_session("main").store)
    assert stores["direct"].keys() == stores["zarr"].keys()
    assert "cube/c/1/1/1" not in stores["zarr"]  # the fill-value chunk over data was deleted
    assert "zero/c/0/0" in stores["zarr"]  # -0.0 kept
    for k, raw in stores["zarr"].items():
        assert stores["direct"][k] == raw, k


def test_only_plain_layouts_and_whole_chunks_bypass_zarr(tmp_path):
    session = _repo(tmp_path / "r").writable_session("main")
    other = _layout(session.store)
    assert all(chunkio.plain(other[name]) for name in LAYERS)
    zstd = zarr.open_group(session.store, path="z", mode="w").create_array(
        "red", shape=(12, 12), chunks=(5, 5), dtype="float32", compressors=[ZstdCodec()]
    )
    assert not chunkio.plain(zstd)
    ones = np.ones((5, 5), np.float32)
    assert chunkio._whole_chunk(other["red"], (slice(0, 5), slice(5, 10)), ones) is not None
    assert chunkio._whole_chunk(zstd, (slice(0, 5), slice(5, 10)), ones) is None
    assert chunkio._whole_chunk(other["red"], (slice(1, 6), slice(5, 10)), ones) is None
    assert chunkio._whole_chunk(other["red"], (slice(0, 5), slice(5, 10)), ones[:4]) is None
    assert chunkio._whole_chunk(other["count"], (slice(0, 5), slice(5, 10)), ones) is None


def test_arrays_opened_from_their_metadata_equal_zarrs(tmp_path):
    repo = _repo(tmp_path / "r")
    session = repo.writable_session("main")
    group = _layout(session.store)
    group["red"][:] = np.arange(144, dtype=np.float32).reshape(12, 12)
    session.commit("one")
    store = repo.readonly_session("main").store
    for a in chunkio.open_arrays(store, list(LAYERS), mode="r"):
        b = zarr.open_array(store, path=a.path, mode="r")
        assert repr(a.metadata) == repr(b.metadata) and a.path == b.path  # NaN != NaN
        np.testing.assert_array_equal(a[:], b[:])
    with pytest.raises(FileNotFoundError):
        chunkio.open_arrays(store, ["missing"], mode="r")


def test_metadata_cache_serves_only_unchanged_snapshots(tmp_path):
    """Cached metadata is keyed by the snapshot a session shows unchanged: a second fork of the
    same snapshot opens from the cache what zarr would open; a session with changes (here the
    first fork, resized) is neither served nor cached; other stores are never cached."""
    repo = _repo(tmp_path / "r")
    session = repo.writable_session("main")
    _layout(session.store)
    session.commit("layout")
    writer = repo.writable_session("main")
    cache = chunkio.MetadataCache()
    first = writer.fork()
    (cube,) = chunkio.open_arrays(first.store, ["cube"], mode="r+", cache=cache)
    original = cube.metadata
    assert cache.get(writer.snapshot_id, "cube") is original
    chunkio.resize_all([cube], 25)
    assert chunkio.MetadataCache.snapshot(first.store) is None  # changed: not the snapshot's
    (changed,) = chunkio.open_arrays(first.store, ["cube"], mode="r+", cache=cache)
    assert changed.shape == (25, 12, 12)
    (again,) = chunkio.open_arrays(writer.fork().store, ["cube"], mode="r+", cache=cache)
    assert again.metadata is original and again.shape == (19, 12, 12)
    plain_store = zarr.storage.MemoryStore()
    _layout(plain_store)
    assert chunkio.MetadataCache.snapshot(plain_store) is None
    (mem,) = chunkio.open_arrays(plain_store, ["red"], mode="r", cache=cache)
    assert repr(mem.metadata) == repr(zarr.open_array(plain_store, path="red").metadata)
    assert len(cache._meta) == 1


@pytest.mark.parametrize("version", ["3.0.8", "3.1.5", "3.2.0", "4.0.0"])
def test_an_untested_zarr_is_refused_with_the_fix(version):
    from pipeline.products.chunkio import require_zarr

    with pytest.raises(ImportError, match=r"zarr >=3\.1\.6,<3\.2.*make install"):
        require_zarr(version)


def test_the_installed_zarr_is_in_the_tested_range():
    from pipeline.products.chunkio import require_zarr

    require_zarr()  # the constraints file pins one inside it


def test_whole_chunks_read_past_zarr_equal_zarrs_reads(tmp_path):
    """Inner, edge and absent (fill value) chunks of every dtype, read in one call, equal
    zarr's reads; a layout or region it does not read itself goes through zarr."""
    repo = _repo(tmp_path / "r")
    session = repo.writable_session("main")
    group = _layout(session.store)
    for a, sel, values in _writes({name: group[name] for name in LAYERS}):
        a[sel] = values
    zstd = group.create_array("zstd", shape=(12, 12), chunks=(5, 5), dtype="float32",
                              compressors=[ZstdCodec()], fill_value=np.nan)
    zstd[:] = np.arange(144, dtype=np.float32).reshape(12, 12)
    session.commit("data")
    store = repo.readonly_session("main").store
    names = ["red", "zero", "count", "source", "zstd"]
    arrays = chunkio.open_arrays(store, names, mode="r")
    for region in [(slice(0, 5), slice(5, 10)), (slice(10, 12), slice(0, 5)),
                   (slice(5, 10), slice(10, 12)), (slice(5, 10), slice(5, 10)),
                   (slice(0, 5), slice(0, 5)), (slice(1, 6), slice(0, 5))]:
        got = chunkio.read_chunks(arrays, region)
        for name, a, g in zip(names, arrays, got, strict=True):
            want = np.asarray(a[region])
            assert g.dtype == want.dtype and g.tobytes() == want.tobytes(), (name, region)
    assert not chunkio._whole(arrays[0], (slice(1, 6), slice(0, 5)))
    assert chunkio._whole(arrays[0], (slice(10, 12), slice(0, 5)))


# ------------------------------------------------------------- settle: a failed call's siblings


def _failed_gather_with_a_slow_sibling(seconds: float) -> threading.Event:
    """zarr-python's pattern (a node's metadata writes): ``asyncio.gather`` of store calls on
    zarr's loop, one failing at once (a full disk) while another is still in its thread; that
    one's own error is caught where zarr catches it (``set_if_not_exists``). Returns the event
    the slow call sets as it ends."""
    from zarr.core.sync import sync

    finished = threading.Event()

    def slow() -> None:
        time.sleep(seconds)
        finished.set()
        raise FileExistsError(17, "File exists")

    async def fails() -> None:
        raise OSError(28, "No space left on device")

    async def slow_write() -> None:
        with contextlib.suppress(FileExistsError):
            await asyncio.to_thread(slow)

    async def save() -> None:
        await asyncio.gather(fails(), slow_write())

    with pytest.raises(OSError, match="No space left"):
        sync(save())
    assert not finished.is_set()  # still running: what a process exiting now would cut off
    return finished


def _tasks_left() -> int:
    from zarr.core.sync import sync

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    return sync(count())


def test_settle_waits_for_the_calls_a_failed_one_left_running():
    finished = _failed_gather_with_a_slow_sibling(0.3)
    assert chunkio.settle() is True
    assert finished.is_set()
    assert _tasks_left() == 0


def test_settle_gives_up_after_its_timeout():
    finished = _failed_gather_with_a_slow_sibling(0.5)
    assert chunkio.settle(timeout_s=0.05) is False
    assert not finished.is_set()
    assert chunkio.settle() is True and finished.is_set()


def test_the_cli_settles_zarr_before_it_returns(tmp_path):
    """``aquila`` exits right after ``main`` returns; a call left in flight then would print an
    unretrieved error's traceback (CI saw it on a full disk), so main waits for it first."""
    from pipeline.cli.main import main

    finished = _failed_gather_with_a_slow_sibling(0.3)
    assert main(["validate", str(tmp_path / "missing.yaml")]) != 0
    assert finished.is_set()


def test_a_ctrl_c_while_the_cli_settles_ends_the_wait_quietly(monkeypatch):
    """A second Ctrl-C during the wait exits with the first one's line, not a traceback."""
    import importlib

    cli = importlib.import_module("pipeline.cli.main")  # the package exports main, the function

    def interrupted(timeout_s: float = 10.0) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(chunkio, "settle", interrupted)
    try:
        cli._settle_stores()
    except KeyboardInterrupt:  # caught here, or it would stop the whole test session
        pytest.fail("a Ctrl-C during the settle escaped main: a traceback at exit")


def test_run_all_lets_every_call_end_before_it_raises_the_first_failure():
    """A layout's nodes are created together (run_all): when one fails (a full disk), the
    others must have ended before the error reaches the caller, who then removes the build
    directory (a write still in flight would recreate files in it). Without
    ``return_exceptions`` gather returns at the first error with the slow call still running."""
    ended: list[str] = []

    async def slow(name: str, seconds: float) -> str:
        await asyncio.sleep(seconds)
        ended.append(name)
        return name

    async def fails(message: str) -> None:
        await asyncio.sleep(0.01)
        raise OSError(28, message)

    with pytest.raises(OSError, match="first"):
        chunkio.run_all([slow("a", 0.3), fails("first"), fails("second"), slow("b", 0.2)])
    assert sorted(ended) == ["a", "b"]
    assert _tasks_left() == 0
    assert chunkio.run_all([slow("c", 0.0), slow("d", 0.01)]) == ["c", "d"]  # in order


def test_write_all_lets_every_write_end_before_it_raises_a_failed_one(tmp_path, monkeypatch):
    """CI: a full file-size limit failed one chunk write of a --direct run while another was
    still being written; the run removed its build directory and the late write recreated a
    folder in it (left behind). write_all must return only when no write is in flight."""
    store = zarr.storage.LocalStore(tmp_path / "s.zarr")
    a = zarr.create_array(store, name="a", shape=(4, 4), chunks=(2, 2), dtype="float32",
                          compressors=COMPRESSOR, fill_value=np.nan)
    real_set = type(store).set
    ended: list[str] = []

    async def set_(self, key, value, *args, **kwargs):
        if key.endswith("c/0/0"):
            raise OSError(27, "File too large")
        await asyncio.sleep(0.3)
        await real_set(self, key, value, *args, **kwargs)
        ended.append(key)

    monkeypatch.setattr(type(store), "set", set_)
    values = np.ones((2, 2), np.float32)
    with pytest.raises(OSError, match="File too large"):
        chunkio.write_all([(a, (slice(0, 2), slice(0, 2)), values),
                           (a, (slice(2, 4), slice(2, 4)), values)])
    assert ended == ["a/c/1/1"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("limit", ["count", "bytes"])
def test_write_all_holds_few_encoded_chunks_per_thread(tmp_path, monkeypatch, threads, limit):
    """Memory: a chunk task's mosaic writes (44 arrays at 2048 px) were all encoded before the
    first was stored, ~0.2 GiB of Blosc output at once. Each encoded chunk must go to its
    store as soon as it is encoded: counted from the encode's end to the store call's end, at
    most IN_FLIGHT stored and one being encoded per thread, or, where IN_FLIGHT_BYTES is
    reached, one being stored and one being encoded."""
    if limit == "bytes":
        monkeypatch.setattr(chunkio, "IN_FLIGHT_BYTES", 1)
    per_lane = 2 if limit == "bytes" else chunkio.IN_FLIGHT + 1
    store = zarr.storage.LocalStore(tmp_path / "s.zarr")
    a = zarr.create_array(store, name="a", shape=(4, 80), chunks=(2, 2), dtype="float32",
                          compressors=COMPRESSOR, fill_value=np.nan)
    lock, live, most = threading.Lock(), [0], [0]
    real_chunk, real_set = chunkio._whole_chunk, type(store).set

    def counted_chunk(*args):
        out = real_chunk(*args)
        with lock:
            live[0] += 1
            most[0] = max(most[0], live[0])
        return out

    async def slow_set(self, key, value, *args, **kwargs):
        await asyncio.sleep(0.02)
        await real_set(self, key, value, *args, **kwargs)
        with lock:
            live[0] -= 1

    monkeypatch.setattr(chunkio, "_whole_chunk", counted_chunk)
    monkeypatch.setattr(type(store), "set", slow_set)
    rng = np.random.default_rng(3)
    writes = [(a, (slice(r, r + 2), slice(c, c + 2)), rng.random((2, 2), np.float32))
              for r in (0, 2) for c in range(0, 80, 2)]
    chunkio.write_all(writes, threads=threads)
    assert live[0] == 0 and 2 <= most[0] <= per_lane * threads, most[0]
    for _, sel, values in writes:  # and every chunk was stored
        np.testing.assert_array_equal(a[sel], values)


def test_writes_encoded_and_downsampled_on_several_threads_are_the_same_bytes(tmp_path):
    """A chunk task on a worker with idle threads encodes its whole chunks and downsamples its
    overview levels on them (ChunkWriter with spare_threads()): the stores are byte for byte
    those of the same writes on one thread, every level included."""
    from pathlib import Path

    from pipeline.plan.grid import TargetGrid
    from pipeline.products.overviews import Pyramid
    from pipeline.products.store import create_mosaic

    grid = TargetGrid("EPSG:32632", (10.0, 0.0, 500000.0, 0.0, -10.0, 5006000.0), (600, 520), 256)
    rng = np.random.default_rng(7)
    region = (slice(256, 512), slice(0, 256))
    values = {b: rng.uniform(0, 1, (256, 256)).astype(np.float32) for b in ("red", "nir")}
    values["red"][rng.random((256, 256)) < 0.3] = np.nan
    count = rng.integers(0, 9, (256, 256)).astype(np.uint16)
    source = rng.integers(-1, 30, (256, 256)).astype(np.int32)
    stores = []
    for threads in (1, 3):
        store = tmp_path / f"t{threads}.zarr"
        create_mosaic(store, grid, ["red", "nir"], method="latest", layers=["source"], attrs={})
        group = zarr.open_group(str(store), mode="r+")
        writes = [(group[name], region, v) for name, v in
                  [*values.items(), ("count", count), ("source", source)]]
        pyramid = Pyramid()
        levels = pyramid(writes, threads=threads)
        assert len(levels) >= len(writes)  # this grid has overview levels
        chunkio.write_all([*writes, *levels], threads=threads)
        stores.append(store)
    files = [sorted(p.relative_to(s) for p in Path(s).rglob("*") if p.is_file()) for s in stores]
    assert files[0] == files[1] and any("c/1/0" in str(f) for f in files[0])
    for f in files[0]:
        assert (stores[0] / f).read_bytes() == (stores[1] / f).read_bytes(), f


def test_only_a_runs_local_writer_takes_the_workers_idle_threads(monkeypatch):
    """ChunkWriter encodes on idle threads only when asked (idle_threads=True: a run's
    process_chunk and fused blocks, local Zarr stores); the Icechunk paths (nightly, forks)
    build it without, and write from the task's thread alone whatever the worker has idle."""
    import inspect

    import pipeline.engine.chunk as chunk_mod
    import pipeline.engine.fork_chunk as fork_mod
    import pipeline.engine.night_chunk as night_mod
    import pipeline.engine.writer as writer_mod

    seen: list[int] = []
    monkeypatch.setattr(writer_mod, "spare_threads", lambda: 3)
    monkeypatch.setattr(writer_mod, "write_all", lambda writes, *, threads: seen.append(threads))
    values = np.zeros((1, 2, 2), np.float32)
    for idle, want in ((False, 1), (True, 3)):
        writer_mod.ChunkWriter([object()], (slice(0, 2), slice(0, 2)), n_slots=1,
                               idle_threads=idle)(0, values)
        assert seen[-1] == want
    assert inspect.getsource(chunk_mod.process_chunk).count("idle_threads=True") == 1
    assert inspect.getsource(chunk_mod.process_block).count("idle_threads=True") == 1
    assert "idle_threads" not in inspect.getsource(night_mod)
    assert "idle_threads" not in inspect.getsource(fork_mod)
