"""Radiometry kernels: gather source pixels onto the output grid, calibrate DN, mask by QA.

Axis order is (band, y, x) for one scene (the time axis is handled by the caller). The
``*_kernel`` functions are the raw ``numba.njit`` loops (no bounds checks; callable from other
jitted code); the public functions of the same name without the suffix validate their arguments
and raise ``ValueError`` naming the offending one before calling the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

__all__ = [
    "QA_DTYPES",
    "SOURCE_DTYPES",
    "gather_calibrate",
    "gather_calibrate_kernel",
    "gather_mask",
    "gather_mask_kernel",
    "lut_from_bitfields",
    "lut_from_classes",
]

#: Source (DN) dtypes accepted by :func:`gather_calibrate`; each is converted exactly to float64.
SOURCE_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t)
    for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)
)
#: Quality-asset dtypes accepted by :func:`gather_mask`.
QA_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)
)


# --------------------------------------------------------------------------------------------
# jitted kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def gather_calibrate_kernel(src, rows, cols, band_out, nodata, has_nodata, scale, offset, out):
    """Write float32(DN * scale + offset) (reflectance, unitless) of src (band, H, W) into out
    (band, y, x) at band_out[k] via the nearest-neighbour index maps rows/cols (y, x); unchecked."""
    nb = src.shape[0]
    h = src.shape[1]
    w = src.shape[2]
    ny = rows.shape[0]
    nx = rows.shape[1]
    for k in range(nb):
        ob = band_out[k]
        s = scale[k]
        o = offset[k]
        for y in range(ny):
            for x in range(nx):
                r = rows[y, x]
                c = cols[y, x]
                if r < 0 or r >= h or c < 0 or c >= w:
                    continue
                dn = np.float64(src[k, r, c])
                if dn != dn:  # NaN DN of a float source
                    continue
                if has_nodata and dn == nodata:
                    continue
                out[ob, y, x] = np.float32(dn * s + o)


@numba.njit(cache=True, nogil=True)
def gather_mask_kernel(qa, rows, cols, lut, out_masked):
    """OR into out_masked (y, x) the QA test lut[qa[rows, cols]] of a quality window qa (H, W);
    outside the window or outside the LUT counts as masked; never clears a flag; unchecked."""
    h = qa.shape[0]
    w = qa.shape[1]
    n = lut.shape[0]
    ny = rows.shape[0]
    nx = rows.shape[1]
    for y in range(ny):
        for x in range(nx):
            r = rows[y, x]
            c = cols[y, x]
            if r < 0 or r >= h or c < 0 or c >= w:
                out_masked[y, x] = True
                continue
            v = np.int64(qa[r, c])
            if v < 0 or v >= n or lut[v]:
                out_masked[y, x] = True


# --------------------------------------------------------------------------------------------
# validating wrappers
# --------------------------------------------------------------------------------------------


def _check_index_maps(rows: np.ndarray, cols: np.ndarray) -> None:
    for name, a in (("rows", rows), ("cols", cols)):
        if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype != np.int32:
            raise ValueError(f"{name} must be a 2-D int32 (y, x) numpy array, got {_describe(a)}")
    if rows.shape != cols.shape:
        raise ValueError(f"rows {rows.shape} and cols {cols.shape} must have the same (y, x) shape")


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def _per_band(name: str, value: object, nb: int, dtype: type) -> np.ndarray:
    arr: np.ndarray = np.ascontiguousarray(value, dtype=dtype)
    if arr.shape != (nb,):
        raise ValueError(f"{name} must have shape ({nb},) (one per src band), got {arr.shape}")
    return arr


def gather_calibrate(
    src: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    band_out: np.ndarray,
    nodata: float,
    has_nodata: bool,
    scale: np.ndarray,
    offset: np.ndarray,
    out: np.ndarray,
) -> None:
    """Calibrate src (band, H, W) DN to float32 reflectance float32(DN * scale + offset) on the
    output grid, writing out (band, y, x) in place; nodata/NaN DN and outside pixels untouched."""
    if not isinstance(src, np.ndarray) or src.ndim != 3:
        raise ValueError(f"src must be a 3-D (band, H, W) numpy array, got {_describe(src)}")
    if src.dtype not in SOURCE_DTYPES:
        raise ValueError(
            f"src dtype {src.dtype} not supported; expected one of "
            f"{', '.join(str(d) for d in SOURCE_DTYPES)}"
        )
    _check_index_maps(rows, cols)
    if not isinstance(out, np.ndarray) or out.ndim != 3 or out.dtype != np.float32:
        raise ValueError(f"out must be a 3-D float32 (band, y, x) array, got {_describe(out)}")
    if out.shape[1:] != rows.shape:
        raise ValueError(f"out (y, x) shape {out.shape[1:]} != rows/cols shape {rows.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    nb = src.shape[0]
    band_arr = np.asarray(band_out)
    if band_arr.dtype.kind not in "iu":
        raise ValueError(f"band_out must be an integer array, got dtype {band_arr.dtype}")
    band_arr = _per_band("band_out", band_arr, nb, np.int64)
    if nb and (band_arr.min() < 0 or band_arr.max() >= out.shape[0]):
        raise ValueError(
            f"band_out values must lie in [0, {out.shape[0]}) (out's band axis), got {band_arr}"
        )
    if np.unique(band_arr).size != nb:
        raise ValueError(f"band_out values must be distinct, got {band_arr}")
    scale_arr = _per_band("scale", scale, nb, np.float64)
    offset_arr = _per_band("offset", offset, nb, np.float64)
    has_nodata = bool(has_nodata)
    if has_nodata:
        if nodata is None:
            raise ValueError("nodata must be a number when has_nodata is True")
        nodata_f = float(nodata)
    else:
        nodata_f = float("nan") if nodata is None else float(nodata)
    gather_calibrate_kernel(
        src, rows, cols, band_arr, nodata_f, has_nodata, scale_arr, offset_arr, out
    )


def gather_mask(
    qa: np.ndarray, rows: np.ndarray, cols: np.ndarray, lut: np.ndarray, out_masked: np.ndarray
) -> None:
    """Set out_masked (y, x) True where lut[qa] is True, the QA value is outside the LUT, or the
    index falls outside the qa (H, W) window; never sets False (masks of several assets OR)."""
    if not isinstance(qa, np.ndarray) or qa.ndim != 2:
        raise ValueError(f"qa must be a 2-D (H, W) numpy array, got {_describe(qa)}")
    if qa.dtype not in QA_DTYPES:
        raise ValueError(
            f"qa dtype {qa.dtype} not supported; expected one of "
            f"{', '.join(str(d) for d in QA_DTYPES)}"
        )
    _check_index_maps(rows, cols)
    if not isinstance(lut, np.ndarray) or lut.ndim != 1 or lut.dtype != np.bool_:
        raise ValueError(f"lut must be a 1-D bool numpy array, got {_describe(lut)}")
    if (
        not isinstance(out_masked, np.ndarray)
        or out_masked.dtype != np.bool_
        or out_masked.shape != rows.shape
    ):
        raise ValueError(
            f"out_masked must be a bool array of shape {rows.shape} (y, x), got "
            f"{_describe(out_masked)}"
        )
    if not out_masked.flags.writeable:
        raise ValueError("out_masked must be writeable")
    gather_mask_kernel(qa, rows, cols, lut, out_masked)


# --------------------------------------------------------------------------------------------
# LUT builders (plain NumPy)
# --------------------------------------------------------------------------------------------


def _check_size(size: int) -> int:
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return size


def lut_from_classes(values: Sequence[int], size: int) -> np.ndarray:
    """Bool LUT of length size, True at each QA class value in values (e.g. SCL 3, 8, 9, 10)."""
    size = _check_size(size)
    idx = np.asarray(list(values), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise ValueError(f"values must lie in [0, {size}), got {list(values)}")
    lut = np.zeros(size, dtype=np.bool_)
    lut[idx] = True
    return lut


def lut_from_bitfields(fields: Sequence[tuple[int, int, Sequence[int]]], size: int) -> np.ndarray:
    """Bool LUT of length size: v is masked if ((v >> offset) & (2**length - 1)) is in the
    field's masked values, for any (offset, length, masked_values) field."""
    size = _check_size(size)
    v = np.arange(size, dtype=np.int64)
    lut = np.zeros(size, dtype=np.bool_)
    for i, field in enumerate(fields):
        try:
            off, length, masked_values = field
        except (TypeError, ValueError):
            raise ValueError(
                f"fields[{i}] must be (offset, length, masked_values), got {field!r}"
            ) from None
        off, length = int(off), int(length)
        if off < 0 or not 1 <= length <= 62 or off + length > 63:
            raise ValueError(f"fields[{i}]: bad bit field offset={off} length={length}")
        mv = np.asarray(list(masked_values), dtype=np.int64)
        if mv.size and (mv.min() < 0 or mv.max() >= (1 << length)):
            raise ValueError(
                f"fields[{i}]: masked_values {list(masked_values)} do not fit in {length} bits"
            )
        lut |= np.isin((v >> off) & ((1 << length) - 1), mv)
    return lut
