"""benchmarks/peers.py's memory measure: the process tree's PSS sum counts a page that a forked
child shares with its parent once, where the RSS sum counts it in both (Aquila's workers are
forked from its warm server and share its libraries; the benchmark's verdict takes the PSS sum
and prints the RSS sum beside it)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import bench_module

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
SHARED_MIB = 200

# the parent touches SHARED_MIB of memory, then forks: the child maps the same pages (never
# writes them), and both wait until killed
_FORKING_CHILD = f"""
import os, sys, time
block = bytearray({SHARED_MIB} * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
if os.fork():  # the parent says so; the child only waits (one writer: no interleaving)
    print("ready", flush=True)
time.sleep(60)
"""


def _peers():
    return bench_module(PEERS.name)


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(),
                    reason="PSS needs Linux's /proc/PID/smaps_rollup (Linux 4.14 or later)")
def test_the_trees_pss_sum_counts_a_page_shared_by_a_fork_once():
    import psutil

    peers = _peers()
    proc = subprocess.Popen([sys.executable, "-c", _FORKING_CHILD], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + 10
        while len(root.children()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(root.children()) == 1
        rss, pss = peers._tree_memory(root)
    finally:  # the fork first (the parent's exit would orphan it), then the parent
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(proc.pid).children():
                child.kill()
        proc.kill()
        proc.wait()
    mib = 2**20
    assert rss >= 2 * SHARED_MIB * mib  # counted in the parent and again in the child
    assert SHARED_MIB * mib <= pss < (SHARED_MIB + 60) * mib  # once, plus two interpreters
    m = peers.Measured("x", [], peak_rss=rss, peak_pss=pss)
    assert m.peak == pss
    assert peers.Measured("x", [], peak_rss=rss).peak == rss  # no PSS read: the RSS sum
