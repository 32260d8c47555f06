"""Top-of-atmosphere radiometry: DN -> radiance -> TOA reflectance, sun geometry, bandpass.

Axis order is (band, y, x) for one scene. The ``*_kernel`` functions are the raw ``numba.njit``
loops (no checks); the public functions of the same name without the suffix validate their
arguments and raise ``ValueError`` naming the offending one. Unlike the gather kernels, these
map a whole array onto an output of the same shape, so a nodata or NaN input is written as NaN
(nothing is left untouched). Arithmetic is float64, rounded once to float32 on store.
"""

from __future__ import annotations

import datetime as _dt
import math

import numba
import numpy as np

from pipeline.kernels.calibrate import SOURCE_DTYPES

__all__ = [
    "dn_to_radiance",
    "dn_to_radiance_kernel",
    "dn_to_toa_reflectance",
    "dn_to_toa_reflectance_kernel",
    "earth_sun_distance",
    "harmonise_linear",
    "harmonise_linear_kernel",
    "radiance_to_toa_reflectance",
    "radiance_to_toa_reflectance_kernel",
    "solar_zenith",
]

_NAN32 = np.float32(np.nan)


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


# --------------------------------------------------------------------------------------------
# sun geometry (plain NumPy)
# --------------------------------------------------------------------------------------------


def _as_utc(t: _dt.datetime | _dt.date, name: str) -> _dt.datetime:
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware (UTC), got naive {t.isoformat()}")
        return t.astimezone(_dt.UTC)
    if isinstance(t, _dt.date):
        return _dt.datetime(t.year, t.month, t.day, 12, tzinfo=_dt.UTC)
    raise ValueError(f"{name} must be a datetime.date or datetime.datetime, got {type(t).__name__}")


def _noaa_sun(t: _dt.datetime) -> tuple[float, float, float]:
    """(Earth-Sun distance AU, declination rad, equation of time minutes) at UTC time t, from
    the NOAA GML Solar Calculator equations (after Meeus 1991, *Astronomical Algorithms*)."""
    jd = (t - _J2000).total_seconds() / 86400.0
    jc = jd / 36525.0  # Julian centuries since J2000.0
    l0 = (280.46646 + jc * (36000.76983 + jc * 0.0003032)) % 360.0  # mean longitude, deg
    m = math.radians(357.52911 + jc * (35999.05029 - 0.0001537 * jc))  # mean anomaly
    e = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)  # orbit eccentricity
    c = (
        math.sin(m) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
        + math.sin(2 * m) * (0.019993 - 0.000101 * jc)
        + math.sin(3 * m) * 0.000289
    )  # equation of centre, deg
    true_anomaly = math.radians(math.degrees(m) + c)
    r_au = 1.000001018 * (1 - e * e) / (1 + e * math.cos(true_anomaly))
    omega = math.radians(125.04 - 1934.136 * jc)
    app_long = math.radians(l0 + c - 0.00569 - 0.00478 * math.sin(omega))
    mean_obliq = 23 + (26 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60) / 60
    obliq = math.radians(mean_obliq + 0.00256 * math.cos(omega))
    decl = math.asin(math.sin(obliq) * math.sin(app_long))
    y = math.tan(obliq / 2) ** 2
    l0r = math.radians(l0)
    eqtime = 4 * math.degrees(
        y * math.sin(2 * l0r)
        - 2 * e * math.sin(m)
        + 4 * e * y * math.sin(m) * math.cos(2 * l0r)
        - 0.5 * y * y * math.sin(4 * l0r)
        - 1.25 * e * e * math.sin(2 * m)
    )
    return r_au, decl, eqtime


_J2000 = _dt.datetime(2000, 1, 1, 12, tzinfo=_dt.UTC)


def earth_sun_distance(date: _dt.date | _dt.datetime) -> float:
    """Earth-Sun distance in AU at a UTC datetime (a date means 12:00 UTC that day).

    Radius vector of the NOAA GML Solar Calculator (https://gml.noaa.gov/grad/solcalc/,
    equations after Meeus 1991, *Astronomical Algorithms*, ch. 24): R = 1.000001018 (1 - e²) /
    (1 + e cos ν). Agrees with the EARTH_SUN_DISTANCE of USGS Landsat MTLs to ~5e-5 AU (tested);
    the simpler Spencer (1971) / Iqbal (1983) series was ~4e-4 AU off, so is not used.
    """
    return _noaa_sun(_as_utc(date, "date"))[0]


def solar_zenith(
    time_utc: _dt.datetime, lon: float | np.ndarray, lat: float | np.ndarray
) -> float | np.ndarray:
    """Solar zenith angle in degrees at time_utc for lon/lat in degrees (east/north positive;
    arrays broadcast). NOAA GML Solar Calculator equations (Meeus 1991) for declination and
    equation of time, then the hour angle; no refraction. Matches Landsat MTL SUN_ELEVATION
    at the scene centre to ~0.01° (tested)."""
    if not isinstance(time_utc, _dt.datetime):
        raise ValueError(f"time_utc must be a datetime.datetime, got {type(time_utc).__name__}")
    t = _as_utc(time_utc, "time_utc")
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    if np.any(~(np.abs(lat_a) <= 90)):
        raise ValueError(f"lat must lie in [-90, 90] degrees, got {lat!r}")
    if np.any(~(np.abs(lon_a) <= 360)):
        raise ValueError(f"lon must lie in [-360, 360] degrees, got {lon!r}")
    _, decl, eqtime = _noaa_sun(t)
    minutes = t.hour * 60.0 + t.minute + (t.second + t.microsecond * 1e-6) / 60.0
    true_solar_minutes = minutes + eqtime + 4.0 * lon_a
    hour_angle = np.deg2rad(true_solar_minutes / 4.0 - 180.0)
    phi = np.deg2rad(lat_a)
    cos_z = np.sin(phi) * math.sin(decl) + np.cos(phi) * math.cos(decl) * np.cos(hour_angle)
    zen = np.rad2deg(np.arccos(np.clip(cos_z, -1.0, 1.0)))
    return float(zen) if zen.ndim == 0 else zen
