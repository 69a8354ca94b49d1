"""Numbers and dates a body sets have a range, checked when written: a course admin cannot store a value
that later breaks date arithmetic or a SQLite integer for everyone (docs/limits.md, "Dates and numbers")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import Api, World, build_world, error

from storage.timeutil import zone

# The documented ranges (docs/limits.md), written out rather than imported so the test says them itself.
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)
MAX_DAYS = 36_500

DUE = "DueDateSettings.DaysAfterEnrollment"
EXPIRY = "ExpirySettings.DaysAfterCompletion"


def _course(api: Api, world: World) -> str:
    return f"/odata/v2/Courses({world.course['Id']})"


def _settings_body(field: str, value: Any) -> dict[str, Any]:
    group, name = field.split(".")
    return {group: {"IsEnabled": True, name: value}}


def _enroll(api: Api, world: World, name: str) -> Any:
    body = {"userLoginName": world.login(name), "courseSessionId": world.session["Id"]}
    return api.post(f"{_course(api, world)}/Enroll", json=body)


@pytest.mark.parametrize("field", [DUE, EXPIRY])
@pytest.mark.parametrize("value", ["3000000", "9999999999", "36501", "-1", 36501, "1e3", "٣", "1_000"])
def test_a_day_count_out_of_range_is_refused_naming_it(api: Api, field: str, value: Any) -> None:
    """The issue's example: DaysAfterEnrollment "3000000" was stored (200) and every Enroll then failed with
    500. Now a count outside 0..36,500, or not written as plain digits, is a 400 naming the field."""
    world = build_world(api)
    response = api.patch(_course(api, world), json=_settings_body(field, value))
    assert response.status_code == 400, response.text
    assert error(response)["target"] == field, response.text
    assert _enroll(api, world, "ann").status_code == 200


@pytest.mark.parametrize("field", [DUE, EXPIRY])
def test_the_largest_day_count_is_accepted_and_enrollment_works(api: Api, field: str) -> None:
    """36,500 days (100 years) is accepted, and enrolling under it gives a due date 36,500 days on."""
    world = build_world(api)
    api.ok("PATCH", _course(api, world), json=_settings_body(field, str(MAX_DAYS)))
    enrolled = api.ok("POST", f"{_course(api, world)}/Enroll", json={"userLoginName": world.login("ann")})
    if field == DUE:
        due = datetime.fromisoformat(enrolled["DueDate"].replace("Z", "+00:00"))
        assert due == api.db.clock() + timedelta(days=MAX_DAYS)


@pytest.mark.parametrize("stored", [3_000_000, 9_999_999_999, -5])
def test_a_day_count_stored_before_the_range_does_not_break_enrollment(api: Api, stored: int) -> None:
    """A DaysAfterEnrollment written before the range existed is read as the nearest accepted value: enrolling
    answers 200 (it was a 500, OverflowError) and the course still reads back."""
    world = build_world(api)
    api.ok("PATCH", _course(api, world), json=_settings_body(DUE, "10"))
    with api.db.write() as conn:
        conn.execute(
            "UPDATE courses SET due_days_after_enrollment = ?, expiry_days_after_completion = ? WHERE id = ?",
            (stored, stored, world.course["Id"]),
        )
    enrolled = api.ok("POST", f"{_course(api, world)}/Enroll", json={"userLoginName": world.login("ann")})
    due = datetime.fromisoformat(enrolled["DueDate"].replace("Z", "+00:00"))
    assert due == api.db.clock() + timedelta(days=min(max(stored, 0), MAX_DAYS))
    api.ok("GET", f"{_course(api, world)}?$expand=DueDate,CertificateExpiry")


@pytest.mark.parametrize("value", [10_001, -0.5, 1e308])
def test_ceu_out_of_range_is_refused_naming_it(api: Api, value: float) -> None:
    """CEU is a number from 0 to 10,000 (Course.CEU is read back as an Int32)."""
    world = build_world(api)
    response = api.patch(_course(api, world), json={"CEU": value})
    assert response.status_code == 400 and error(response)["target"] == "CEU", response.text
    api.ok("PATCH", _course(api, world), json={"CEU": 10_000})
    assert api.ok("GET", _course(api, world))["CEU"] == 10_000


def test_max_attendees_out_of_range_is_refused_naming_it(api: Api) -> None:
    """MaxAttendees is 1 to 100,000 in a create (a string) and in an update (an integer); 10**30 in an update
    reached SQLite and failed with 500."""
    world = build_world(api)
    sessions = f"{_course(api, world)}/CourseSessions"
    body = {"Title": "T", "TimeZone": "UTC", "StartDate": "2030-05-01T09:00:00Z", "EndDate": "2030-05-01T10:00:00Z"}
    for sent in ("100001", "9999999999", "0", "1.5"):
        response = api.post(sessions, json={**body, "MaxAttendees": sent})
        assert response.status_code == 400 and error(response)["target"] == "MaxAttendees", (sent, response.text)
    created = api.ok("POST", sessions, json={**body, "MaxAttendees": "100000"})
    assert created["MaxAttendees"] == 100_000
    path = f"/odata/v2/CourseSessions({created['Id']})"
    for sent in (100_001, 10**30):
        response = api.patch(path, json={"MaxAttendees": sent})
        assert response.status_code == 400 and error(response)["target"] == "MaxAttendees", (sent, response.text)
    assert api.ok("PATCH", path, json={"MaxAttendees": 100_000})["MaxAttendees"] == 100_000


# ----------------------------------------------------------------------------------------------- dates

SESSION_BODY = {"Title": "T", "TimeZone": "Pacific Standard Time", "EndDate": "2026-03-08T04:00:00"}


@pytest.mark.parametrize(
    ("changes", "target"),
    [
        ({"StartDate": "0001-01-01T00:00:00+14:00"}, "StartDate"),
        ({"StartDate": "2026-03-07T04:00:00", "EndDate": "9999-12-31T23:59:59-12:00"}, "EndDate"),
        ({"TimeZone": "Tonga Standard Time", "StartDate": "0001-01-01T00:00:00"}, "StartDate"),
        (
            {
                "TimeZone": "Hawaiian Standard Time",
                "StartDate": "2026-03-07T04:00:00",
                "EndDate": "9999-12-31T10:00:00",
            },
            "EndDate",
        ),
        ({"StartDate": "2026-03-07T04:00:00", "EnrollmentDeadline": "0001-01-01T00:00:00+01:00"}, "EnrollmentDeadline"),
    ],
)
def test_the_issue_extreme_session_dates_are_refused_naming_the_field(
    api: Api, changes: dict[str, str], target: str
) -> None:
    """The issue's examples: dates near years 1 and 9999 that overflow when converted answered 500."""
    world = build_world(api)
    response = api.post(f"{_course(api, world)}/CourseSessions", json={**SESSION_BODY, **changes})
    assert response.status_code == 400, response.text
    assert error(response)["target"] == target and "1900-01-01" in error(response)["message"], response.text


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("1900-01-01T00:00:00Z", True),
        ("1900-01-01", True),
        ("9998-12-31T23:59:59.999999Z", True),
        ("1899-12-31T23:59:59Z", False),
        ("1900-01-01T00:00:00+00:01", False),
        ("9999-01-01T00:00:00Z", False),
        ("9998-12-31T23:00:00-01:00", False),
    ],
)
def test_the_range_of_dates_ends_exactly_where_documented(api: Api, value: str, accepted: bool) -> None:
    """Instants from 1900-01-01T00:00:00Z up to, not including, 9999-01-01T00:00:00Z are accepted."""
    world = build_world(api)
    response = api.patch(_course(api, world), json={"DueDateSettings": {"IsEnabled": True, "FixedDate": value}})
    assert response.status_code == (200 if accepted else 400), response.text
    if not accepted:
        assert error(response)["target"] == "DueDateSettings.FixedDate"


WINDOWS = [
    "UTC",
    "Tonga Standard Time",
    "Line Islands Standard Time",
    "Dateline Standard Time",
    "Hawaiian Standard Time",
]
SESSION_FIELDS = ["StartDate", "EndDate", "EnrollmentDeadline", "Days[0].StartDate", "Days[0].EndDate"]
COURSE_FIELDS = [
    "PublishingSettings.StartDate",
    "PublishingSettings.EndDate",
    "ExpirySettings.FixedDate",
    "DueDateSettings.FixedDate",
]
EXTREME = st.one_of(
    st.datetimes(max_value=datetime(1, 1, 3)),
    st.datetimes(min_value=datetime(9998, 12, 30)),
    st.datetimes(min_value=datetime(1899, 12, 31), max_value=datetime(1900, 1, 2)),
)
OFFSET = st.one_of(st.none(), st.just("Z"), st.integers(-14 * 60, 14 * 60).map(lambda m: m * 60))


def _text(local: datetime, offset: int | str | None) -> str:
    if offset is None or offset == "Z":
        return local.isoformat() + (offset or "")
    sign, seconds = ("+" if offset >= 0 else "-"), abs(offset)
    return f"{local.isoformat()}{sign}{seconds // 3600:02}:{seconds % 3600 // 60:02}"


def _in_range(local: datetime, offset: int | str | None, windows: str) -> bool:
    """Whether the instant written is accepted, worked out without the code under test (conversion errors
    near years 1 and 9999 mean it is not)."""
    if not 1900 <= local.year <= 9998:
        return False
    try:
        if offset is None:
            aware = local.replace(tzinfo=ZoneInfo(zone(windows).key))
        else:
            aware = local.replace(tzinfo=UTC) - timedelta(seconds=0 if offset == "Z" else int(offset))
        return EARLIEST <= aware.astimezone(UTC) < LATEST
    except OverflowError:
        return False


def _put(body: dict[str, Any], field: str, value: str) -> dict[str, Any]:
    if field.startswith("Days[0]."):
        day = {"StartDate": "2030-06-01T09:00:00Z", "EndDate": "2030-06-01T10:00:00Z", field[8:]: value}
        return {**body, "Days": [day]}  # StartDate and EndDate are required; out of range, the day fails first
    if "." in field:
        group, name = field.split(".")
        return {**body, group: {"IsEnabled": True, name: value}}
    return {**body, field: value}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(SESSION_FIELDS + COURSE_FIELDS),
    local=EXTREME,
    offset=OFFSET,
    windows=st.sampled_from(WINDOWS),
)
@example(field="StartDate", local=datetime(1, 1, 1), offset=14 * 3600, windows="Pacific Standard Time")
@example(field="EndDate", local=datetime(9999, 12, 31, 23, 59, 59), offset=-12 * 3600, windows="UTC")
@example(field="StartDate", local=datetime(1, 1, 1), offset=None, windows="Tonga Standard Time")
@example(field="EndDate", local=datetime(9999, 12, 31, 10), offset=None, windows="Hawaiian Standard Time")
@example(field="EnrollmentDeadline", local=datetime(1, 1, 1), offset=3600, windows="UTC")
@example(field="DueDateSettings.FixedDate", local=datetime(1, 1, 1), offset=3600, windows="UTC")
@example(field="PublishingSettings.EndDate", local=datetime(9999, 12, 31, 23), offset=-3600, windows="UTC")
def test_no_date_field_answers_500_and_out_of_range_is_refused_naming_it(
    api: Api, field: str, local: datetime, offset: int | str | None, windows: str
) -> None:
    """For every date a body sets, any value near the ends of Python's calendar, with any UTC offset or none
    (wall-clock time in the session's zone), is accepted or refused with a 400, never a 500; an instant
    outside 1900-01-01T00:00:00Z..9999-01-01T00:00:00Z is refused naming the field."""
    world = getattr(api, "_ranges_world", None) or build_world(api)
    api._ranges_world = world  # type: ignore[attr-defined]  # one world for all examples: building is slow
    value = _text(local, offset)
    if field in SESSION_FIELDS:
        base = {
            "Title": "T",
            "TimeZone": windows,
            "StartDate": "1950-01-01T00:00:00Z",
            "EndDate": "2030-01-01T00:00:00Z",
        }
        response = api.post(f"{_course(api, world)}/CourseSessions", json=_put(base, field, value))
        tz_name = windows
    else:
        response = api.patch(_course(api, world), json=_put({}, field, value))
        tz_name = "UTC"
    assert response.status_code in (200, 400), (value, response.status_code, response.text)
    if not _in_range(local, offset, tz_name):
        assert response.status_code == 400, (value, response.text)
        assert error(response)["target"] == field, (value, response.text)


# ------------------------------------------------------------------------------------- session consistency


def test_an_enrollment_deadline_after_the_session_ends_is_refused(api: Api) -> None:
    """A deadline after the session's end was stored: nobody can register for a session that is over. A create
    and a PATCH of the deadline name EnrollmentDeadline; a PATCH moving the end before the deadline names
    EndDate; a deadline at the end is accepted."""
    world = build_world(api)
    body = {"Title": "T", "TimeZone": "UTC", "StartDate": "2030-05-01T09:00:00Z", "EndDate": "2030-05-01T10:00:00Z"}
    late = api.post(f"{_course(api, world)}/CourseSessions", json={**body, "EnrollmentDeadline": "2030-05-01T10:01Z"})
    assert late.status_code == 400 and error(late)["target"] == "EnrollmentDeadline", late.text
    at_end = api.ok(
        "POST", f"{_course(api, world)}/CourseSessions", json={**body, "EnrollmentDeadline": "2030-05-01T10:00Z"}
    )
    path = f"/odata/v2/CourseSessions({at_end['Id']})"
    patched = api.patch(path, json={"EnrollmentDeadline": "2030-06-01T00:00:00Z"})
    assert patched.status_code == 400 and error(patched)["target"] == "EnrollmentDeadline", patched.text
    earlier = api.patch(path, json={"StartDate": "2030-04-01T09:00:00Z", "EndDate": "2030-04-01T10:00:00Z"})
    assert earlier.status_code == 400 and error(earlier)["target"] == "EndDate", earlier.text
    api.ok("PATCH", path, json={"EndDate": "2030-05-02T10:00:00Z"})
    api.ok("PATCH", path, json={"Title": "Renamed"})


def test_an_empty_days_list_is_refused_in_a_create_and_an_update(api: Api) -> None:
    """`"Days": []` was ignored (the old schedule stayed, or StartDate/EndDate were used): a session has at least
    one day, so an empty list, most likely a flow's filter that found nothing, is a 400 naming Days in both."""
    world = build_world(api)
    body = {"Title": "T", "TimeZone": "UTC", "StartDate": "2030-05-01T09:00:00Z", "EndDate": "2030-05-01T10:00:00Z"}
    created = api.post(f"{_course(api, world)}/CourseSessions", json={**body, "Days": []})
    assert created.status_code == 400 and error(created)["target"] == "Days", created.text
    updated = api.patch(f"/odata/v2/CourseSessions({world.session['Id']})", json={"Days": []})
    assert updated.status_code == 400 and error(updated)["target"] == "Days", updated.text
