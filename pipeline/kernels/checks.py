"""Argument checks shared by the kernels' validating wrappers (plain NumPy, no numba).

The public functions of :mod:`pipeline.kernels.median`, :mod:`pipeline.kernels.reduce`,
:mod:`pipeline.kernels.scored`, :mod:`pipeline.kernels.order`, :mod:`pipeline.kernels.blend` and
:mod:`pipeline.kernels.calibrate` validate their arguments with these before calling a raw
``*_kernel`` loop, and raise ``ValueError`` naming the offending argument.
"""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_TIME",
    "check_planes",
    "check_stack",
    "describe",
    "float_vector",
    "is_real",
    "mosaic_outputs",
    "rank_vector",
    "time_order",
]

#: Largest time axis the mosaics accept (their ``count`` output is uint16).
MAX_TIME = int(np.iinfo(np.uint16).max)


def describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def check_stack(stack: np.ndarray) -> None:
    if not isinstance(stack, np.ndarray) or stack.ndim != 4 or stack.dtype != np.float32:
        raise ValueError(
            f"stack must be a 4-D float32 (time, band, y, x) array, got {describe(stack)}"
        )
    if stack.shape[0] > MAX_TIME:
        raise ValueError(f"stack time axis {stack.shape[0]} exceeds {MAX_TIME} (count is uint16)")
    if stack.shape[1] < 1:
        raise ValueError("stack must have at least one band")


def check_planes(
    name: str, a: object, shape: tuple[int, ...], dtype: npt.DTypeLike, what: str
) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
        raise ValueError(
            f"{name} must be a {np.dtype(dtype)} array of shape {shape} {what}, got {describe(a)}"
        )


def float_vector(name: str, a: object, nt: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iuf" or arr.shape != (nt,):
        raise ValueError(
            f"{name} must be a real ({nt},) array (one value per observation), got {describe(arr)}"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite")
    return arr


def rank_vector(name: str, a: object, nt: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu" or arr.shape != (nt,):
        raise ValueError(
            f"{name} must be an integer ({nt},) array (one rank per observation), got "
            f"{describe(arr)}"
        )
    if nt and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name} must be in [0, 2**31 - 1] (0 = most preferred)")
    return arr.astype(np.int32)


def time_order(time: object, nt: int) -> np.ndarray:
    """(T,) int64 rank of each observation under (time, stack index): the tie-break order."""
    if time is None:
        return np.arange(nt, dtype=np.int64)
    arr = np.asarray(time)
    if arr.shape != (nt,) or arr.dtype.kind not in "iufM":
        raise ValueError(
            f"time must be a ({nt},) integer, float or datetime64 array (acquisition times), "
            f"got {describe(arr)}"
        )
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise ValueError("time must not contain NaT")
        arr = arr.view(np.int64)
    elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("time must be finite")
    order = np.empty(nt, dtype=np.int64)
    order[np.lexsort((np.arange(nt), arr))] = np.arange(nt, dtype=np.int64)
    return order


def mosaic_outputs(stack: np.ndarray, with_source: bool) -> tuple[np.ndarray, ...]:
    """(out, count), or (out, source, count) with ``with_source``: NaN, -1 and 0 filled."""
    _, nb, ny, nx = stack.shape
    out = np.full((nb, ny, nx), np.nan, dtype=np.float32)
    count = np.zeros((ny, nx), dtype=np.uint16)
    if not with_source:
        return out, count
    return out, np.full((ny, nx), -1, dtype=np.int32), count


def is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)
