"""`$filter` sees only what the actor may read: any()/all() over registrations and attendance (however they are
reached) keep the read scope of README (Security), and deleted rows stay hidden unless the filter compares
IsDeleted with a boolean literal."""

from __future__ import annotations

from typing import Any

import pytest
from support import Api, World, build_world

from storage import access
from storage.odata import MODEL, fields


@pytest.fixture
def scene(api: Api) -> World:
    """ann and bob (boss's reports) hold the two seats, cid waits; the teacher records ann Attended, bob NoShow."""
    world = build_world(api, max_attendees="2")
    course, session = world.course["Id"], world.session["Id"]
    api.ok("POST", f"/odata/v2/Courses({course})/Publish", 204)
    for name in ("ann", "bob", "cid"):
        api.ok(
            "POST",
            f"/odata/v2/Courses({course})/Enroll",
            json={"userLoginName": world.login(name), "courseSessionId": session},
        )
    api.ok(
        "POST",
        f"/odata/v2/CourseSessions({session})/Attendance",
        json={
            "Attendance": [
                {"UserLoginName": world.login("ann"), "Status": "Attended"},
                {"UserLoginName": world.login("bob"), "Status": "NoShow"},
            ]
        },
        user=world.uid("teacher"),
    )
    return world


def _count(api: Api, path: str, flt: str, user: str | None) -> int:
    body = api.ok("GET", path, user=user, params={"$filter": flt, "$count": "true", "$top": "0"})
    assert body["value"] == []
    return int(body["@odata.count"])


def _sessions(world: World) -> str:
    return f"/odata/v2/Courses({world.course['Id']})/CourseSessions"


ACTORS = ("ann", "bob", "cid", "boss", "teacher", "admin", None)


@pytest.mark.parametrize(
    ("path", "flt", "expected"),
    [
        # Whether another learner is registered in the session (its count is 1 only for those who may see it).
        (
            _sessions,
            "Registrations/any(r: r/UserId eq {bob})",
            {"ann": 0, "bob": 1, "cid": 0, "boss": 1, "teacher": 1, "admin": 1, None: 1},
        ),
        # ... and whether they are waitlisted.
        (
            _sessions,
            "Registrations/any(r: r/UserId eq {cid} and r/Status eq 'Waitlisted')",
            {"ann": 0, "bob": 0, "cid": 1, "boss": 0, "teacher": 1, "admin": 1, None: 1},
        ),
        # Another learner's attendance.
        (
            _sessions,
            "Attendance/any(a: a/UserId eq {bob} and a/Status eq 'NoShow')",
            {"ann": 0, "bob": 1, "cid": 0, "boss": 1, "teacher": 1, "admin": 1, None: 1},
        ),
        # all() ranges over the rows the actor may read: for ann every registration she sees is her own.
        (
            _sessions,
            "Registrations/all(r: r/UserId eq {ann})",
            {"ann": 1, "bob": 0, "cid": 0, "boss": 0, "teacher": 0, "admin": 0, None: 0},
        ),
        # Through a single-valued navigation: the enrollments (of those readable) whose session holds bob.
        (
            lambda world: "/odata/v2/Enrollments",
            "CourseSession/Registrations/any(r: r/UserId eq {bob})",
            {"ann": 0, "bob": 1, "cid": 0, "boss": 2, "teacher": 3, "admin": 3, None: 3},
        ),
        (
            lambda world: "/odata/v2/Enrollments",
            "CourseSession/Attendance/any(a: a/UserId eq {bob} and a/Status eq 'NoShow')",
            {"ann": 0, "bob": 1, "cid": 0, "boss": 2, "teacher": 3, "admin": 3, None: 3},
        ),
    ],
    ids=["registered", "waitlisted", "attendance", "all", "enrollment-session-registrations", "enrollment-attendance"],
)
def test_any_and_all_see_only_readable_rows(api: Api, scene: World, path: Any, flt: str, expected: Any) -> None:
    """@odata.count of a filter over registrations/attendance is what the actor's read scope allows: a learner
    learns nothing of another's registration, waitlist place or attendance; a manager sees their reports';
    course staff, administrators and the key see all (before, every learner saw everyone's)."""
    names = {name: scene.uid(name) for name in ("ann", "bob", "cid")}
    text = flt.format(**{k: f"'{v}'" for k, v in names.items()})
    got = {actor: _count(api, path(scene), text, scene.uid(actor) if actor else None) for actor in ACTORS}
    assert got == expected


def test_a_read_only_key_reads_every_registration(api: Api, read_api: Api, scene: World) -> None:
    """A Read Only key acting as itself reads everything, in `$filter` too."""
    flt = f"Registrations/any(r: r/UserId eq '{scene.uid('cid')}' and r/Status eq 'Waitlisted')"
    assert _count(read_api, _sessions(scene), flt, None) == 1
    assert _count(read_api, _sessions(scene), flt, scene.uid("ann")) == 0


def test_a_nested_expand_filter_keeps_the_scope(api: Api, scene: World) -> None:
    """`$expand=CourseSessions($filter=Registrations/any(...))` does not tell a learner where another is registered."""
    expand = f"CourseSessions($filter=Registrations/any(r: r/UserId eq '{scene.uid('bob')}'))"
    for actor, sessions in (("ann", 0), ("boss", 1)):
        course = api.ok(
            "GET", f"/odata/v2/Courses({scene.course['Id']})", user=scene.uid(actor), params={"$expand": expand}
        )
        assert len(course["CourseSessions"]) == sessions, actor


def _scoped_paths() -> list[tuple[str, str]]:
    """Every (entity set, collection path) of `$filter` whose items belong to an enrollment."""
    out = []
    for name, entity in fields.entity_maps().items():
        for path in entity.collections:
            es = MODEL.entity_set(name)
            for segment in path.split("/")[:-1]:
                es = MODEL.entity_set(es.navigation(segment).target)
            last = path.split("/")[-1]
            if any(n.name == last and n.target in access.ENROLLMENT_OWNED for n in es.navigations):
                out.append((name, path))
    return out


LISTS = {"Enrollments": lambda world: "/odata/v2/Enrollments", "CourseSessions": _sessions}


@pytest.mark.parametrize(("set_name", "path"), _scoped_paths())
def test_no_collection_of_enrollment_rows_shows_a_learner_anothers(
    api: Api, scene: World, set_name: str, path: str
) -> None:
    """Every collection over enrollment-owned rows, at any depth, shows a learner their own rows only: `any` over
    rows of someone else matches nothing, while the key sees them."""
    assert set_name in LISTS, f"add the list URL of {set_name} to LISTS"
    flt = f"{path}/any(x: x/UserId ne '{scene.uid('ann')}')"
    assert _count(api, LISTS[set_name](scene), flt, scene.uid("ann")) == 0
    assert _count(api, LISTS[set_name](scene), flt, None) >= 1


def test_the_walk_finds_every_kind_of_path() -> None:
    """The paths above include direct and joined collections of both sets, so the test above can fail."""
    paths = set(_scoped_paths())
    assert {
        ("CourseSessions", "Registrations"),
        ("CourseSessions", "Attendance"),
        ("Enrollments", "CourseSession/Registrations"),
        ("Enrollments", "CourseSession/Attendance"),
    } <= paths


# --- deleted rows --------------------------------------------------------------------------------------


@pytest.fixture
def deleted(api: Api) -> dict[str, Any]:
    kept = api.ok("POST", "/odata/v2/Users", json={"LoginName": "kept@x.example", "Title": "Kept"})
    gone = api.ok("POST", "/odata/v2/Users", json={"LoginName": "gone@x.example", "Title": "Gone"})
    api.ok("DELETE", f"/odata/v2/Users({gone['Id']})", status=204)
    return {"kept": kept, "gone": gone}


@pytest.mark.parametrize(
    ("flt", "listed"),
    [
        # Naming IsDeleted without comparing it with a boolean literal leaves deleted rows hidden.
        ("IsDeleted eq IsDeleted", False),
        ("IsDeleted or true", False),
        ("true or IsDeleted", False),
        ("IsDeleted ne null", False),
        ("not (IsDeleted eq null)", False),
        ("IsDeleted", False),
        ("IsDeleted in (true, false)", False),
        ("IsDeleted ne IsExternal", False),
        # Comparing it with true or false, either way round, lets the filter decide.
        ("IsDeleted eq true", True),
        ("true eq IsDeleted", True),
        ("IsDeleted eq false or IsDeleted eq true", True),
        ("IsDeleted ne false", True),
        ("not (IsDeleted eq false)", True),
    ],
)
def test_deleted_rows_need_is_deleted_compared_with_a_boolean(
    api: Api, deleted: dict[str, Any], flt: str, listed: bool
) -> None:
    """Deleted users are listed only when `$filter` compares IsDeleted with a boolean literal (before, merely
    naming it, as in `IsDeleted eq IsDeleted`, listed them)."""
    body = api.ok("GET", "/odata/v2/Users", params={"$filter": flt, "$top": "100"})
    ids = {u["Id"] for u in body["value"]}
    assert (deleted["gone"]["Id"] in ids) is listed
