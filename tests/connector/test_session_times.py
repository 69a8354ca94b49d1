"""Session times that say one thing: StartDate/EndDate sent with Days must agree with them, a wall-clock time
inside a daylight-saving gap is refused naming the field and the time, and a repeated wall-clock time is its
first occurrence (RFC 5545 §3.3.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from support import Api, World, build_world, error

from storage.errors import Invalid
from storage.timeutil import local_instant

PACIFIC = "Pacific Standard Time"  # America/Los_Angeles: 2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00


def _create(api: Api, world: World, **body: Any) -> Any:
    return api.post(
        f"/odata/v2/Courses({world.course['Id']})/CourseSessions",
        json={"Title": "Evening", "TimeZone": PACIFIC, **body},
    )


TWO_DAYS = [
    {"StartDate": "2030-05-06T09:00:00", "EndDate": "2030-05-06T12:00:00"},
    {"StartDate": "2030-05-07T09:00:00", "EndDate": "2030-05-07T12:00:00"},
]


def test_the_issue_example_start_and_end_that_contradict_the_days_are_refused(api: Api) -> None:
    """The issue's example: StartDate/EndDate that contradict Days were dropped silently (the days won). Now
    each is a 400 naming it; the same instants, written in local time or in UTC, are accepted."""
    world = build_world(api)
    start = _create(api, world, StartDate="2030-05-06T10:00:00", EndDate="2030-05-07T12:00:00", Days=TWO_DAYS)
    assert start.status_code == 400 and error(start)["target"] == "StartDate", start.text
    assert "2030-05-06T16:00:00" in error(start)["message"], error(start)  # the first day's start, in UTC
    end = _create(api, world, StartDate="2030-05-06T09:00:00", EndDate="2030-05-06T12:00:00", Days=TWO_DAYS)
    assert end.status_code == 400 and error(end)["target"] == "EndDate", end.text
    agreed = _create(api, world, StartDate="2030-05-06T16:00:00Z", EndDate="2030-05-07T12:00:00", Days=TWO_DAYS)
    assert agreed.status_code == 200, agreed.text
    assert [d["StartDate"][:19] for d in agreed.json()["Days"]] == ["2030-05-06T16:00:00", "2030-05-07T16:00:00"]
    alone = _create(api, world, StartDate="2030-05-06T09:00:00", EndDate="2030-05-06T12:00:00")
    assert alone.status_code == 200, alone.text


def test_a_patch_of_start_and_end_contradicting_new_days_is_refused(api: Api) -> None:
    """The same rule holds for UpdateCourseSession, and nothing changes when it refuses."""
    world = build_world(api)
    path = f"/odata/v2/CourseSessions({world.session['Id']})"
    before = api.ok("GET", path)
    response = api.patch(
        path,
        json={
            "Days": [{"StartDate": "2030-04-02T09:00:00Z", "EndDate": "2030-04-02T12:00:00Z"}],
            "StartDate": "2030-04-01T09:00:00Z",
        },
    )
    assert response.status_code == 400 and error(response)["target"] == "StartDate", response.text
    assert api.ok("GET", path) == before


def test_a_multi_day_session_keeps_its_days_when_its_dates_or_time_zone_are_sent_as_they_are(api: Api) -> None:
    """A session of several days sent back with StartDate/EndDate as read is unchanged (it was a 400 asking for
    Days), and a new TimeZone alone keeps every day (it merged them into one spanning day)."""
    world = build_world(api)
    created = _create(api, world, StartDate="2030-05-06T09:00:00", EndDate="2030-05-07T12:00:00", Days=TWO_DAYS)
    assert created.status_code == 200, created.text
    session = created.json()
    path = f"/odata/v2/CourseSessions({session['Id']})"
    same = api.ok("PATCH", path, json={"StartDate": session["StartDate"], "EndDate": session["EndDate"]})
    assert same["Days"] == session["Days"]
    moved = api.patch(path, json={"StartDate": "2030-05-06T08:00:00"})
    assert moved.status_code == 400 and error(moved)["target"] == "Days"
    zoned = api.ok("PATCH", path, json={"TimeZone": "GMT Standard Time"})
    assert zoned["Days"] == session["Days"] and zoned["TimeZone"] == "GMT Standard Time"


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("StartDate", {"StartDate": "2026-03-08T02:30:00", "EndDate": "2026-03-08T03:15:00"}),
        ("EndDate", {"StartDate": "2026-03-08T01:00:00", "EndDate": "2026-03-08T02:45:00"}),
        (
            "Days[1].StartDate",
            {
                "StartDate": "2026-03-07T09:00:00",
                "EndDate": "2026-03-08T04:00:00",
                "Days": [
                    {"StartDate": "2026-03-07T09:00:00", "EndDate": "2026-03-07T12:00:00"},
                    {"StartDate": "2026-03-08T02:00:00", "EndDate": "2026-03-08T04:00:00"},
                ],
            },
        ),
        (
            "EnrollmentDeadline",
            {
                "StartDate": "2026-03-09T09:00:00",
                "EndDate": "2026-03-09T10:00:00",
                "EnrollmentDeadline": "2026-03-08T02:59:59",
            },
        ),
    ],
)
def test_the_issue_example_a_local_time_in_a_daylight_saving_gap_is_refused_naming_it(
    api: Api, field: str, body: dict[str, Any]
) -> None:
    """The issue's example: a session from 02:30 to 03:15 on the night Los Angeles skips 02:00-03:00 answered
    "the end must be after the start" (02:30 was read as 03:30). Now every local time in the gap is a 400 naming
    its field, the local time and the gap."""
    world = build_world(api)
    response = _create(api, world, **body)
    assert response.status_code == 400, response.text
    problem = error(response)
    assert problem["target"] == field
    local = (
        body.get("EnrollmentDeadline")
        or (body["Days"][1]["StartDate"] if "Days" in body else None)
        or body[field if field in body else "StartDate"]
    )
    assert local in problem["message"] and "02:00 to 03:00" in problem["message"], problem
    assert "does not exist in Pacific Standard Time (America/Los_Angeles)" in problem["message"], problem


def test_a_repeated_local_time_is_its_first_occurrence(api: Api) -> None:
    """01:30 on the night Los Angeles goes back from 02:00 to 01:00 happens twice: it is the first, 01:30 PDT
    (08:30Z), as RFC 5545 §3.3.5 reads it; an explicit offset names the second."""
    world = build_world(api)
    first = _create(api, world, StartDate="2026-11-01T01:30:00", EndDate="2026-11-01T03:00:00")
    assert first.status_code == 200, first.text
    assert first.json()["StartDate"].startswith("2026-11-01T08:30:00")
    assert first.json()["EndDate"].startswith("2026-11-01T11:00:00")
    second = _create(api, world, StartDate="2026-11-01T01:30:00-08:00", EndDate="2026-11-01T03:00:00")
    assert second.json()["StartDate"].startswith("2026-11-01T09:30:00"), second.text


def test_a_bare_date_whose_midnight_is_skipped_is_the_first_moment_of_that_day(api: Api) -> None:
    """Havana moves its clocks from 00:00 to 01:00: a deadline given as that date is 01:00 local, not an error."""
    world = build_world(api)
    response = api.post(
        f"/odata/v2/Courses({world.course['Id']})/CourseSessions",
        json={
            "Title": "Havana",
            "TimeZone": "Cuba Standard Time",
            "StartDate": "2026-03-10T09:00:00",
            "EndDate": "2026-03-10T10:00:00",
            "EnrollmentDeadline": "2026-03-08",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["EnrollmentDeadline"].startswith("2026-03-08T05:00:00")


ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))


@given(
    zone=st.sampled_from(ZONES),
    local=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)).map(
        lambda d: d.replace(second=0, microsecond=0)
    ),
)
@example(zone="America/Los_Angeles", local=datetime(2026, 3, 8, 2, 30))
@example(zone="America/Los_Angeles", local=datetime(2026, 11, 1, 1, 30))
@example(zone="Australia/Lord_Howe", local=datetime(2026, 10, 4, 2, 15))
def test_a_local_time_is_refused_only_in_a_gap_and_is_otherwise_its_earliest_instant(
    zone: str, local: datetime
) -> None:
    """For any zone and wall-clock time: local_instant refuses exactly the times no instant shows, and otherwise
    returns the earliest instant that shows it (the first occurrence of a repeated time)."""
    tz = ZoneInfo(zone)
    # Every instant that reads as `local` lies within a day of it taken as UTC; offsets step at most hourly.
    candidates = [
        moment
        for minutes in range(-26 * 60, 26 * 60 + 1, 15)
        if (moment := local.replace(tzinfo=UTC) + timedelta(minutes=minutes)).astimezone(tz).replace(tzinfo=None)
        == local
    ]
    try:
        instant = local_instant(local, tz, "StartDate")
    except Invalid as refused:
        assert candidates == [], (zone, local)
        assert refused.target == "StartDate" and local.isoformat() in str(refused)
        return
    assert candidates and instant == min(candidates), (zone, local, instant, candidates)
