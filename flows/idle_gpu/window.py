"""The night window: "01:00"-"07:00" in a timezone, or explicit ISO datetimes (tests, one-offs)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flows.common.errors import BadInput


def zone(name: str) -> tzinfo:
    if name == "local":
        return datetime.now().astimezone().tzinfo  # type: ignore[return-value]
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(f"unknown timezone {name!r} (expected an IANA name such as Europe/Paris, or 'local')") from None


def _parse(value: str, tz: tzinfo) -> time | datetime:
    try:
        return time.fromisoformat(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(f"window time {value!r} is neither HH:MM nor an ISO 8601 datetime") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=tz)


YEARS = (1970, 9000)  # plausible instants; near year 9999 date arithmetic overflows


def _plausible(dt: datetime, what: str) -> datetime:
    if not YEARS[0] <= dt.year <= YEARS[1]:
        raise BadInput(f"{what} {dt.isoformat()} is outside the years {YEARS[0]}-{YEARS[1]}")
    return dt


def resolve_window(start: str, end: str, timezone: str, now: datetime) -> tuple[datetime, datetime]:
    """The window in progress at ``now``, else the next one. Times of day repeat nightly."""
    tz = zone(timezone)
    _plausible(now, "now (--now, or the snapshot's taken_at)")
    s, e = _parse(start, tz), _parse(end, tz)
    for v, what in ((s, "window start"), (e, "window end")):
        if isinstance(v, datetime):
            _plausible(v, what)
    if isinstance(s, datetime) != isinstance(e, datetime):
        raise BadInput("window start and end must both be times of day or both be datetimes")
    if isinstance(s, datetime) and isinstance(e, datetime):
        if e <= s:
            raise BadInput(f"window end {end} is not after its start {start}")
        return s, e
    assert isinstance(s, time) and isinstance(e, time)
    if s.replace(tzinfo=None) == e.replace(tzinfo=None):
        raise BadInput(f"window start and end are both {start}")
    local_now = now.astimezone(tz)
    for day in (-1, 0, 1):
        d = local_now.date() + timedelta(days=day)
        ws = datetime.combine(d, s.replace(tzinfo=None), tz)
        we = datetime.combine(d, e.replace(tzinfo=None), tz)
        if we <= ws:
            we += timedelta(days=1)
        if we > local_now:
            return ws, we
    raise AssertionError("unreachable: a window always ends within two days")
