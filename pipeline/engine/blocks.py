"""The fused chunk task as a value: one output chunk's cube or mosaic as NumPy arrays, for a lazy
(Dask-array) caller such as :mod:`pipeline.api` instead of a store.

The same :func:`~pipeline.engine.chunk.compute_chunk` a run's task calls, on the same
:class:`~pipeline.plan.chunks.ChunkTask`: what it returns is what ``aquila run`` writes for that
chunk. The reader is the worker process's for the settings (:func:`reader_for`), as in a run.

A scene that fails to read is never turned into nodata silently: by default the block raises a
:class:`ReadError` naming the chunk, the scene and the fix; ``read_errors="skip"`` leaves it
out with a warning in the log (what a run records as ``partial``).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from pipeline.engine.chunk import ChunkOutput, compute_chunk
from pipeline.engine.compose import composite_method
from pipeline.engine.executor import reader_for
from pipeline.errors import ReadError
from pipeline.io.settings import ReaderSettings
from pipeline.plan.chunks import ChunkTask, MosaicOutput, Outputs, SlotScenes

log = logging.getLogger(__name__)

ReadErrors = Literal["raise", "skip"]


def cube_block(
    settings: ReaderSettings,
    task: ChunkTask,
    outputs: Outputs,
    n_slots: int,
    read_errors: ReadErrors = "raise",
) -> np.ndarray:
    """The chunk of the cube: (time slots, bands, y, x) float32, NaN where no scene has data
    (every slot of the plan, not only those touching the chunk)."""
    c = task.chunk
    block = np.full((n_slots, len(outputs.bands), c.height, c.width), np.nan, np.float32)

    def put(slot: int, plane: np.ndarray) -> None:
        block[slot] = plane

    out = compute_chunk(task, outputs=outputs, reader=reader_for(settings), on_slot=put)
    _check_reads(out, read_errors)
    return block


def mosaic_block(
    settings: ReaderSettings,
    task: ChunkTask,
    outputs: Outputs,
    read_errors: ReadErrors = "raise",
) -> dict[str, np.ndarray]:
    """The chunk of ``outputs.mosaics[0]``: ``bands`` (B, y, x) float32, ``count`` and the
    method's lineage layers (``source``, ``score``, ``weight``), as a run's mosaic store."""
    out = compute_chunk(task, outputs=outputs, reader=reader_for(settings))
    _check_reads(out, read_errors)
    return out.mosaics[0]


def composite_cube_block(
    method: MosaicOutput, slots: tuple[SlotScenes, ...], bands: tuple[str, ...],
    *planes: np.ndarray,
) -> dict[str, np.ndarray]:
    """A mosaic of one chunk of a loaded cube: ``planes`` are the bands' (T, y, x) blocks, every
    time slot; the same :func:`~pipeline.engine.compose.composite_method` a run applies to the
    slots touching the chunk (slots without data there change no result: they are all NaN).
    Methods that need quality masks or a halo (best-pixel, blending) need the items instead."""
    stack = np.ascontiguousarray(np.stack(planes, axis=1), dtype=np.float32)
    return composite_method(method, stack, slots, bands=bands, qa_masked=None)


def band_plane(block: np.ndarray, index: int) -> np.ndarray:
    """One band of a cube block: (time, y, x)."""
    return block[:, index]


def mosaic_layer(block: dict[str, np.ndarray], name: str, index: int = -1) -> np.ndarray:
    """One variable of a mosaic block: band ``index`` of ``bands``, or the layer ``name``."""
    return block["bands"][index] if name == "bands" else block[name]


def _check_reads(out: ChunkOutput, read_errors: ReadErrors) -> None:
    if not out.failures:
        return
    scene_id, reason, message = out.failures[0]
    more = f" (and {len(out.failures) - 1} more)" if len(out.failures) > 1 else ""
    if read_errors == "skip":
        for sid, why, text in out.failures:
            log.warning("chunk %s: scene %s left out: [%s] %s", out.chunk.name, sid, why, text)
        return
    raise ReadError(
        f"scene {scene_id!r}",
        f"chunk {out.chunk.name}: [{reason}] {message}{more}. Fix or remove the item, or pass "
        "read_errors='skip' to leave unreadable scenes out (a run reports them as 'partial')",
        reason=reason,
    )
