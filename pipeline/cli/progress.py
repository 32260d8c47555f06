"""The chunk progress bar shared by ``aquila run`` and ``aquila nightly``.

The engine reports progress as ``progress(done, total)``; the bar appears on the first call (a
run that fails before its first chunk prints no empty bar) and is stopped by the command, however
the run ended.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn


class ChunkBar:
    """A rich progress bar of chunks done; call it as the engine's ``progress`` callback."""

    def __init__(self, console: Console, *, disable: bool) -> None:
        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=disable,
        )
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("chunks", total=total)
        self._bar.update(self._task, completed=done)

    def stop(self) -> None:
        self._bar.stop()

    def __enter__(self) -> ChunkBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()  # the bar ends before what follows prints (a summary, a Ctrl-C line)
