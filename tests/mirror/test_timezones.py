"""Windows time zone names for Graph (calendars.timezones): the names Outlook shows, and the same clock."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from calendars.timezones import canonical_zone, iana_zone, windows_zone


@pytest.mark.parametrize(
    ("iana", "windows"),
    [
        ("Europe/Berlin", "W. Europe Standard Time"),
        ("America/New_York", "Eastern Standard Time"),
        ("Asia/Kolkata", "India Standard Time"),
        ("Asia/Calcutta", "India Standard Time"),  # CLDR's own (legacy) name
        ("Europe/Kyiv", "FLE Standard Time"),  # CLDR still says Europe/Kiev
        ("America/Indiana/Indianapolis", "US Eastern Standard Time"),
        ("Europe/Oslo", "W. Europe Standard Time"),  # a link to Europe/Berlin since tzdata 2022b
        ("UTC", "UTC"),
        ("Etc/UTC", "UTC"),
        ("Australia/Sydney", "AUS Eastern Standard Time"),
    ],
)
def test_windows_names_of_iana_zones(iana: str, windows: str) -> None:
    """A session's IANA zone reaches Graph under the Windows name Outlook knows, legacy and current names alike."""
    assert windows_zone(iana) == windows


def test_every_windows_name_round_trips() -> None:
    """Each of CLDR's Windows names leads to a current IANA zone that leads back to the same name."""
    assert len(WINDOWS_TO_OLSON) >= 139
    for windows in WINDOWS_TO_OLSON:
        iana = iana_zone(windows)
        assert iana is not None
        ZoneInfo(iana)  # loads
        assert canonical_zone(iana) == iana, f"{windows}: {iana} is a link"
        assert windows_zone(iana) == windows, windows


def test_current_names_replace_cldr_legacy_ones() -> None:
    """Back from Graph, India Standard Time is Asia/Kolkata, not CLDR's Asia/Calcutta."""
    assert iana_zone("India Standard Time") == "Asia/Kolkata"
    assert iana_zone("FLE Standard Time") == "Europe/Kyiv"
    assert iana_zone("UTC") == "Etc/UTC"


def test_a_windows_name_keeps_the_zones_clock() -> None:
    """Every IANA zone that gets a Windows name has that name's offsets and daylight-saving days (2026-2035)."""
    samples = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=12 * n) for n in range(0, 2 * 365 * 10, 7)]
    checked = 0
    for iana in sorted(zoneinfo.available_timezones()):
        windows = windows_zone(iana)
        if windows is None:
            continue
        target = ZoneInfo(WINDOWS_TO_OLSON[windows])
        mine = ZoneInfo(iana)
        assert [s.astimezone(mine).utcoffset() for s in samples] == [
            s.astimezone(target).utcoffset() for s in samples
        ], f"{iana} -> {windows}"
        checked += 1
    assert checked > 139  # the links count too, not only CLDR's own names


def test_unknown_names() -> None:
    """No Windows name for an unknown zone or one CLDR's 001 table lacks (Graph writes then use UTC times)."""
    assert windows_zone("Mars/Olympus_Mons") is None
    assert windows_zone("W. Europe Standard Time") is None
    assert windows_zone("Europe/Vienna") is None
    assert iana_zone("Nowhere Standard Time") is None
