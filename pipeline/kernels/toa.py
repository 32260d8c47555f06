"""Sun geometry for top-of-atmosphere radiometry: the Earth-Sun distance and the solar zenith.

Plain NumPy (no numba): :func:`earth_sun_distance` is the ``d`` of TOA reflectance
``ρ = π L d² / (ESUN cos θs)`` when a scene's metadata gives none
(:mod:`pipeline.catalog.sensors.context`), and :func:`solar_zenith` the per-pixel ``θs`` of a
scene without a sun elevation (:mod:`pipeline.plan.calibration`). The TOA maths itself is folded
into one scale/offset per band and applied by :func:`pipeline.kernels.calibrate.gather_calibrate`.
"""

from __future__ import annotations

import datetime as _dt
import math

import numpy as np

__all__ = [
    "earth_sun_distance",
    "solar_zenith",
]


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
