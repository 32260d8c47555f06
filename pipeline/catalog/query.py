"""What a search asks for: the search terms, STAC datetime intervals and CQL2 filters.

* :class:`SearchQuery`: collections, bbox or area, datetime range, STAC API Query terms and a
  CQL2 filter, normalised once by the workflow layer.
* A STAC datetime interval (``'a/b'``, ``'a/..'``, ``'../b'``, a date or a datetime) as an
  inclusive UTC range (:func:`parse_datetime_range`): one parser for workflow specs and for
  ``aquila inspect``.
* CQL2 filters: parsed and validated once (the spec, a search), evaluated on items here when the
  source cannot (a static catalog, an API without the Filter conformance class; see
  :class:`pipeline.catalog.source.Matcher`). A filter is CQL2 text, or CQL2 JSON as a mapping or a
  string starting with ``{`` -- the rule ``cql2.Expr`` applies, through the parsers that raise
  :class:`cql2.ParseError` rather than a bare ``Exception``.

Light on purpose (no geometry or STAC libraries): the spec imports it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import cql2


@dataclass(frozen=True)
class SearchQuery:
    """What to look for; normalised once by the workflow layer. Lon/lat degrees, UTC."""

    collections: tuple[str, ...] | None = None
    bbox: tuple[float, float, float, float] | None = None  # west, south, east, north
    datetime: tuple[dt.datetime | None, dt.datetime | None] | None = None  # inclusive; None open
    intersects: Mapping[str, Any] | None = None  # GeoJSON geometry (an area of interest)
    query: Mapping[str, Mapping[str, Any]] | None = None  # STAC API Query: {prop: {op: value}}
    filter: Mapping[str, Any] | str | None = None  # CQL2 JSON (dict) or CQL2 text (str)
    page_size: int = 100  # items per API page


# --------------------------------------------------------------------------- datetime


def parse_datetime_range(value: Any) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Normalise 'a/b', 'a/..', '../b', a date or a datetime into an inclusive UTC range."""
    if isinstance(value, dt.datetime):
        v = _utc(value)
        return v, v
    if isinstance(value, dt.date):
        return _day_start(value), _day_end(value)
    if not isinstance(value, str):
        raise ValueError("datetime is 'START/END' (either may be '..'), a date, or a datetime")
    parts = value.split("/")
    if len(parts) == 1:
        return parse_datetime_range(_parse_instant(parts[0]))
    if len(parts) != 2:
        raise ValueError(f"datetime {value!r}: expected 'START/END'")
    start = _parse_bound(parts[0], end=False)
    end = _parse_bound(parts[1], end=True)
    if start and end and start > end:
        raise ValueError(f"datetime {value!r}: start is after end")
    return start, end


def _parse_instant(text: str) -> dt.date | dt.datetime:
    text = text.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or datetime") from None


def _parse_bound(text: str, *, end: bool) -> dt.datetime | None:
    if text.strip() in ("", ".."):
        return None
    instant = _parse_instant(text)
    if isinstance(instant, dt.datetime):
        return _utc(instant)
    return _day_end(instant) if end else _day_start(instant)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _day_end(day: dt.date) -> dt.datetime:
    return _day_start(day) + dt.timedelta(days=1) - dt.timedelta(microseconds=1)


# --------------------------------------------------------------------------- CQL2


def parse_filter(value: Mapping[str, Any] | str) -> cql2.Expr:
    """The validated expression of a CQL2 filter; raises ``ValueError`` saying why it is not
    one (chained from cql2's error)."""
    import cql2

    try:
        if isinstance(value, str):
            expr = cql2.parse_json(value) if value.startswith("{") else cql2.parse_text(value)
        else:
            expr = cql2.parse_json(json.dumps(value))  # TypeError: not JSON (e.g. a date)
        expr.validate()
    except (cql2.ParseError, cql2.ValidationError, TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc
    return expr


def unevaluated(expr: cql2.Expr, item: Mapping[str, Any]) -> str | None:
    """What is left of ``expr`` once reduced against ``item``, as CQL2 text: the part that could
    not be evaluated (a property the item lacks, a value of the wrong type); None if even that
    cannot be said."""
    try:
        return expr.reduce(dict(item)).to_text()
    except Exception:  # noqa: BLE001 - cql2 raises a bare Exception; this only words a reject
        return None
