"""DN -> radiance -> TOA reflectance -> bandpass adjustment, one step at a time, from the
published constants: the oracle the folded calibration is tested against.

The pipeline never runs these: it folds the whole chain into one scale/offset per band (and a
per-pixel sun factor) applied by :func:`pipeline.kernels.calibrate.gather_calibrate`
(:func:`pipeline.catalog.sensors.folding.fold`). The tests check that the fold equals this
chain (tests/test_radiometry_kernels.py), and this chain against hand arithmetic and the NumPy
references of :mod:`tests.references.toa`.

Axis order is (band, y, x) for one scene. The ``*_kernel`` functions are the raw ``numba.njit``
loops (no checks); the public functions of the same name without the suffix validate their
arguments and raise ``ValueError`` naming the offending one. Unlike the gather kernels, these
map a whole array onto an output of the same shape, so a nodata or NaN input is written as NaN
(nothing is left untouched). Arithmetic is float64, rounded once to float32 on store.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pipeline.kernels.calibrate import SOURCE_DTYPES

__all__ = [
    "dn_to_radiance",
    "dn_to_radiance_kernel",
    "dn_to_toa_reflectance",
    "dn_to_toa_reflectance_kernel",
    "harmonise_linear",
    "harmonise_linear_kernel",
    "radiance_to_toa_reflectance",
    "radiance_to_toa_reflectance_kernel",
]


# --------------------------------------------------------------------------------------------
# jitted kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def dn_to_radiance_kernel(dn, gain, bias, nodata, has_nodata, out):
    """out[b] = float32(DN * gain[b] + bias[b]) for dn (band, y, x); NaN/nodata DN -> NaN."""
    nb, ny, nx = dn.shape
    for b in range(nb):
        g = gain[b]
        o = bias[b]
        for y in range(ny):
            for x in range(nx):
                v = np.float64(dn[b, y, x])
                if v != v or (has_nodata and v == nodata):
                    out[b, y, x] = np.nan
                else:
                    out[b, y, x] = np.float32(v * g + o)


@numba.njit(cache=True, nogil=True)
def dn_to_toa_reflectance_kernel(dn, mult, add, sin_elev, nodata, has_nodata, out):
    """out[b] = float32((DN * mult[b] + add[b]) / sin_elev); NaN/nodata DN -> NaN."""
    nb, ny, nx = dn.shape
    for b in range(nb):
        m = mult[b]
        a = add[b]
        for y in range(ny):
            for x in range(nx):
                v = np.float64(dn[b, y, x])
                if v != v or (has_nodata and v == nodata):
                    out[b, y, x] = np.nan
                else:
                    out[b, y, x] = np.float32((v * m + a) / sin_elev)


@numba.njit(cache=True, nogil=True)
def radiance_to_toa_reflectance_kernel(radiance, esun, d2, cos_sza, out):
    """out[b] = float32(pi * L * d2 / (esun[b] * cos_sza)); cos_sza is (y, x) or (1, 1);
    cos_sza <= 0 (sun below the horizon) or NaN -> NaN."""
    nb, ny, nx = radiance.shape
    scalar = cos_sza.shape[0] == 1 and cos_sza.shape[1] == 1
    for b in range(nb):
        e = esun[b]
        for y in range(ny):
            for x in range(nx):
                c = cos_sza[0, 0] if scalar else cos_sza[y, x]
                if not c > 0.0:
                    out[b, y, x] = np.nan
                    continue
                v = np.float64(radiance[b, y, x])
                out[b, y, x] = np.float32(np.pi * v * d2 / (e * c))


@numba.njit(cache=True, nogil=True)
def harmonise_linear_kernel(values, slope, intercept, out):
    """out[b] = float32(values[b] * slope[b] + intercept[b]); NaN stays NaN; out may be values."""
    nb, ny, nx = values.shape
    for b in range(nb):
        s = slope[b]
        i = intercept[b]
        for y in range(ny):
            for x in range(nx):
                out[b, y, x] = np.float32(np.float64(values[b, y, x]) * s + i)


# --------------------------------------------------------------------------------------------
# validating wrappers
# --------------------------------------------------------------------------------------------


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def _check_src(name: str, a: object, dtypes: tuple[np.dtype, ...]) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.ndim != 3:
        raise ValueError(f"{name} must be a 3-D (band, y, x) numpy array, got {_describe(a)}")
    if a.dtype not in dtypes:
        raise ValueError(
            f"{name} dtype {a.dtype} not supported; expected one of "
            f"{', '.join(str(d) for d in dtypes)}"
        )
    return a


def _check_out(out: object, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
        raise ValueError(f"out must be a float32 array of shape {shape}, got {_describe(out)}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    return out


def _per_band(name: str, value: object, nb: int) -> np.ndarray:
    arr: np.ndarray = np.ascontiguousarray(value, dtype=np.float64)
    if arr.shape != (nb,):
        raise ValueError(f"{name} must have shape ({nb},) (one per band), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr}")
    return arr


def _nodata(nodata: float | None, has_nodata: bool) -> tuple[float, bool]:
    has_nodata = bool(has_nodata)
    if has_nodata and nodata is None:
        raise ValueError("nodata must be a number when has_nodata is True")
    return (float("nan") if nodata is None else float(nodata)), has_nodata


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def dn_to_radiance(
    dn: np.ndarray,
    gain: np.ndarray,
    bias: np.ndarray,
    nodata: float | None,
    has_nodata: bool,
    out: np.ndarray,
) -> None:
    """At-sensor spectral radiance, W/(m² sr µm) = DN * gain + bias per band (Landsat
    RADIANCE_MULT/ADD_BAND_n), written into float32 out (band, y, x); nodata/NaN DN -> NaN."""
    _check_src("dn", dn, SOURCE_DTYPES)
    _check_out(out, dn.shape)
    nb = dn.shape[0]
    g = _per_band("gain", gain, nb)
    b = _per_band("bias", bias, nb)
    nd, has = _nodata(nodata, has_nodata)
    dn_to_radiance_kernel(dn, g, b, nd, has, out)


def dn_to_toa_reflectance(
    dn: np.ndarray,
    mult: np.ndarray,
    add: np.ndarray,
    sun_elevation_deg: float,
    nodata: float | None,
    has_nodata: bool,
    out: np.ndarray,
) -> None:
    """Landsat TOA reflectance (0-1, sun-angle corrected) = (DN * REFLECTANCE_MULT +
    REFLECTANCE_ADD) / sin(SUN_ELEVATION), per USGS Landsat 8 Data Users Handbook §5.2. No
    Earth-Sun distance term: USGS folds it into the coefficients. nodata/NaN DN -> NaN."""
    _check_src("dn", dn, SOURCE_DTYPES)
    _check_out(out, dn.shape)
    nb = dn.shape[0]
    m = _per_band("mult", mult, nb)
    a = _per_band("add", add, nb)
    elev = float(sun_elevation_deg)
    if not 0.0 < elev <= 90.0:
        raise ValueError(f"sun_elevation_deg must lie in (0, 90] degrees, got {elev}")
    nd, has = _nodata(nodata, has_nodata)
    dn_to_toa_reflectance_kernel(dn, m, a, math.sin(math.radians(elev)), nd, has, out)


def radiance_to_toa_reflectance(
    radiance: np.ndarray,
    esun: np.ndarray,
    earth_sun_distance_au: float,
    cos_sza: float | np.ndarray,
    out: np.ndarray,
) -> None:
    """TOA reflectance ρ = π L d² / (ESUN cos θs) (unitless) from radiance L (band, y, x) in
    W/(m² sr µm), ESUN per band in W/(m² µm), d in AU and cos θs a scalar or (y, x) array.
    NaN radiance, and cos θs <= 0 or NaN (sun at or below the horizon), give NaN."""
    _check_src("radiance", radiance, _FLOAT_DTYPES)
    _check_out(out, radiance.shape)
    nb, ny, nx = radiance.shape
    e = _per_band("esun", esun, nb)
    if (e <= 0).any():
        raise ValueError(f"esun must be > 0 W/(m² µm), got {e}")
    d = float(earth_sun_distance_au)
    if not 0.9 < d < 1.1:
        raise ValueError(f"earth_sun_distance_au must lie in (0.9, 1.1) AU, got {d}")
    c = np.asarray(cos_sza, dtype=np.float64)
    if c.ndim == 0:
        c2 = np.full((1, 1), float(c), dtype=np.float64)
    elif c.shape == (ny, nx):
        c2 = np.ascontiguousarray(c)
    else:
        raise ValueError(f"cos_sza must be a scalar or a ({ny}, {nx}) (y, x) array, got {c.shape}")
    radiance_to_toa_reflectance_kernel(radiance, e, d * d, c2, out)


def harmonise_linear(
    values: np.ndarray, slope: np.ndarray, intercept: np.ndarray, out: np.ndarray
) -> None:
    """Per-band linear bandpass adjustment out = values * slope + intercept (reflectance 0-1,
    e.g. HLS Sentinel-2 -> Landsat 8 OLI); NaN stays NaN; out may be values (in place)."""
    _check_src("values", values, _FLOAT_DTYPES)
    _check_out(out, values.shape)
    nb = values.shape[0]
    harmonise_linear_kernel(
        values, _per_band("slope", slope, nb), _per_band("intercept", intercept, nb), out
    )
