"""Time input: lenient ISO 8601 parsing and Windows time zone ids (as LMS365 uses) to IANA zones."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from storage.errors import Invalid

_WHOLE = re.compile(r"[+-]?[0-9]+")  # int() would also take '1_000' and other scripts' digits

# Zones in the connector's TimeZone list that icalendar's CLDR table lacks.
_EXTRA_ZONES = {
    "Kamchatka Standard Time": "Asia/Kamchatka",
    "Mid-Atlantic Standard Time": "Etc/GMT+2",
    "UTC": "UTC",
}

# The instants a body may name (docs/limits.md, "Dates and numbers"): 1900-01-01T00:00:00Z up to, not
# including, 9999-01-01T00:00:00Z. Python's datetime stops at years 1 and 9999, so a value near either end
# overflows when its UTC offset or time zone moves it across; a day's margin on each side, and whole years
# that people can read, keep every conversion and every later `instant + days` (within MAX_DAYS) in range.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
# The largest number of days a body may give (DaysAfterEnrollment, DaysAfterCompletion): 100 years.
MAX_DAYS = 36_500


def windows_ids_for(iana: str) -> list[str]:
    """The Windows time zone ids (as `TimeZone` takes them) that keep the same clock as the IANA zone `iana`,
    for a message telling a client who sent `Europe/Copenhagen` to send `Romance Standard Time` (or another
    id with the same offsets and daylight-saving days); [] when `iana` is no zone or none matches.

    icalendar's table maps each Windows id to one zone only, so zones are compared by their UTC offsets at
    every day boundary of 2026 and 2027, which tells apart both offsets and daylight-saving rules."""
    if not 0 < len(iana) <= 64:  # IANA names are at most 14 characters per part; never open a long path
        return []
    try:
        wanted = _clock(ZoneInfo(iana.strip()))
    except (ValueError, OSError, ZoneInfoNotFoundError):
        return []
    names = {**WINDOWS_TO_OLSON, **_EXTRA_ZONES}
    return sorted(w for w, z in names.items() if _clock_of(z) == wanted)


_SAMPLES = tuple(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=d) for d in range(0, 730, 1))


@cache
def _clock_of(name: str) -> tuple[timedelta | None, ...] | None:
    try:
        return _clock(ZoneInfo(name))
    except (ValueError, ZoneInfoNotFoundError):
        return None


def _clock(tz: ZoneInfo) -> tuple[timedelta | None, ...]:
    return tuple(moment.astimezone(tz).utcoffset() for moment in _SAMPLES)


@cache
def zone(windows_id: str) -> ZoneInfo:
    """The IANA zone for a Windows time zone id; raises Invalid (target TimeZone) when unknown."""
    name = _EXTRA_ZONES.get(windows_id) or WINDOWS_TO_OLSON.get(windows_id)
    if name is None:
        raise Invalid(f"TimeZone {windows_id!r} is not a Windows time zone id", target="TimeZone")
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:  # pragma: no cover - tzdata ships every CLDR zone
        raise Invalid(f"TimeZone {windows_id!r} has no time zone data here", target="TimeZone") from None


def parse_when(
    value: object, target: str, tz: ZoneInfo | None = None, *, zone_name: str | None = None
) -> datetime | None:
    """Parse an ISO 8601 date or date-time into a UTC instant.

    A value with a UTC offset (`Z`, `+02:00`) is that instant. A value without one is wall-clock time in `tz`
    (UTC when tz is None), read by local_instant(): a local time that does not exist there (inside a
    daylight-saving gap) raises Invalid, and one that exists twice (the repeated hour when clocks go back)
    is its first occurrence. A bare date is the start of that day in `tz`. None and "" give None.

    Accepted instants run from EARLIEST (1900-01-01T00:00:00Z) up to LATEST (9999-01-01T00:00:00Z,
    excluded), both as written and after conversion to UTC; anything outside is Invalid naming `target`
    (rather than Python's OverflowError near years 1 and 9999). Raises Invalid naming `target` for anything
    else; `zone_name` (the Windows id the client sent) names the zone in messages.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Invalid(f"{target} must be an ISO 8601 date-time string", target=target)
    text = value.strip()
    try:
        if len(text) == 10:
            moment = datetime.combine(datetime.fromisoformat(text).date(), time())
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Invalid(
            f"{target}: {value!r} is not an ISO 8601 date-time such as 2026-05-04T09:00:00Z", target=target
        ) from None
    # Checked as written first, so that no conversion below can overflow; then as an instant.
    if not EARLIEST.year <= moment.year < LATEST.year:
        raise _out_of_range(value, target)
    if moment.tzinfo is None:
        instant = local_instant(moment, tz or UTC, target, start_of_day=len(text) == 10, zone_name=zone_name)
    else:
        instant = moment.astimezone(UTC)
    if not EARLIEST <= instant < LATEST:
        raise _out_of_range(value, target)
    return instant


def _out_of_range(value: object, target: str) -> Invalid:
    return Invalid(
        f"{target}: {value!r} is outside the dates accepted, 1900-01-01T00:00:00Z to 9998-12-31T23:59:59Z",
        target=target,
    )


def local_instant(
    local: datetime, tz: tzinfo, target: str, *, start_of_day: bool = False, zone_name: str | None = None
) -> datetime:
    """The UTC instant of a wall-clock time (a naive datetime) in `tz`.

    - A time inside a daylight-saving gap (02:30 on the night clocks jump from 02:00 to 03:00) never happens
      there: Invalid naming `target`, the local time and the gap, rather than a guess. With `start_of_day`
      (a bare date whose midnight falls in a gap, as in zones that change at 00:00) it is the first moment of
      that day, the end of the gap.
    - A time that happens twice (01:30 on the night clocks go back from 02:00 to 01:00) is the first
      occurrence, the one before the clocks go back, as RFC 5545 §3.3.5 reads such a DATE-TIME with a TZID
      (`fold=0`, PEP 495).
    """
    first = local.replace(tzinfo=tz, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local:
        return instant
    transition, before, after = _transition(local, tz)
    if start_of_day:
        return transition
    name = getattr(tz, "key", str(tz))
    label = f"{zone_name} ({name})" if zone_name and zone_name != name else name
    wall = transition.replace(tzinfo=None)
    shown = "%H:%M" if (wall + before).date() == (wall + after).date() else "%Y-%m-%dT%H:%M"
    raise Invalid(
        f"{target}: {local.isoformat()} does not exist in {label}: that day the clocks go forward from"
        f" {wall + before:{shown}} to {wall + after:{shown}}; give a time outside the gap, or a UTC offset",
        target=target,
    )


def _transition(local: datetime, tz: tzinfo) -> tuple[datetime, timedelta, timedelta]:
    """The transition that skipped the wall-clock time `local` in `tz`: its UTC instant, and the UTC offsets
    before and after it.

    PEP 495: for a skipped time, `fold=0` reads it with the offset in force before the transition and `fold=1`
    with the one after, so the transition lies between the two readings; it is found by bisection on whole
    seconds (tz database transitions are whole seconds).
    """
    before = local.replace(tzinfo=tz, fold=0).utcoffset()
    after = local.replace(tzinfo=tz, fold=1).utcoffset()
    assert before is not None and after is not None
    epoch = int(local.replace(tzinfo=UTC).timestamp())
    low, high = epoch - int(after.total_seconds()), epoch - int(before.total_seconds())
    while high - low > 1:  # the offset is `before` at `low` and `after` at `high`
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC), before, after


def parse_days(value: object, target: str, *, limit: int = MAX_DAYS) -> int | None:
    """Parse a whole number of days, 0 to `limit` (MAX_DAYS, 100 years, by default), given as a string or a
    number (the connector sends strings). None and "" give None; anything else is Invalid naming `target`."""
    return parse_count(value, target, low=0, high=limit, unit="days")


def parse_count(value: object, target: str, *, low: int, high: int, unit: str = "") -> int | None:
    """Parse a whole number from low to high inclusive, given as a string (as the connector sends numbers
    such as MaxAttendees) or a JSON integer. None and "" give None. A fraction, a bool, text, or a number
    out of range is Invalid naming `target` and the range: such numbers reach date arithmetic and SQLite
    INTEGER columns, where an unchecked one fails later, for everyone, with an OverflowError."""
    if value is None or value == "":
        return None
    text = value.strip() if isinstance(value, str) else ""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif _WHOLE.fullmatch(text):
        # More digits than any range here has cannot be in it (and int() refuses over 4,300 digits).
        number = int(text) if len(text) <= 20 else high + 1
    else:
        raise Invalid(f"{target}: {value!r} is not a whole number{f' of {unit}' if unit else ''}", target=target)
    if not low <= number <= high:
        raise Invalid(f"{target} must be from {low:,} to {high:,}{f' {unit}' if unit else ''}", target=target)
    return number


def clamp_days(days: int, limit: int = MAX_DAYS) -> int:
    """A stored number of days within 0..limit: values written before parse_days checked the range
    (DaysAfterEnrollment of 3,000,000) are read as the nearest accepted value rather than overflowing."""
    return min(max(days, 0), limit)


def add_days(moment: datetime, days: int) -> datetime:
    """`moment` plus `days` (clamped by clamp_days), kept before LATEST: never an OverflowError."""
    return min(moment + timedelta(days=clamp_days(days)), LATEST - timedelta(microseconds=1))
