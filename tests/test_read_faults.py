"""Transient or permanent: the reader against a loopback server that injects faults.

GDAL reads real COGs over HTTP range requests from :mod:`tests.asset_server`; each test compares
the pixels with a local read of the same file and counts what the server answered.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import rasterio

from pipeline.errors import ReadError
from pipeline.io.reader import RasterReader, ReaderSettings
from pipeline.io.retry import RetryPolicy
from tests.asset_server import serve

FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)


@pytest.fixture()
def served(tiny_catalog):
    with serve(tiny_catalog.root) as server:
        yield server, tiny_catalog.root


def _asset(root, n=0, name="B02.tif"):
    path = sorted(root.glob(f"north/*/{name}"))[n]
    return path, "/" + path.relative_to(root).as_posix()


def _reader(**kw) -> RasterReader:
    return RasterReader(ReaderSettings(retry=FAST, http_timeout_s=1, **kw))


def _full(path):
    with rasterio.open(path) as ds:
        return ds.read([1]), (0, 0, ds.height, ds.width)


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(attempts=9, base_s=0.5, cap_s=20.0)
    assert [policy.ceiling(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 20, 20]
    rng = random.Random(7)
    for n in range(1, 9):
        waits = [policy.delay(n, rng) for _ in range(200)]
        assert all(0 <= w <= policy.ceiling(n) for w in waits)
        assert len(set(waits)) == 200, "jittered: no two workers wait alike"
        assert max(waits) > 0.8 * policy.ceiling(n)  # the whole range is used


def test_503_503_then_200_is_read_after_two_retries(served):
    server, root = served
    path, rel = _asset(root)
    expected, window = _full(path)
    server.script[rel] = [503, 503]
    reader = _reader()
    got = reader.read(server.url + rel, [1], window)
    np.testing.assert_array_equal(got, expected)
    assert reader.take_retries() == {server.url + rel: 2}
    assert server.answered(rel)[:3] == [503, 503, 200]


def test_a_timeout_is_transient(served):
    server, root = served
    path, rel = _asset(root, 1)
    expected, window = _full(path)
    server.script[rel] = ["timeout"]
    server.stall_s = 1.5
    reader = _reader()
    np.testing.assert_array_equal(reader.read(server.url + rel, [1], window), expected)
    assert reader.take_retries() == {server.url + rel: 1}


@pytest.mark.parametrize(("status", "reason"), [(404, "asset_not_found"), (403, "asset_forbidden")])
def test_404_and_403_fail_after_one_attempt_and_are_remembered(served, status, reason):
    server, root = served
    path, rel = _asset(root, 0, "B03.tif")
    server.always[rel] = status
    reader = _reader()
    for _ in range(3):  # other chunks of the same scene do not ask again
        with pytest.raises(ReadError) as err:
            reader.read(server.url + rel, [1], (0, 0, 16, 16))
        assert err.value.reason == reason and err.value.attempts == 1
    assert server.answered(rel) == [status]
    assert reader.take_retries() == {}


def test_a_truncated_cog_is_corrupt_after_one_attempt(served):
    server, root = served
    path, rel = _asset(root, 0, "B04.tif")
    server.truncate[rel] = path.stat().st_size * 2 // 3
    _, window = _full(path)
    reader = _reader()
    with pytest.raises(ReadError) as err:
        reader.read(server.url + rel, [1], window)
    assert err.value.reason == "asset_corrupt" and err.value.attempts == 1
    assert "truncated" in err.value.message
    assert reader.take_retries() == {}


def test_a_server_failing_mid_read_is_retried_on_a_fresh_open(served):
    server, root = served
    path, rel = _asset(root, 1, "B08.tif")
    expected, window = _full(path)
    reader = _reader()
    reader.dataset(server.url + rel)  # open (header read) while the server is healthy
    server.always[rel] = 503  # then it fails every request of the window read
    reader._sleep = lambda seconds: server.always.pop(rel, None)  # and recovers while we wait
    np.testing.assert_array_equal(reader.read(server.url + rel, [1], window), expected)
    assert reader.take_retries() == {server.url + rel: 1}
    assert 503 in server.answered(rel)


def test_retries_exhausted_is_a_transient_failure_with_its_attempts(served):
    server, root = served
    _, rel = _asset(root, 1, "B03.tif")
    server.always[rel] = 503
    reader = _reader()
    with pytest.raises(ReadError) as err:
        reader.read(server.url + rel, [1], (0, 0, 16, 16))
    assert err.value.reason == "asset_unavailable" and err.value.attempts == FAST.attempts
    assert server.answered(rel) == [503] * FAST.attempts


def test_ctrl_c_inside_gdals_read_callback_is_an_interruption_not_a_corrupt_asset(served,
                                                                                 monkeypatch):
    """A KeyboardInterrupt raised while GDAL is inside the URL's read callback (a terminal's
    Ctrl-C lands there when reads are slow; seen once in CI as a "partial run" with the scene
    judged asset_corrupt) cannot pass through GDAL, which sees a failed open: the reader raises
    it again instead of judging the asset corrupt and the run going on without the scene."""
    from pipeline.io import remote

    server, root = served
    path, rel = _asset(root)
    _, window = _full(path)
    reader = _reader()

    def interrupted(self, offset, size):
        raise KeyboardInterrupt

    monkeypatch.setattr(remote.RemoteAsset, "read_at", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reader.read(server.url + rel, [1], window)
    assert server.url + rel not in reader.failed()


def test_a_scene_failing_after_its_bands_were_gathered_leaves_no_value_in_its_slot(
        catalog_copy, tiny_catalog, tmp_path):
    """A slot's first scene is gathered straight into the slot's plane; when its quality asset
    then fails to read, the scene is a failure and the plane must hold none of its values:
    the mosaic is the one of the chunk without that scene (bit for bit)."""
    import dataclasses

    from pipeline.engine.chunk import compute_chunk
    from pipeline.engine.run import discover, outputs_of, target_grid
    from pipeline.plan.chunks import make_plan
    from pipeline.spec.workflow import spec_from_dict
    from tests.conftest import make_spec_dict

    d = make_spec_dict(catalog_copy, tmp_path, bounds=tiny_catalog.area_bounds, chunk=512,
                       cube=False)
    spec = spec_from_dict(d, base_dir=tmp_path)
    scenes = list(discover(spec).scenes)
    plan = make_plan(scenes, grid=target_grid(spec, scenes), outputs=outputs_of(spec))
    (task,) = plan.tasks  # the tiny grid is one chunk, its stack held whole
    k, victim = next((k, s.scenes[0]) for k, s in enumerate(task.slots)
                     if len(s.scenes) == 1 and s.scenes[0].quality)
    scl = next(q for q in victim.quality)
    path = type(catalog_copy)(scl.href.removeprefix("file://"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # its header reads, its tiles do not

    without = dataclasses.replace(task, slots=task.slots[:k] + task.slots[k + 1:])
    reader = RasterReader()
    try:
        expected = compute_chunk(without, outputs=plan.outputs, reader=reader)
        got = compute_chunk(task, outputs=plan.outputs, reader=reader)
    finally:
        reader.close()
    assert [f[0] for f in got.failures] == [victim.id]
    assert victim.id not in got.used
    for e, g in zip(expected.mosaics, got.mosaics, strict=True):
        np.testing.assert_array_equal(g["bands"].view(np.uint32), e["bands"].view(np.uint32))
        np.testing.assert_array_equal(g["count"], e["count"])
