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


# --- links follow the base URL when read ---------------------------------------------------------------


def test_urls_follow_the_request_host_when_read(api: Api) -> None:
    """A catalog's and a course's Url (and SharepointWeb/Url) are built from the base URL of the request
    reading them, not the one that created them; `$filter` on Url sees the same value."""
    world = build_world(api)  # created through http://testserver
    assert world.catalog["Url"] == "http://testserver/catalogs/academy"
    moved = {"Host": "lms.contoso.example"}
    catalog = api.ok("GET", f"/odata/v2/CourseCatalogs({world.catalog['Id']})", headers=moved)
    assert catalog["Url"] == "http://lms.contoso.example/catalogs/academy"
    course = api.ok(
        "GET", f"/odata/v2/Courses({world.course['Id']})", params={"$expand": "SharepointWeb"}, headers=moved
    )
    assert course["Url"] == "http://lms.contoso.example/catalogs/academy/first-aid"
    assert course["SharepointWeb"]["Url"] == course["Url"]
    found = api.ok("GET", "/odata/v2/Courses", params={"$filter": f"Url eq '{course['Url']}'"}, headers=moved)
    assert [c["Id"] for c in found["value"]] == [world.course["Id"]]
    old_host = api.ok("GET", "/odata/v2/Courses", params={"$filter": f"Url eq '{world.course['Url']}'"}, headers=moved)
    assert old_host["value"] == []
    expanded = api.ok(
        "GET", "/odata/v2/Enrollments", params={"$expand": "Course($select=Url)", "$top": "0"}, headers=moved
    )
    assert expanded["value"] == []


def test_urls_follow_the_public_url_setting(api: Api, settings: Any, db: Any) -> None:
    """With COURSEWIRE_PUBLIC_URL set, every read shows Urls under it, whatever the request's host, and a
    Url read back from a response can be sent again in a PATCH unchanged."""
    from dataclasses import replace

    from starlette.testclient import TestClient
    from support import Api as Client

    from connector.app import create_app

    world = build_world(api)
    public = create_app(replace(settings, public_url="https://lms.example/learning"), db=db)
    with TestClient(public) as raw:
        other = Client(raw, api.secret, db, settings)
        course = other.ok("GET", f"/odata/v2/Courses({world.course['Id']})")
        assert course["Url"] == "https://lms.example/learning/catalogs/academy/first-aid"
        catalogs = other.ok("GET", "/odata/v2/CourseCatalogs", params={"$expand": "Courses($select=Url)"})
        assert catalogs["value"][0]["Url"] == "https://lms.example/learning/catalogs/academy"
        assert catalogs["value"][0]["Courses"][0]["Url"] == course["Url"]
        patched = other.ok("PATCH", f"/odata/v2/Courses({world.course['Id']})", json={"Url": course["Url"]})
        assert patched["Url"] == course["Url"]
        refused = other.patch(f"/odata/v2/Courses({world.course['Id']})", json={"Url": "another"})
        assert refused.status_code == 400
    # The old host's absolute Url is the same course too, through the first app.
    assert api.ok("PATCH", f"/odata/v2/Courses({world.course['Id']})", json={"Url": world.course["Url"]})


def test_upgrade_stores_links_relative_to_the_base_url(tmp_path: Any) -> None:
    """Migration 0008 turns the absolute Urls catalogs and their courses were created with into paths below
    the base URL (a slug taken under two hosts gets -2), leaves a course Url given as another absolute
    URL alone, and event snapshots keep the host the catalog was created under."""
    from datetime import UTC, datetime

    from storage import snapshots
    from storage.db import Database
    from storage.migrations import migrations
    from storage.odata import ReadContext, reading

    db = Database(tmp_path / "coursewire.db")
    migrations.apply(db.utils(), stop_before="0008_links_relative_to_base_url")
    t0 = "2030-01-01T00:00:00.000Z"
    course = (
        "INSERT INTO courses (id, catalog_id, course_type, title, description, culture, ui_culture, url, site_url,"
        " enrollment_flow, session_enrollment_type, created_at, modified_at)"
        " VALUES (?, ?, 'ELearning', ?, '', 'en', 'en', ?, ?, 'AutomaticApproval', 'EnrollToSingle', ?, ?)"
    )
    with db.write() as conn:
        for cid, url, created in (  # the older catalog keeps the slug
            ("c-old", "http://old.example/catalogs/academy", t0),
            ("c-lms", "https://x.example/lms/catalogs/academy", "2030-02-01T00:00:00.000Z"),
        ):
            conn.execute("INSERT INTO catalogs (id, title, url, created_at) VALUES (?, 'A', ?, ?)", (cid, url, created))
        conn.execute(
            course,
            (
                "k-1",
                "c-old",
                "One",
                "http://old.example/catalogs/academy/one",
                "http://old.example/catalogs/academy/one-2",
                t0,
                t0,
            ),
        )
        conn.execute(course, ("k-2", "c-lms", "Two", "https://x.example/lms/catalogs/academy/two", None, t0, t0))
        conn.execute(course, ("k-3", "c-old", "Three", "https://sites.example/three", None, t0, t0))
    assert db.migrate()[0] == "0008_links_relative_to_base_url"
    stored = {r[0]: tuple(r[1:]) for r in db.conn.execute("SELECT id, url, site_url, site_url_key FROM courses")}
    assert stored == {
        "k-1": ("catalogs/academy/one", "catalogs/academy/one-2", "catalogs/academy/one-2"),
        "k-2": ("catalogs/academy-2/two", None, None),
        "k-3": ("https://sites.example/three", None, None),
    }
    ctx = ReadContext(datetime(2030, 1, 1, tzinfo=UTC), "https://new.example")
    with db.read() as conn:
        read = reading.load(conn, "Courses", ["k-1", "k-2", "k-3"], ctx)
        catalogs = reading.load(conn, "CourseCatalogs", ["c-old", "c-lms"], ctx)
        snapshot = snapshots.course(conn, "k-2")
    assert {k: v["Url"] for k, v in read.items()} == {
        "k-1": "https://new.example/catalogs/academy/one-2",
        "k-2": "https://new.example/catalogs/academy-2/two",
        "k-3": "https://sites.example/three",
    }
    assert {k: v["Url"] for k, v in catalogs.items()} == {
        "c-old": "https://new.example/catalogs/academy",
        "c-lms": "https://new.example/catalogs/academy-2",
    }
    assert snapshot["Url"] == "https://x.example/lms/catalogs/academy-2/two"
