"""How many rasters a reader keeps open: local files up to ``max_open_local`` per process,
shared by its threads one at a time (GDAL keeps ~0.31 MiB per open dataset; a reopen costs
1-4 ms and a first read), URLs many per thread (a reopen costs requests)."""

from __future__ import annotations

import os

import numpy as np
import psutil
import pytest
import rasterio

from pipeline.io.reader import OpenFiles, RasterReader
from pipeline.io.settings import OPEN_FILES, OPEN_FILES_BIG_CHUNKS, ReaderSettings, open_files_for
from tests.asset_server import serve
from tests.test_object_store_in import write_cog


def _open_tifs(folder) -> set[str]:
    """The .tif files under ``folder`` this process has open (by its file descriptors)."""
    prefix = os.path.realpath(folder)
    return {f.path for f in psutil.Process().open_files()
            if f.path.startswith(prefix) and f.path.endswith(".tif")}


def test_a_reader_keeps_at_most_max_open_local_files_open_and_reads_every_one(tmp_path):
    data = {}
    for k in range(5):
        data[k] = write_cog(tmp_path / f"s{k}.tif", seed=k)
    reader = RasterReader(ReaderSettings(max_open_local=2))
    for _ in range(2):  # the second pass reopens what was closed
        for k in range(5):
            got = reader.read(str(tmp_path / f"s{k}.tif"), [1, 2], (5, 7, 40, 30))
            np.testing.assert_array_equal(got, data[k][:, 5:45, 7:37])
            assert len(_open_tifs(tmp_path)) <= 2
    # the first two kept stay open: chunk after chunk reads the files in the same order, and
    # keeping the most recent ones instead would never serve a file again
    assert _open_tifs(tmp_path) == {os.path.realpath(tmp_path / f"s{k}.tif") for k in (0, 1)}
    reader.close()
    assert not _open_tifs(tmp_path)


def test_a_file_kept_open_is_not_opened_again(tmp_path, monkeypatch):
    write_cog(tmp_path / "a.tif", seed=1)
    reader = RasterReader(ReaderSettings(max_open_local=4))
    opened: list[str] = []
    real = reader._open_local
    monkeypatch.setattr(reader, "_open_local", lambda href: opened.append(href) or real(href))
    for _ in range(3):
        reader.read(str(tmp_path / "a.tif"), [1], (0, 0, 16, 16))
    assert opened == [str(tmp_path / "a.tif")]
    reader.close()


@pytest.fixture
def closed(monkeypatch) -> list[object]:
    """The datasets OpenFiles closes (stand-ins: any object)."""
    import pipeline.io.reader as reader_module

    out: list[object] = []
    monkeypatch.setattr(reader_module, "_close_all", out.extend)
    return out


def test_threads_never_share_a_dataset_at_once_and_keep_one_per_file(closed):
    """Two threads reading the same file at once each read their own dataset; afterwards one
    is kept, the other closed."""
    files = OpenFiles(cap=8)
    first, second = object(), object()
    assert files.take("f") is None  # thread 1 opens its own
    assert files.take("f") is None  # thread 2 too: f is not idle
    files.give("f", first)
    files.give("f", second)  # one idle dataset per file: this one is closed
    assert closed == [second]
    assert files.take("f") is first
    assert files.take("f") is None  # taken: no other thread gets it meanwhile
    files.give("f", first)
    files.drop("f")  # a failed read: the next one opens afresh
    assert closed == [second, first] and files.take("f") is None


def test_a_full_pool_keeps_what_it_holds_and_closes_what_comes_back(closed):
    files = OpenFiles(cap=2)
    handles = {k: object() for k in "abc"}
    for k in "abc":
        files.give(k, handles[k])
    assert files.hrefs() == ["a", "b"] and closed == [handles["c"]]
    files.clear()
    assert files.hrefs() == [] and closed == [handles[k] for k in "cab"]


def test_small_chunks_keep_many_files_open_and_chunks_read_in_regions_few():
    assert open_files_for(512, 1024) == open_files_for(1024, 1024) == OPEN_FILES
    assert open_files_for(2048, 1024) == OPEN_FILES_BIG_CHUNKS < OPEN_FILES


def test_a_new_run_on_a_worker_frees_the_files_older_runs_keep_open(tmp_path):
    from pipeline.engine import executor

    write_cog(tmp_path / "a.tif", seed=1)
    old = executor.reader_for(ReaderSettings(max_open_local=4, session="run-1"))
    try:
        old.read(str(tmp_path / "a.tif"), [1], (0, 0, 16, 16))
        assert len(_open_tifs(tmp_path)) == 1
        new = executor.reader_for(ReaderSettings(max_open_local=4, session="run-2"))
        assert not _open_tifs(tmp_path)  # run-1's idle file closed
        new.read(str(tmp_path / "a.tif"), [1], (0, 0, 16, 16))
        assert len(_open_tifs(tmp_path)) == 1
    finally:
        for settings in [s for s in executor._READERS if s.session in ("run-1", "run-2")]:
            executor._READERS.pop(settings).close()
    assert not _open_tifs(tmp_path)


def test_urls_stay_open_beyond_the_local_cap(tmp_path):
    for k in range(3):
        write_cog(tmp_path / f"u{k}.tif", seed=k)
    with rasterio.open(tmp_path / "u0.tif") as ds:
        first = ds.read([1], window=((0, 32), (0, 32)))
    with serve(tmp_path) as server:
        reader = RasterReader(ReaderSettings(max_open_local=1))
        urls = [f"{server.url}/u{k}.tif" for k in range(3)]
        for url in urls:
            reader.read(url, [1], (0, 0, 32, 32))
        heads = [r for r in server.requests if r[0] == "HEAD"]
        got = reader.read(urls[0], [1], (0, 0, 32, 32))  # still open: no new HEAD
        np.testing.assert_array_equal(got, first)
        assert [r for r in server.requests if r[0] == "HEAD"] == heads
        reader.close()
