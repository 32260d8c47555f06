"""A STAC datetime interval (``'a/b'``, ``'a/..'``, ``'../b'``, a date or a datetime) as an
inclusive UTC range: one parser for workflow specs and for ``aquila inspect``."""

from __future__ import annotations

import datetime as dt
from typing import Any


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
