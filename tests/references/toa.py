"""Plain vectorised NumPy references for the TOA chain (:mod:`tests.references.toa_chain`) and
the QA kernels (:mod:`pipeline.kernels.qa`); no numba, no LUTs.

Written from the kernels' specifications, not from their loops: whole-array float64 maths,
rounded once to float32; nodata/NaN inputs -> NaN. Axis order is (band, y, x).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "decode_reference",
    "dilate_reference",
    "dn_to_radiance_reference",
    "dn_to_toa_reflectance_reference",
    "harmonise_linear_reference",
    "radiance_to_toa_reflectance_reference",
]


def _valid(dn: np.ndarray, nodata: float | None, has_nodata: bool) -> tuple[np.ndarray, np.ndarray]:
    v = dn.astype(np.float64)
    ok = ~np.isnan(v)
    if has_nodata:
        ok &= v != np.float64(nodata)
    return v, ok


def _col(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)[:, None, None]


def dn_to_radiance_reference(dn, gain, bias, nodata, has_nodata) -> np.ndarray:
    """New float32 (band, y, x) array of DN * gain + bias; nodata/NaN -> NaN."""
    v, ok = _valid(dn, nodata, has_nodata)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(ok, v * _col(gain) + _col(bias), np.nan).astype(np.float32)


def dn_to_toa_reflectance_reference(dn, mult, add, sun_elevation_deg, nodata, has_nodata):
    """New float32 array of (DN * mult + add) / sin(sun elevation); nodata/NaN -> NaN."""
    v, ok = _valid(dn, nodata, has_nodata)
    s = np.sin(np.deg2rad(np.float64(sun_elevation_deg)))
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(ok, (v * _col(mult) + _col(add)) / s, np.nan).astype(np.float32)


def radiance_to_toa_reflectance_reference(radiance, esun, earth_sun_distance_au, cos_sza):
    """New float32 array of π L d² / (ESUN cos θs); cos θs <= 0 or NaN -> NaN."""
    L = radiance.astype(np.float64)
    c = np.broadcast_to(np.asarray(cos_sza, dtype=np.float64), L.shape[1:])[None]
    d2 = np.float64(earth_sun_distance_au) ** 2
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        rho = np.pi * L * d2 / (_col(esun) * c)
        return np.where(c > 0, rho, np.nan).astype(np.float32)


def harmonise_linear_reference(values, slope, intercept) -> np.ndarray:
    """New float32 array of values * slope + intercept per band."""
    with np.errstate(invalid="ignore", over="ignore"):
        return (values.astype(np.float64) * _col(slope) + _col(intercept)).astype(np.float32)


def dilate_reference(mask: np.ndarray, n: int, shape: str = "square") -> np.ndarray:
    """Binary dilation of a (y, x) bool mask by n pixels: OR of shifted copies over the
    structuring element (square: Chebyshev distance <= n; disc: dy² + dx² <= n²)."""
    h, w = mask.shape
    pad = np.pad(mask, n, constant_values=False)
    out = np.zeros_like(mask)
    for dy in range(-n, n + 1):
        for dx in range(-n, n + 1):
            if shape == "disc" and dy * dy + dx * dx > n * n:
                continue
            out |= pad[n + dy : n + dy + h, n + dx : n + dx + w]
    return out


def decode_reference(qa: np.ndarray, rules, classes) -> dict[str, np.ndarray]:
    """Per class, the bool mask (qa's shape) of values setting it, by bit arithmetic on the
    values themselves: ((qa >> offset) & (2**length - 1)) in values (length 0: qa in values)."""
    v = np.asarray(qa).astype(np.int64)
    out = {c: np.zeros(v.shape, dtype=bool) for c in classes}
    for cls, off, length, values in rules:
        if cls not in out:
            continue
        field = v if length == 0 else (v >> off) & ((1 << length) - 1)
        for value in values:
            out[cls] |= field == value
    return out
