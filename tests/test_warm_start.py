"""Local workers forked from Aquila's fork server (pipeline.engine.clusters.warm_start) start
with the chunk tasks' modules loaded and the workers' allocator settings, and the driver does
not load what distributed would preload.

The clusters run in a child interpreter: a fork server belongs to the process that started it
and lives as long as that process, which should not be the test session's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.engine.cluster import ClusterOptions, warm_started
from pipeline.engine.clusters import warm_start

PROBE = textwrap.dedent("""
    import contextlib, json, os, sys
    from pipeline.engine.cluster import warm_started
    from pipeline.engine.clusters.options import ClusterOptions

    def probe():
        import os, sys
        # the environment the process was started with (what glibc and OpenBLAS read), not
        # os.environ, which the nanny updates once the worker runs
        raw = open("/proc/self/environ", "rb").read().split(b"\\0")
        env = dict(e.decode().split("=", 1) for e in raw if b"=" in e)
        return {"loaded": [m for m in ("numba", "rasterio", "zarr", "pipeline.engine.chunk")
                           if m in sys.modules],
                "env": {k: env.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS",
                                                 "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")},
                "parent": os.getppid()}

    options = ClusterOptions(n_workers=1, threads_per_worker=1, dashboard_address=":0")
    with contextlib.ExitStack() as stack:
        if sys.argv[1] == "warm":  # as the CLI does: first thing, distributed not yet imported
            options = stack.enter_context(warm_started(options))
        early = "distributed" in sys.modules
        from pipeline.engine.clusters.local import start_local

        with start_local(options) as client:
            info = next(iter(client.run(probe).values()))
            # a task runs there like any other
            info["task"] = client.submit(lambda x: x + 1, 41).result()
            if sys.argv[1] == "warm":  # the server: one thread (no OpenBLAS pool was started)
                info["server_threads"] = len(os.listdir(f"/proc/{info['parent']}/task"))
    info["distributed_before_start"] = early
    info["driver"] = os.getpid()
    info["driver_pandas"] = "pandas" in sys.modules
    print(json.dumps(info))
""")


def _probe(kind: str) -> dict:
    # (a LocalCluster's nanny leaves its settings in its process's environment, and an
    # environment's own value wins over Dask's pre-spawn-environ: start from one without them)
    keep = ("MALLOC_", "OMP_", "MKL_", "OPENBLAS_", "PYTHONHASHSEED")
    env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
    done = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="reads the processes' start environments in /proc (Linux only)")
def test_a_warm_started_worker_has_the_chunk_tasks_modules_before_its_first_task():
    warm, cold = _probe("warm"), _probe("cold")
    assert warm["loaded"] == ["numba", "rasterio", "zarr", "pipeline.engine.chunk"]
    assert cold["loaded"] == []  # a spawned worker imports them in its first chunk task
    assert warm["task"] == cold["task"] == 42
    # the server was started before the driver imported distributed, as the CLI starts it
    assert warm["distributed_before_start"] is False
    # forked by the server, not by the driver's nanny; started with a spawned worker's settings
    assert warm["parent"] != warm["driver"] and cold["parent"] == cold["driver"]
    settings = {"MALLOC_TRIM_THRESHOLD_": str(2**28), "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "6640"}
    assert warm["env"] == cold["env"] == settings
    assert warm["server_threads"] == 1
    # distributed's own preload list (pandas among it) was not imported into the driver
    assert warm["driver_pandas"] is False


def test_only_a_local_cluster_that_is_not_direct_is_warm_started(monkeypatch):
    """The CLI's runs and nights: their fork server started as the command begins and stopped
    as it ends (when the command started it), whatever ends it."""
    calls: list = []
    monkeypatch.setattr(warm_start, "start", lambda environ: calls.append(dict(environ)) or True)
    monkeypatch.setattr(warm_start, "stop", lambda: calls.append("stop"))
    local = ClusterOptions(n_workers=1, threads_per_worker=2)
    with pytest.raises(KeyboardInterrupt), warm_started(local) as options:
        assert options.warm_start is True and options.n_workers == 1
        assert calls[0]["MALLOC_TRIM_THRESHOLD_"] == str(2**28) and len(calls) == 1
        raise KeyboardInterrupt
    assert calls[1:] == ["stop"]
    calls.clear()
    address = ClusterOptions(scheduler="tcp://127.0.0.1:8786")
    for given, direct in [(local, True), (address, False)]:
        with warm_started(given, direct=direct) as options:
            assert options == given
    assert not calls
    monkeypatch.setattr(warm_start, "start", lambda environ: False)  # someone else's server
    with warm_started(local) as options:
        assert options.warm_start is True
    assert not calls  # is left running


def test_starting_the_server_leaves_this_process_environment_as_it_was(monkeypatch):
    """The server gets the workers' settings this process's environment does not set; one it
    sets keeps its value (as distributed's nanny lets it win for a spawned worker)."""
    monkeypatch.setenv("AQUILA_TEST_KEPT", "mine")
    monkeypatch.delenv("AQUILA_TEST_ADDED", raising=False)
    seen: list[tuple[str | None, str | None]] = []
    monkeypatch.setattr(warm_start.forkserver, "ensure_running", lambda: seen.append(
        (os.environ.get("AQUILA_TEST_KEPT"), os.environ.get("AQUILA_TEST_ADDED"))))
    monkeypatch.setattr(warm_start, "running", lambda: False)
    preload: list = []  # (this process's real fork server settings are left alone)
    monkeypatch.setattr(warm_start.multiprocessing, "get_context", lambda method: type(
        "Ctx", (), {"set_forkserver_preload": staticmethod(preload.append)})())
    assert warm_start.start({"AQUILA_TEST_KEPT": "server's", "AQUILA_TEST_ADDED": 1})
    assert preload == [list(warm_start.PRELOAD)]
    assert seen == [("mine", "1")]  # the server starts with them (as text) ...
    assert os.environ["AQUILA_TEST_KEPT"] == "mine"  # ... and this process keeps its own
    assert "AQUILA_TEST_ADDED" not in os.environ
    monkeypatch.setattr(warm_start, "running", lambda: True)
    assert not warm_start.start({})  # one already running is left as it is
    assert len(seen) == 1


STOP = textwrap.dedent("""
    import json, os, sys, time
    from pipeline.engine.clusters import warm_start

    warm_start.PRELOAD = ("slow_to_import",)  # 30 s of imports
    assert warm_start.start({})
    pid = warm_start.forkserver._forkserver._forkserver_pid
    time.sleep(0.5)
    began = time.monotonic()
    warm_start.stop()
    took = time.monotonic() - began
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    print(json.dumps({"took": took, "alive": alive, "running": warm_start.running()}))
""")


def test_a_command_that_ends_early_does_not_wait_for_the_servers_imports(tmp_path):
    """A spec error ends the command before any worker starts: stopping the server must not
    wait for its imports (a server asked to stop reads the request only once they are done),
    and the server is gone (reaped) afterwards."""
    (tmp_path / "slow_to_import.py").write_text("import time\ntime.sleep(30)\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", STOP], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["took"] < 15 and not info["alive"] and not info["running"], info


LEAK = textwrap.dedent("""
    import json
    from pipeline.engine.clusters import warm_start
    from pipeline.engine.clusters.local import start_local
    from pipeline.engine.clusters.options import ClusterOptions

    options = ClusterOptions(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                             memory_limit="not a size", warm_start=True)
    try:
        with start_local(options):
            raise AssertionError("a cluster started")
    except ValueError as exc:
        print(json.dumps({"error": str(exc), "running": warm_start.running()}))
""")


def test_a_cluster_that_fails_to_start_stops_the_server_it_started():
    """Through the API (ClusterOptions.warm_start), start_local starts the server itself: a
    LocalCluster that cannot start must not leave it running for the rest of the program."""
    done = subprocess.run([sys.executable, "-c", LEAK], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert "notasize" in info["error"] and info["running"] is False, info
