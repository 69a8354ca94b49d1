"""Time input: lenient ISO 8601 parsing and Windows time zone ids (as LMS365 uses) to IANA zones."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from storage.errors import Invalid

# Zones in the connector's TimeZone list that icalendar's CLDR table lacks.
_EXTRA_ZONES = {
    "Kamchatka Standard Time": "Asia/Kamchatka",
    "Mid-Atlantic Standard Time": "Etc/GMT+2",
    "UTC": "UTC",
}


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
    is its first occurrence. A bare date is the start of that day in `tz`. None and "" give None. Raises
    Invalid naming `target` for anything else; `zone_name` (the Windows id the client sent) names the zone
    in messages.
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
    if moment.tzinfo is None:
        return local_instant(moment, tz or UTC, target, start_of_day=len(text) == 10, zone_name=zone_name)
    return moment.astimezone(UTC)


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


def parse_days(value: object, target: str) -> int | None:
    """Parse a whole number of days given as a string or a number (the connector sends strings)."""
    if value is None or value == "":
        return None
    try:
        days = int(str(value).strip())
    except ValueError:
        raise Invalid(f"{target}: {value!r} is not a whole number of days", target=target) from None
    if days < 0:
        raise Invalid(f"{target} must not be negative", target=target)
    return days
