"""Whole chunks in and out of a zarr store, past zarr-python's per-chunk machinery.

A nightly chunk task opens some twenty arrays, reads a chunk's committed history back and writes
a dozen whole chunks. Through zarr-python each chunk costs ~1 ms of machinery beyond its encode
(a 200 × 200 float32 chunk encodes in ~0.1 ms; Icechunk stores one in ~0.4 ms), and opening an
array ~0.5 ms. When an array has exactly the layout this project writes (little-endian numbers,
``BytesCodec`` then Blosc, default ``c/`` chunk keys: :func:`plain`), whole chunks are encoded and
decoded here with numcodecs, byte for byte what zarr would store (tested), and moved in
concurrent store calls (reads in one call; writes as they are encoded, a few in flight per
thread: :func:`write_all`); any other layout, or a selection that is not one whole chunk, goes
through zarr.

Measured on the benchmark's store, one chunk task (4 cube blocks and 11 mosaic chunks written,
23 arrays opened), in-process: writes 25-35 → 11 ms, opens 15 → 3 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import zarr
from packaging.version import Version

T = TypeVar("T")
R = TypeVar("R")

Write = tuple[Any, tuple, np.ndarray]  # (zarr array, selection, values)

# The zarr-python internals used here (zarr.core.buffer, zarr.core.sync, parse_array_metadata,
# AsyncArray.setitem/resize) are private API; they were checked against these versions, which
# pyproject.toml also bounds. Another version fails at import with the fix, not mid-run.
ZARR_TESTED = (Version("3.1.6"), Version("3.2"))


def require_zarr(version: str | None = None) -> None:
    """Refuse a zarr-python outside :data:`ZARR_TESTED`, saying how to install the tested set."""
    found = Version(version or zarr.__version__)
    low, high = ZARR_TESTED
    if not low <= found < high:
        raise ImportError(
            f"Aquila's whole-chunk I/O (pipeline/products/chunkio.py) uses zarr-python internals "
            f"checked with zarr >={low},<{high}, and this environment has zarr {found}. Install "
            "the tested set: `make install` (pip install -c constraints.txt -e .)"
        )


require_zarr()


def plain(array) -> bool:
    """Whether the array has the layout read and written here."""
    from zarr.codecs import BloscCodec, BytesCodec

    meta = array.metadata
    try:
        codecs = meta.codecs
        encoding = meta.chunk_key_encoding
    except AttributeError:  # zarr v2 metadata
        return False
    dtype = np.dtype(array.dtype)
    return (
        len(codecs) == 2
        and isinstance(codecs[0], BytesCodec)
        and (dtype.itemsize == 1 or _endian(codecs[0]) == "little")
        and isinstance(codecs[1], BloscCodec)
        and getattr(encoding, "name", "") == "default"
        and getattr(encoding, "separator", "") == "/"
        and dtype.kind in "fiu"
        and len(array.chunks) >= 1
        and not getattr(meta, "storage_transformers", ())
    )


def _endian(codec) -> str:
    return str(getattr(codec.endian, "value", codec.endian))


def key(array, coords: Sequence[int]) -> str:
    """The store key of chunk ``coords`` of a :func:`plain` array."""
    return "/".join([array.path, "c", *(str(int(c)) for c in coords)])


def blosc(array):
    """The numcodecs Blosc of a :func:`plain` array, configured as zarr configures it."""
    import numcodecs

    c = array.metadata.codecs[1]
    shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[str(c.shuffle.value)]
    return numcodecs.Blosc(
        cname=str(c.cname.value),
        clevel=int(c.clevel),
        shuffle=shuffle,
        blocksize=int(c.blocksize),
        typesize=int(c.typesize),
    )


def decode(array, raw) -> np.ndarray | None:
    """A stored chunk of a :func:`plain` array (None: absent, i.e. the fill value)."""
    if raw is None:
        return None
    shape = tuple(int(v) for v in array.chunks)
    data = blosc(array).decode(raw.to_bytes())
    return np.frombuffer(data, dtype=np.dtype(array.dtype).newbyteorder("<")).reshape(shape)


def fetch(store, keys: Sequence[str]) -> list:
    """Several keys of one store in one concurrent call (None where absent)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    async def get_all():
        proto = default_buffer_prototype()
        return await asyncio.gather(*(store.get(k, prototype=proto) for k in keys))

    return list(sync(get_all()))


def read_chunks(arrays: Sequence[Any], region: tuple[slice, ...]) -> list[np.ndarray]:
    """Each array's values on ``region``, one whole chunk of arrays of one store (a nightly
    mosaic chunk's bands and layers): the :func:`plain` ones fetched in one concurrent call and
    decoded here (an absent chunk is the fill value), the others read by zarr. Measured: 22
    layers of a 200 px chunk through ``Array.__getitem__`` cost ~45 ms, mostly hand-offs to
    zarr's event loop."""
    shape = tuple(r.stop - r.start for r in region)
    fast = [plain(a) and _whole(a, region) for a in arrays]
    keys = [key(a, [r.start // c for r, c in zip(region, a.chunks, strict=True)])
            for a, f in zip(arrays, fast, strict=True) if f]
    raws = iter(fetch(arrays[0].store, keys) if keys else ())
    out = []
    for a, f in zip(arrays, fast, strict=True):
        if not f:
            out.append(np.asarray(a[region]))
            continue
        data = decode(a, next(raws))
        if data is None:
            out.append(np.full(shape, a.metadata.fill_value, dtype=a.dtype))
        else:
            out.append(data[tuple(slice(0, n) for n in shape)])
    return out


def _whole(array, region: tuple[slice, ...]) -> bool:
    """``region`` is one chunk of ``array``, cut short only by the array's edge."""
    return len(region) == len(array.chunks) and all(
        r.start % c == 0 and r.stop == min(r.start + c, n)
        for r, c, n in zip(region, array.chunks, array.shape, strict=True)
    )


class MetadataCache:
    """Parsed array metadata by (snapshot, path), for stores whose content is exactly one
    committed snapshot's: an Icechunk session or fork without uncommitted changes. Each
    nightly chunk task opens the same ~25 arrays of the same snapshot as every other task of
    the night, and fetching and parsing a ``zarr.json`` costs ~1 ms (more on a busy worker).
    Other stores (and sessions with changes) are never cached. Arrays opened through the cache
    share their metadata object: change their shape (zarr replaces the metadata), never their
    attributes in place (zarr updates ``metadata.attributes`` in place: it would reach every
    later task of the worker; nightly tasks write no attributes)."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._meta: dict[tuple[str, str], Any] = {}

    @staticmethod
    def snapshot(store) -> str | None:
        """The snapshot a store shows unchanged, or None (not an Icechunk store, or changed)."""
        try:
            session = store.session
            if session.has_uncommitted_changes:
                return None
            return str(session.snapshot_id)
        except AttributeError:
            return None

    def get(self, snapshot: str, path: str) -> Any:
        return self._meta.get((snapshot, path))

    def put(self, snapshot: str, path: str, metadata: Any) -> None:
        if len(self._meta) >= self.size:
            self._meta.clear()
        self._meta[(snapshot, path)] = metadata


def open_arrays(
    store, paths: Sequence[str], *, mode: str, cache: MetadataCache | None = None
) -> list[Any]:
    """Several arrays of a store: their ``zarr.json`` fetched in one concurrent call and parsed
    here (zarr's own open reads each node's metadata in turn: ~0.5 ms an array), or taken from
    ``cache``. A path that is not a zarr v3 array here is opened by zarr (which raises as
    usual)."""
    import zarr
    from zarr.core.array import parse_array_metadata
    from zarr.storage import StorePath

    snapshot = cache.snapshot(store) if cache is not None else None
    known = {p: cache.get(snapshot, p) for p in paths} if cache and snapshot else {}
    todo = [p for p in paths if known.get(p) is None]
    raws = dict(zip(todo, fetch(store, [f"{p}/zarr.json" for p in todo]), strict=True))
    out = []
    for path in paths:
        meta = known.get(path)
        if meta is None:
            raw = raws[path]
            doc = json.loads(raw.to_bytes()) if raw is not None else {}
            if doc.get("zarr_format") != 3 or doc.get("node_type") != "array":
                out.append(zarr.open_array(store, path=path, mode=mode))
                continue
            meta = parse_array_metadata(doc)
            if cache is not None and snapshot is not None:
                cache.put(snapshot, path, meta)
        out.append(zarr.Array(zarr.AsyncArray(metadata=meta, store_path=StorePath(store, path))))
    return out


def resize_all(arrays: Sequence[Any], n: int) -> None:
    """Set the first dimension of several arrays to ``n`` in one call (:func:`run_all`)."""
    run_all([a.async_array.resize((n, *a.shape[1:])) for a in arrays])


def run_all(calls: Sequence[Any]) -> list[Any]:
    """Await the coroutines ``calls`` together on zarr's event loop (zarr's asynchronous API,
    from synchronous code): their results in order. Every call ends before this returns, the
    failed ones too (no write is left in flight behind an error, e.g. a full disk); the first
    failure, in order, is then raised."""
    from zarr.core.sync import sync

    async def together() -> list[Any]:
        return await asyncio.gather(*calls, return_exceptions=True)

    results = sync(together())
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def write_all(writes: Sequence[Write], *, threads: int = 1) -> None:
    """Write several selections (whole chunks, usually) of several arrays in one call.

    Whole chunks are encoded here and each is handed to its store as soon as it is encoded, so
    a thread holds a few encoded chunks at a time (:data:`IN_FLIGHT`): a 2048 px chunk task's
    44 mosaic arrays, encoded all before any was stored, held ~0.2 GiB of Blosc output at once.
    Other selections go through zarr afterwards, together.

    ``threads``: how many threads encode the whole chunks (Blosc releases the GIL; on a thread
    other than the main one it compresses on that thread alone), each taking every n-th write.
    A run's chunk task passes its worker's idle threads: the last task of a run, or a run of
    one big chunk, then encodes its mosaic layers and their overview levels on every core.

    Every store call ends before a failure is raised (no write is left in flight behind an
    error, e.g. a full disk); a local store's folder is checked before each chunk is stored
    (:func:`require_roots`, in the lanes: a gone folder stops every lane at its first write)."""
    if not writes:
        return
    n = max(1, min(threads, len(writes)))
    lanes = on_threads(_write_lane, [writes[i::n] for i in range(n)], n, "aquila-encode")
    through_zarr = [w for lane in lanes for w in lane]
    if through_zarr:
        require_roots(w[0].store for w in through_zarr)
        run_all([a.async_array.setitem(sel, v) for a, sel, v in through_zarr])


#: Store calls a write lane keeps in flight, at most: this many, and while they hold more than
#: :data:`IN_FLIGHT_BYTES` of encoded chunks together, only the newest (small chunks, the 512 px
#: bench job's 704 a run, are stored several at a time; a 2048 px layer's 12-16 MiB one by one).
IN_FLIGHT = 8
IN_FLIGHT_BYTES = 8 * 2**20


def _write_lane(writes: Sequence[Write]) -> list[Write]:
    """Encode and store each whole-chunk write in turn, the next ones encoded while earlier ones
    are stored on zarr's event loop (:data:`IN_FLIGHT`); the writes that are not one whole
    chunk, returned."""
    from concurrent.futures import Future
    from concurrent.futures import wait as wait_all

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import _get_loop

    proto, loop = default_buffer_prototype(), _get_loop()
    rest: list[Write] = []
    stored: list[tuple[Future, int]] = []  # (the store call, its encoded bytes)
    held = 0
    try:
        for array, sel, values in writes:
            chunk = _whole_chunk(array, sel, values)
            if chunk is None:
                rest.append((array, sel, values))
                continue
            k, encoded = chunk
            require_roots([array.store])
            store = array.store
            size = len(encoded) if encoded is not None else 0
            call = store.delete(k) if encoded is None else store.set(
                k, proto.buffer.from_bytes(encoded))  # None: the fill value, deleted as zarr does
            del encoded, chunk
            stored.append((asyncio.run_coroutine_threadsafe(call, loop), size))
            held += size
            while len(stored) > IN_FLIGHT or (len(stored) > 1 and held > IN_FLIGHT_BYTES):
                done, size = stored.pop(0)
                held -= size
                done.result()
    finally:
        wait_all([f for f, _ in stored])
    for f, _ in stored:
        f.result()
    return rest


def require_roots(stores: Iterable[Any]) -> None:
    """Raise :class:`FileNotFoundError` if the folder of a local store (a ``LocalStore``) is
    gone: a chunk task that outlives its run (cancelled, or failed and cleaned up, while the task
    computed) must not write, because the store's ``set`` would create the folders again beside
    the product. Checked just before the writes; a run's build folder is renamed away before
    it is removed (:meth:`pipeline.products.publish.Publication.discard`), so the window is the
    writes' own milliseconds, not the task's seconds."""
    from zarr.storage import LocalStore

    roots = {store.root for store in stores if isinstance(store, LocalStore)}
    for root in roots:
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"the store folder {root} is gone (its run was cancelled or failed while this "
                "task computed): nothing written; run the workflow again")


def on_threads(fn: Callable[[T], R], items: Sequence[T], threads: int, name: str) -> list[R]:
    """``[fn(item) for item in items]``, on up to ``threads`` threads of a pool named ``name``
    (this thread alone for one); every call ends before this returns or raises the first
    failure, in order."""
    threads = min(threads, len(items))
    if threads <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        return list(pool.map(fn, items))


def _whole_chunk(array, sel: tuple, values: np.ndarray) -> tuple[str, bytes | None] | None:
    """(key, encoded bytes or None for a fill-value chunk) when ``sel`` is exactly one chunk of
    a :func:`plain` array and ``values`` its (cropped) content in the array's dtype; else None."""
    shape, chunks = tuple(array.shape), tuple(int(c) for c in array.chunks)
    if (
        len(sel) != len(shape)
        or not isinstance(values, np.ndarray)
        or values.dtype != array.dtype
        or not plain(array)
    ):
        return None
    coords, extent = [], []
    for s, n, c in zip(sel, shape, chunks, strict=True):
        if not isinstance(s, slice) or s.step not in (None, 1):
            return None
        start = 0 if s.start is None else s.start
        stop = n if s.stop is None else s.stop
        if start % c or stop != min(start + c, n):
            return None
        coords.append(start // c)
        extent.append(stop - start)
    if values.shape != tuple(extent):
        return None
    fill = array.metadata.fill_value
    if tuple(extent) == chunks:
        data = np.ascontiguousarray(values, dtype=np.dtype(array.dtype).newbyteorder("<"))
    else:  # an edge chunk: zarr stores it whole, the part beyond the array as the fill value
        data = np.full(chunks, fill, dtype=np.dtype(array.dtype).newbyteorder("<"))
        data[tuple(slice(0, e) for e in extent)] = values
    if not array.async_array.config.write_empty_chunks and _all_fill(data, fill):
        return key(array, coords), None
    return key(array, coords), blosc(array).encode(data)


def _all_fill(data: np.ndarray, fill: Any) -> bool:
    """zarr's test (``NDBuffer.all_equal``): NaN equals NaN; a 0.0 fill is told from -0.0."""
    f = np.asarray(fill, data.dtype)
    if data.dtype.kind == "f" and f == 0:
        view = f"u{data.dtype.itemsize}"
        return bool((data.view(view) == f.view(view)).all())
    if data.dtype.kind == "f" and np.isnan(f):
        return bool(np.isnan(data).all())
    return bool((data == f).all())


_SETTLING = "aquila-settle"


def settle(timeout_s: float = 10.0) -> bool:
    """Wait until zarr's event loop has no store call left in flight (at most ``timeout_s``);
    whether it got there. For a process about to exit after a store call failed.

    A failed store call leaves its siblings running: zarr-python gathers a node's metadata writes
    with ``asyncio.gather``, which returns the first error at once (:func:`run_all` and
    :func:`write_all` wait for every call of theirs). A process that exits right after, as
    ``aquila run`` does on a full disk, stops zarr's loop (its ``atexit`` clean-up) between a
    sibling's thread finishing and its task taking the result, and asyncio then prints "Future
    exception was never retrieved" with a traceback for an error that was handled or already
    reported (seen in CI: the ``FileExistsError`` zarr's exclusive ``zarr.json`` writes raise
    and catch themselves). Waiting here lets every such
    task end where zarr handles its errors. Nothing is waited for when no loop was started."""
    from zarr.core import sync as zsync

    loop = zsync.loop[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return True

    async def drain() -> None:
        me = asyncio.current_task()
        assert me is not None
        me.set_name(_SETTLING)  # one that timed out still runs: the next must not wait for it
        while rest := [t for t in asyncio.all_tasks() if t.get_name() != _SETTLING]:
            await asyncio.wait(rest)

    try:
        zsync.sync(drain(), timeout=timeout_s)
    except TimeoutError:
        return False
    return True
