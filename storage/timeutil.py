"""Time input: lenient ISO 8601 parsing and Windows time zone ids (as LMS365 uses) to IANA zones."""

from __future__ import annotations

from datetime import UTC, datetime, time
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


def parse_when(value: object, target: str, tz: ZoneInfo | None = None) -> datetime | None:
    """Parse an ISO 8601 date or date-time into a UTC instant.

    A value without a UTC offset is wall-clock time in `tz` (UTC when tz is None); a bare date is
    midnight. None and "" give None. Raises Invalid naming `target` for anything else.
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
        moment = moment.replace(tzinfo=tz or UTC)
    return moment.astimezone(UTC)


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
