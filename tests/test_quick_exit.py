"""Processes Aquila starts and ends itself skip the garbage collector's last walk of their heaps
(gc.freeze as they close): the ``aquila`` command's driver, and the workers of the local
cluster it starts. A user's own scheduler and its workers are left as they are."""

from __future__ import annotations

import gc
import tomllib
from pathlib import Path

from pipeline.cli.main import entry
from pipeline.engine.cluster import ClusterOptions, open_client

ROOT = Path(__file__).resolve().parents[1]


def test_the_aquila_command_freezes_the_heap_once_the_command_is_done(capsys):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        code = entry(["no-such-command"])  # a usage error: the command ends with its code
        assert code != 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process goes on


def test_the_console_script_is_the_freezing_entry():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["aquila"] == "pipeline.cli.main:entry"


def _exit_probe(path: str) -> None:
    """Run on a worker: at its interpreter's exit, write how many objects are frozen."""
    import atexit

    def write() -> None:
        Path(path).write_text(str(gc.get_freeze_count()))

    atexit.register(write)


def test_the_local_clusters_workers_freeze_their_heap_as_they_close(tmp_path):
    probe = tmp_path / "frozen.txt"
    options = ClusterOptions(n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0",
                             memory_limit="1GiB")
    with open_client(options) as client:
        (plugins,) = client.run(lambda dask_worker: sorted(dask_worker.plugins)).values()
        assert "aquila-freeze-on-close" in plugins
        client.run(_exit_probe, str(probe))
        (before,) = client.run(gc.get_freeze_count).values()
        assert before == 0  # nothing frozen while the worker works
    assert probe.exists(), "the worker process did not reach its exit handlers"
    assert int(probe.read_text()) > 0
