"""How many rasters a reader thread keeps open: local files few (GDAL keeps buffers per open
dataset; reopening a local file is cheap), URLs many (a reopen costs requests)."""

from __future__ import annotations

import os

import numpy as np
import psutil
import rasterio

from pipeline.io.reader import RasterReader, ReaderSettings
from tests.asset_server import serve
from tests.test_object_store_in import write_cog


def _open_tifs(folder) -> set[str]:
    """The .tif files under ``folder`` this process has open (by its file descriptors)."""
    prefix = os.path.realpath(folder)
    return {f.path for f in psutil.Process().open_files()
            if f.path.startswith(prefix) and f.path.endswith(".tif")}


def test_a_thread_keeps_at_most_max_open_local_files_open_and_reads_every_one(tmp_path):
    data = {}
    for k in range(5):
        data[k] = write_cog(tmp_path / f"s{k}.tif", seed=k)
    reader = RasterReader(ReaderSettings(max_open_local=2))
    for _ in range(2):  # the second pass reopens what was closed
        for k in range(5):
            got = reader.read(str(tmp_path / f"s{k}.tif"), [1, 2], (5, 7, 40, 30))
            np.testing.assert_array_equal(got, data[k][:, 5:45, 7:37])
            assert len(_open_tifs(tmp_path)) <= 2
    # the two most recently used stay open
    assert _open_tifs(tmp_path) == {os.path.realpath(tmp_path / f"s{k}.tif") for k in (3, 4)}
    reader.close()
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
