"""A CRS's unit, and a pixel size written in it (``10 m``, ``0.00025°``), for the lines a person
reads (plan summaries, ``catalog inspect``). Its own small module: the plan's text needs it, and
a Dask worker, which imports the plan's data model, has no use for the catalog's item parsers."""

from __future__ import annotations

from functools import lru_cache

_UNIT_SYMBOLS = {
    "degree": "°",
    "metre": "m",
    "meter": "m",
    "kilometre": "km",
    "foot": "ft",
    "us survey foot": "US ft",
}


@lru_cache(maxsize=256)
def crs_unit(crs: str) -> str:
    """The unit of a CRS's horizontal axes as a short symbol (``m``, ``°``, ``ft``...), from
    pyproj's axis information; ``""`` when pyproj cannot tell."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        axes = CRS.from_user_input(crs).axis_info
    except CRSError:
        return ""
    if not axes:
        return ""
    name = axes[0].unit_name.lower()
    return _UNIT_SYMBOLS.get(name, name)


def pixel_size_text(crs: str, size: float) -> str:
    """A pixel size in its CRS's unit: ``10 m``, ``0.00025°``, ``30 US ft`` (never metres for
    a geographic CRS)."""
    unit = crs_unit(crs)
    if unit == "°":
        return f"{size:g}°"
    return f"{size:g} {unit}".rstrip()
