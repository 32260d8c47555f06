"""Memory regression (not timed): a median over a deep stack on a worker whose memory limit is
smaller than the whole chunk's stack completes without the worker pausing, spilling or being
restarted, because the chunk is computed in parts (pipeline/plan/chunks.py ``parts``)."""

from __future__ import annotations

import pytest

from tests.conftest import make_spec_dict
from tests.test_run import open_store, run

LIMIT = 900 * 2**20  # the worker's memory_limit: Dask pauses it at 80 %, restarts it at 95 %


@pytest.fixture(scope="module")
def deep_catalog(tmp_path_factory):
    """The tiny area with 20 scenes per provider: ~60 time slots over every pixel."""
    from pipeline.demo import generate_catalog

    root = tmp_path_factory.mktemp("deep-catalog")
    return generate_catalog(root / "catalog", preset="tiny", seed=1, scenes_per_provider=20)


def test_a_deep_median_runs_in_a_worker_smaller_than_its_stack(deep_catalog, tmp_path):
    from distributed import Client, LocalCluster

    from pipeline.plan.chunks import stack_bytes

    # 4 m over the 4 km tiny area: one 1000 x 1000 chunk
    spec = make_spec_dict(deep_catalog.root, tmp_path, bounds=deep_catalog.area_bounds,
                          chunk=1024, resolution=4.0, cube=False)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, memory_limit=LIMIT,
                      dashboard_address=None, host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        (address,) = client.scheduler_info()["workers"]
        pid = client.run(lambda: __import__("os").getpid())[address]
        report = run(spec, scheduler=cluster.scheduler.address)
        assert report.status == "success", report.error
        slots = report.time_slots
        whole = stack_bytes(slots, 4, 1000, 1000)
        print(f"{slots} slots: a whole-chunk stack of {whole / 2**20:.0f} MiB, "
              f"worker limit {LIMIT / 2**20:.0f} MiB")
        assert whole > LIMIT, "the stack must not fit the worker for this test to mean anything"
        (after,) = client.scheduler_info()["workers"]
        assert after == address and client.run(lambda: __import__("os").getpid())[after] == pid, \
            "the worker was restarted"
        logs = "\n".join(msg for _, msg in client.get_worker_logs()[address])
        assert "Pausing worker" not in logs, logs
        assert "Restarting worker" not in logs, logs
        spilled = client.run(lambda dask_worker: dask_worker.data.spilled_total.disk
                             if hasattr(dask_worker.data, "spilled_total") else 0)[address]
        assert spilled == 0
    mosaic = open_store(tmp_path / "mosaic.zarr").load()
    assert int(mosaic["count"].max()) >= 40  # the stack really is deep
