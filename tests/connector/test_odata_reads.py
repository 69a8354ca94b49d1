"""Reads derived from the entity definitions: deleted rows, computed values against one clock, links."""

from __future__ import annotations

from typing import Any

import pytest
from support import Api, Clock, build_world


def _titles(api: Api, path: str, flt: str) -> list[str]:
    body = api.ok("GET", path, params={"$filter": flt, "$count": "true", "$orderby": "Title"})
    assert body["@odata.count"] == len(body["value"])
    return [row["Title"] for row in body["value"]]


@pytest.fixture
def people(api: Api) -> dict[str, Any]:
    kept = api.ok("POST", "/odata/v2/Users", json={"LoginName": "kept@x.example", "Title": "B"})
    gone = api.ok("POST", "/odata/v2/Users", json={"LoginName": "gone@x.example", "Title": "B"})
    note = api.ok("POST", "/odata/v2/Users", json={"LoginName": "note@x.example", "Title": "IsDeleted note"})
    api.ok("DELETE", f"/odata/v2/Users({gone['Id']})", status=204)
    return {"kept": kept, "gone": gone, "note": note}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("Title eq 'B'", ["B"]),
        # The text IsDeleted inside a string, or as part of another name, does not constrain deleted rows.
        ("Title eq 'B' or contains(Title,'IsDeleted')", ["B", "IsDeleted note"]),
        ("Title eq 'B' or Title eq 'IsDeleted'", ["B"]),
        ("Title eq 'B' or LoginName eq 'IsDeleted eq true'", ["B"]),
        # Naming the property does: the filter then decides alone.
        ("IsDeleted eq true", ["B"]),
        ("Title eq 'B' and (IsDeleted eq true or IsDeleted eq false)", ["B", "B"]),
        ("Title eq 'B' and IsDeleted ne true", ["B"]),
        ("Title eq 'B' and not IsDeleted", ["B"]),
    ],
)
def test_deleted_users_are_hidden_unless_the_filter_names_is_deleted(
    api: Api, people: dict[str, Any], flt: str, expected: list[str]
) -> None:
    """Deleted rows are listed only when `$filter` constrains IsDeleted itself, judged on the parsed filter
    (a string holding the text `IsDeleted` listed deleted rows before)."""
    assert _titles(api, "/odata/v2/Users", flt) == expected


def test_deleted_courses_follow_the_same_rule(api: Api) -> None:
    """Courses: `contains(Title,'IsDeleted')` lists no deleted course; `IsDeleted eq true` lists them."""
    world = build_world(api)
    api.ok("DELETE", f"/odata/v2/Courses({world.course['Id']})", status=204)
    assert _titles(api, "/odata/v2/Courses", "contains(Title,'IsDeleted') or Title eq 'First aid'") == []
    assert _titles(api, "/odata/v2/Courses", "IsDeleted eq true") == ["First aid"]
    assert (
        api.ok("GET", "/odata/v2/Courses/IncludeNotCreated", params={"$filter": "Title eq 'First aid'"})["value"] == []
    )


def test_enrollments_filter_on_their_course_being_deleted(api: Api) -> None:
    """`Course/IsDeleted` on enrollments is a filter on the joined course; enrollments are never hidden."""
    world = build_world(api)
    api.ok("POST", f"/odata/v2/Courses({world.course['Id']})/Enroll", json={"userLoginName": "ann@x.example"})
    api.ok("DELETE", f"/odata/v2/Courses({world.course['Id']})", status=204)
    body = api.ok("GET", "/odata/v2/Enrollments", params={"$filter": "Course/IsDeleted eq true"})
    assert [e["EnrollmentStatusText"] for e in body["value"]] == ["Cancelled"]


def test_is_ended_follows_the_injected_clock(api: Api, clock: Clock) -> None:
    """IsEnded, in responses and in `$filter`, is judged against the server's one clock (the test's), not
    the wall clock or SQLite's `now`: the test clock is in 2030, so a window that ended in 2029 has ended
    and one ending in 2031 has not, whatever today's date is."""
    world = build_world(api)
    course_id = world.course["Id"]

    def settings(end: str) -> None:
        api.ok(
            "PATCH", f"/odata/v2/Courses({course_id})", json={"PublishingSettings": {"IsEnabled": True, "EndDate": end}}
        )

    settings("2031-01-01T00:00:00Z")
    assert api.ok("GET", f"/odata/v2/Courses({course_id})")["IsEnded"] is False
    assert _titles(api, "/odata/v2/Courses", "IsEnded eq false") == ["First aid"]
    clock.advance(days=800)  # past 2031-01-01 by the server's clock only
    assert api.ok("GET", f"/odata/v2/Courses({course_id})")["IsEnded"] is True
    assert _titles(api, "/odata/v2/Courses", "IsEnded eq true") == ["First aid"]
    listed = api.ok("GET", "/odata/v2/Courses", params={"$filter": "IsEnded eq true", "$select": "IsEnded"})
    assert [c["IsEnded"] for c in listed["value"]] == [True]
