"""Free heap memory goes back to the system (pipeline.engine.heap), in a child interpreter with
a local worker's allocator settings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

HEAP = textwrap.dedent("""
    import os, sys
    import numpy as np
    from pipeline.engine.heap import release_free_memory

    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    arrays = [np.ones(2**18, np.float32) for _ in range(300)]  # 300 MiB of 1 MiB arrays
    keep = arrays[-1]  # the heap's top stays in use: freeing the rest cannot shrink it
    del arrays
    before = rss()
    print(before - rss() if release_free_memory() else "unsupported")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason=(
    "malloc_trim is glibc's (Linux); elsewhere release_free_memory does nothing"))
def test_free_heap_memory_goes_back_to_the_system():
    """A worker's allocator settings keep freed heap memory resident (256 MiB trim threshold,
    arrays below 64 MiB from the heap): release_free_memory gives it back."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**26),
           "MALLOC_TRIM_THRESHOLD_": str(2**28)}
    done = subprocess.run([sys.executable, "-c", HEAP], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    if done.stdout.strip() == "unsupported":
        pytest.skip("this C library has no malloc_trim (not glibc)")
    assert int(done.stdout) > 200 * 2**20
