"""Crash points for the chaos tests, kept out of the package.

A :class:`Pause` stops the first process that reaches point ``name`` (it creates
``folder/paused-<name>``) until ``folder/resume-<name>`` appears or ``timeout_s`` passes (then
it raises, so a test that forgets to resume fails instead of hanging). :func:`install` wraps the
engine's functions at the points:

* ``read``: in a chunk task, before its first cube block is written (slots read, none written);
* ``write``: in a chunk task, right after its first cube block is written;
* ``merged``: driver, the forks merged, nothing committed;
* ``committed``: driver, the night committed on its branch, not published;
* ``published``: driver, published; the report and branch cleanup not done.

In the test process, :func:`paused` installs them for a ``with`` block. For ``aquila`` run as a
child process (and its Dask workers), :func:`child_env` puts ``tests/crashpoints`` first on
``PYTHONPATH`` with ``AQUILA_TEST_PAUSE=point:folder``: its ``sitecustomize`` calls
:func:`install` in every Python process that starts with that environment.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POINTS = ("read", "write", "merged", "committed", "published")
ENV = "AQUILA_TEST_PAUSE"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Pause:
    name: str
    folder: Path
    timeout_s: float = 600.0

    def at(self, point: str) -> None:
        if point != self.name:
            return
        try:
            fd = os.open(self.folder / f"paused-{point}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        deadline = time.monotonic() + self.timeout_s
        while not (self.folder / f"resume-{point}").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"paused at {point!r} for {self.timeout_s} s: nobody resumed")
            time.sleep(0.05)


def _patches(pause: Pause) -> list[tuple[Any, str, Callable[..., Any]]]:
    from pipeline.engine.nightly import _Night
    from pipeline.engine.writer import ChunkWriter
    from pipeline.products.transaction import Transaction

    emit, commit, publish = ChunkWriter._emit, _Night.commit, Transaction.publish

    def _emit(self: Any, writes: Any, *, cube: bool) -> Any:
        if cube:
            pause.at("read")
        out = emit(self, writes, cube=cube)
        if cube:
            pause.at("write")
        return out

    def _commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        pause.at("merged")
        return commit(self, *args, **kwargs)

    def _publish(self: Any, *args: Any, **kwargs: Any) -> Any:
        pause.at("committed")
        out = publish(self, *args, **kwargs)
        pause.at("published")
        return out

    return [(ChunkWriter, "_emit", _emit), (_Night, "commit", _commit),
            (Transaction, "publish", _publish)]


def install(pause: Pause) -> None:
    """Wrap the engine at the pause points, for the rest of this process."""
    if pause.name not in POINTS:
        raise ValueError(f"unknown pause point {pause.name!r}; one of {POINTS}")
    for owner, name, fn in _patches(pause):
        setattr(owner, name, fn)


@contextlib.contextmanager
def paused(point: str, folder: Path, timeout_s: float = 600.0) -> Iterator[Pause]:
    """The pause points installed in this process for the block."""
    pause = Pause(point, Path(folder), timeout_s)
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in _patches(pause)]
    install(pause)
    try:
        yield pause
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def child_env(point: str, folder: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose Python processes pause at ``point`` (see the module docstring)."""
    env = dict(os.environ if env is None else env)
    paths = [str(HERE / "crashpoints"), str(HERE.parent), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env[ENV] = f"{point}:{folder}"
    return env
