"""Quality-band decoding: Landsat Collection 2 QA_PIXEL bits and Sentinel-2 SCL classes into
named boolean (y, x) masks via lookup tables, plus mask dilation (numba).

Decoding is ``lut[qa]`` (one gather per mask); the tables are built once at import from the
bit/class definitions below, so they are the single place to read the product specifications.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "LANDSAT_QA_PIXEL_BITS",
    "LANDSAT_QA_PIXEL_CONFIDENCE",
    "SCL_CLASSES",
    "SCL_MASKS",
    "decode_landsat_qa_pixel",
    "decode_scl",
    "dilate",
    "dilate_kernel",
]

#: Landsat Collection 2 QA_PIXEL single bits (USGS LSDS-1619 / LSDS-1328, table 6-3).
LANDSAT_QA_PIXEL_BITS: dict[str, int] = {
    "fill": 0,
    "dilated_cloud": 1,
    "cirrus": 2,  # Landsat 8/9 only
    "cloud": 3,
    "shadow": 4,
    "snow": 5,
    "clear": 6,
    "water": 7,
}
#: Two-bit confidence fields (value 0 none, 1 low, 2 medium (reserved), 3 high): first bit.
LANDSAT_QA_PIXEL_CONFIDENCE: dict[str, int] = {
    "cloud_confidence": 8,
    "shadow_confidence": 10,
    "snow_confidence": 12,
    "cirrus_confidence": 14,
}
#: Sentinel-2 L2A Scene Classification (Sen2Cor SCL) class values.
SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area",
    3: "cloud_shadow",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}
#: Named SCL masks -> the class values that set them.
SCL_MASKS: dict[str, tuple[int, ...]] = {
    "nodata": (0,),
    "saturated": (1,),
    "dark_area": (2,),
    "shadow": (3,),
    "cloud": (8, 9),
    "cirrus": (10,),
    "snow": (11,),
    "water": (6,),
    "clear": (4, 5, 6),
}


def _landsat_luts() -> dict[str, np.ndarray]:
    v = np.arange(1 << 16, dtype=np.int64)
    luts = {name: ((v >> bit) & 1).astype(bool) for name, bit in LANDSAT_QA_PIXEL_BITS.items()}
    for name, bit in LANDSAT_QA_PIXEL_CONFIDENCE.items():
        luts[name.replace("_confidence", "_high_confidence")] = ((v >> bit) & 3) == 3
    # Common names shared with decode_scl; QA_PIXEL carries no saturation (that is QA_RADSAT).
    luts["nodata"] = luts["fill"]
    luts["saturated"] = np.zeros(v.size, dtype=bool)
    return luts


def _scl_luts() -> dict[str, np.ndarray]:
    luts = {}
    for name, classes in SCL_MASKS.items():
        lut = np.zeros(256, dtype=bool)
        lut[list(classes)] = True
        luts[name] = lut
    return luts


_LANDSAT_LUTS = _landsat_luts()
_SCL_LUTS = _scl_luts()


def _check_int(name: str, a: object, hi: int) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu":
        kind = f"{a.dtype} array" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{name} must be an integer numpy array, got {kind}")
    if a.size and (int(a.min()) < 0 or int(a.max()) > hi):
        raise ValueError(
            f"{name} values must lie in [0, {hi}], got [{int(a.min())}, {int(a.max())}]"
        )
    return a


def decode_landsat_qa_pixel(qa: np.ndarray) -> dict[str, np.ndarray]:
    """Named bool masks (same shape as qa) from a Landsat C2 QA_PIXEL array: the single bits
    (fill, dilated_cloud, cirrus, cloud, shadow, snow, clear, water), ``*_high_confidence`` for
    each two-bit confidence pair equal to 3, and ``nodata`` (= fill), ``saturated`` (all False:
    saturation is in QA_RADSAT, not QA_PIXEL)."""
    qa = _check_int("qa", qa, 0xFFFF)
    idx = qa.astype(np.intp, copy=False)
    return {name: lut[idx] for name, lut in _LANDSAT_LUTS.items()}


def decode_scl(scl: np.ndarray) -> dict[str, np.ndarray]:
    """Named bool masks (same shape as scl) from a Sentinel-2 SCL array (see SCL_MASKS); class
    0 is nodata only here — never treat a QA value of 0 as nodata elsewhere."""
    scl = _check_int("scl", scl, max(SCL_CLASSES))
    idx = scl.astype(np.intp, copy=False)
    return {name: lut[idx] for name, lut in _SCL_LUTS.items()}


@numba.njit(cache=True, nogil=True)
def dilate_kernel(mask, n, disc, out):
    """OR into out (y, x) every True pixel of mask spread over its (2n+1)² square, or over the
    disc dy² + dx² <= n² when disc; unchecked."""
    h, w = mask.shape
    nn = n * n
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            for dy in range(-n, n + 1):
                yy = y + dy
                if yy < 0 or yy >= h:
                    continue
                for dx in range(-n, n + 1):
                    xx = x + dx
                    if xx < 0 or xx >= w:
                        continue
                    if disc and dy * dy + dx * dx > nn:
                        continue
                    out[yy, xx] = True


def dilate(mask: np.ndarray, n: int, *, shape: str = "square") -> np.ndarray:
    """New (y, x) bool mask: mask dilated by n pixels (square: Chebyshev distance <= n; disc:
    Euclidean <= n), e.g. to buffer clouds and shadows; pixels beyond the edge count as False."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"mask must be a 2-D bool numpy array, got {type(mask).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0 (pixels), got {n!r}")
    if shape not in ("square", "disc"):
        raise ValueError(f"shape must be 'square' or 'disc', got {shape!r}")
    out = np.zeros(mask.shape, dtype=np.bool_)
    dilate_kernel(np.ascontiguousarray(mask), int(n), shape == "disc", out)
    return out
