"""C library functions Python's ``os`` module lacks, called through ctypes: one lookup for the
project (``renameat2`` for atomic publishing, ``fallocate`` for the parts' scratch file,
``malloc_trim`` for the workers' heaps). These are the C library's documented system call
wrappers and functions, not any Python library's internals.

Each is looked up once per process in the process's own symbols (the C library among them),
with ``errno`` kept for :func:`ctypes.get_errno`; where the C library has no such function (not
Linux, not glibc, an old glibc) the lookup is None and the caller does without.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any


@functools.cache
def libc_function(name: str, argtypes: tuple[Any, ...], restype: Any) -> Any | None:
    """The C library's ``name`` with its argument and result types set, or None."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name, None)
    except OSError:
        return None
    if fn is None:
        return None
    fn.argtypes = list(argtypes)
    fn.restype = restype
    return fn
