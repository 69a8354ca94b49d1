"""Who may do what: every role against every write action, as docs/design.md's table of actions says.

One organisation is built once for the module (people, catalogs, a sibling course); each cell of the
table gets its own learner, course and sessions in it, so an allowed action never changes what
another cell starts from. A refusal is a 403 that writes nothing (a 404, as for a missing one, on an
enrollment the role may not read).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import Api, Clock, error, fake_resolve

from connector.app import create_app
from connector.background import Provisioner
from connector.settings import Settings
from storage import apikeys, courses, enrollments, sessions, users
from storage.db import Database
from storage.models import Actor, EnrollmentStatus

# The roles, each relative to one learner and one course (with two sessions) made for the cell.
LEARNER = "learner"  # the learner the action is about, acting for themself
MANAGER = "learner's manager"
OTHER_LEARNER = "another learner"
TEACHER = "teacher"
TRAINER = "trainer"
INSTRUCTOR = "session instructor"  # instructor of the session acted on
OTHER_INSTRUCTOR = "other session's instructor"  # instructor of the course's other session
COURSE_ADMIN = "course admin"
CATALOG_ADMIN = "catalog admin"
SIBLING_ADMIN = "admin of another course"  # of another course in the same catalog
SIBLING_TEACHER = "teacher of another course"
OTHER_CATALOG_ADMIN = "admin of another catalog"
ADMINISTRATOR = "administrator"  # a user whose Role is Administrator
KEY = "Full Control key"  # no LMS365-User-Id: the key acts as an administrator

DOCUMENT = Path(__file__).parents[2] / "openapi" / "apiDefinition.swagger.json"

ROLES = (
    LEARNER,
    MANAGER,
    OTHER_LEARNER,
    TEACHER,
    TRAINER,
    INSTRUCTOR,
    OTHER_INSTRUCTOR,
    COURSE_ADMIN,
    CATALOG_ADMIN,
    SIBLING_ADMIN,
    SIBLING_TEACHER,
    OTHER_CATALOG_ADMIN,
    ADMINISTRATOR,
    KEY,
)

# Who besides administrators may act, per row of docs/design.md's table.
ADMINS = frozenset({ADMINISTRATOR, KEY})
CATALOG_ADMINS = ADMINS | {CATALOG_ADMIN}
COURSE_ADMINS = CATALOG_ADMINS | {COURSE_ADMIN}
SELF_OR_COURSE_ADMINS = COURSE_ADMINS | {LEARNER}
COURSE_STAFF = COURSE_ADMINS | {TEACHER, TRAINER}
ATTENDANCE_TAKERS = COURSE_STAFF | {INSTRUCTOR}

APPROVAL_FLOWS = ("LineManagerApproval", "LMSAdministratorsApproval", "CustomApproval", "ExternalWebhookApproval")
FLOWS = ("AutomaticApproval", *APPROVAL_FLOWS)

# Users of the organisation by the role they hold (the learner is made per cell).
STANDING = {
    MANAGER: "boss",
    OTHER_LEARNER: "cid",
    TEACHER: "teacher",
    TRAINER: "trainer",
    INSTRUCTOR: "instructor",
    OTHER_INSTRUCTOR: "instructor2",
    COURSE_ADMIN: "courseadmin",
    CATALOG_ADMIN: "catalogadmin",
    SIBLING_ADMIN: "siblingadmin",
    SIBLING_TEACHER: "siblingteacher",
    OTHER_CATALOG_ADMIN: "othercatalogadmin",
    ADMINISTRATOR: "admin",
}


def login(name: str) -> str:
    return f"{name}@x.example"


@dataclass
class Scene:
    """What one cell acts on: a learner (managed by `boss`), a published course with two sessions, and
    the learner's enrollment in the first session when the action needs one."""

    learner: dict[str, Any]
    course: dict[str, Any]
    session: dict[str, Any]
    other_session: dict[str, Any]
    enrollment: dict[str, Any] | None
    n: int


@dataclass
class Stage:
    """The organisation every cell shares, and the Full Control key's client to build and inspect it."""

    api: Api
    users: dict[str, str]  # name -> Id
    catalog: dict[str, Any]
    key: Actor  # the Full Control key acting as an administrator, for building scenes
    counter: Iterator[int] = field(default_factory=itertools.count)

    def actor(self, role: str, scene: Scene) -> str | None:
        """The LMS365-User-Id a role sends (none for the key itself)."""
        if role == KEY:
            return None
        if role == LEARNER:
            return str(scene.learner["Id"])
        return self.users[STANDING[role]]

    def events(self) -> int:
        with self.api.db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def course(self, title: str, flow: str, catalog: str | None = None, **people: list[str]) -> dict[str, Any]:
        n = next(self.counter)
        body = {
            "CourseCatalogId": catalog or self.catalog["Id"],
            "CourseType": "ClassRoom",
            "Title": title,
            "Description": "Roles",
            "Culture": "en-US",
            "UICulture": "en-US",
            "Url": f"roles-{n}",
            "EnrollmentFlow": flow,
            **people,
        }
        course = courses.create(self.api.db, self.key, body, "http://testserver")
        Provisioner(self.api.db, self.api.settings.files_dir).run_once()
        courses.set_published(self.api.db, self.key, course["Id"], True)
        return course

    def session(self, course: dict[str, Any], instructor: str) -> dict[str, Any]:
        body = {
            "Title": f"With {instructor}",
            "StartDate": "2030-04-01T09:00:00Z",
            "EndDate": "2030-04-01T12:00:00Z",
            "TimeZone": "UTC",
            "MaxAttendees": "5",
            "EnrollmentDeadline": "2030-03-25T00:00:00Z",
            "InstructorLogins": [login(instructor)],
        }
        return sessions.create(self.api.db, self.key, course["Id"], body)

    def scene(self, flow: str, state: str) -> Scene:
        """A fresh learner and course, made through the storage verbs (the call under test goes through
        HTTP); `state` says whether the learner is enrolled, has asked to be, or neither."""
        n = next(self.counter)
        db = self.api.db
        learner = users.create(db, self.key, {"LoginName": login(f"learner{n}"), "ManagerLoginName": login("boss")})
        course = self.course(
            f"Course {n}",
            flow,
            AdminLogins=[login("courseadmin")],
            TeacherLogins=[login("teacher")],
            TrainerLogins=[login("trainer")],
        )
        session = self.session(course, "instructor")
        other_session = self.session(course, "instructor2")
        enrollment = None
        if state != "none":
            # The key enrolls at once whatever the flow; the learner's own request waits for a decision.
            self_service = Actor(kind="user", api_key_id=self.key.api_key_id, user_id=learner["Id"])
            body = {"userLoginName": learner["LoginName"], "courseSessionId": session["Id"]}
            enrollment = enrollments.enroll(db, self_service if state == "requested" else self.key, course["Id"], body)
        scene = Scene(learner, course, session, other_session, enrollment, n)
        assert (
            enrollment_status(self, scene)
            == {"none": None, "enrolled": "NotStarted", "requested": "PendingApproval"}[state]
        )
        return scene


def enrollment_status(stage: Stage, scene: Scene) -> str | None:
    """The learner's latest enrollment status in the scene's course (None when there is none)."""
    with stage.api.db.read() as conn:
        row = conn.execute(
            "SELECT status FROM enrollments WHERE course_id = ? AND user_id = ? ORDER BY created_at DESC, rowid DESC",
            (scene.course["Id"], scene.learner["Id"]),
        ).fetchone()
    return None if row is None else EnrollmentStatus(row[0]).name


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("roles") / "data", rate_limit=None, page_size=5)
    db = Database(settings.database_path, clock=Clock(datetime(2030, 3, 1, 8, 0, tzinfo=UTC)))
    db.migrate()
    app = create_app(settings, db=db, validate_responses=True, resolve=fake_resolve)
    with app.test_client() as client:
        api_key = apikeys.create(db, "roles", "full")
        api = Api(client, api_key.secret, db, settings)
        users = {
            name: api.ok(
                "POST",
                "/odata/v2/Users",
                json={"LoginName": login(name), **({"Role": "Administrator"} if name == "admin" else {})},
            )["Id"]
            for name in STANDING.values()
        }
        catalog = api.ok(
            "POST", "/odata/v2/CourseCatalogs", json={"Title": "Academy", "AdminLogins": [login("catalogadmin")]}
        )
        elsewhere = api.ok(
            "POST", "/odata/v2/CourseCatalogs", json={"Title": "Elsewhere", "AdminLogins": [login("othercatalogadmin")]}
        )
        key = Actor(kind="apikey", api_key_id=api_key.key.id, is_admin=True)
        built = Stage(api, users, catalog, key)
        built.course(
            "Sibling", "AutomaticApproval", AdminLogins=[login("siblingadmin")], TeacherLogins=[login("siblingteacher")]
        )
        built.course("Elsewhere's", "AutomaticApproval", catalog=elsewhere["Id"])  # its admin administers this one
        yield built
    db.close()


Request = tuple[str, str, dict[str, Any] | None]


@dataclass(frozen=True)
class Action:
    """One row of the table: the request, who may make it, and what an allowed call leaves behind."""

    name: str
    operation: str  # its operationId in the document
    allowed: frozenset[str]
    request: Callable[[Stage, Scene], Request]
    status: int
    flow: str = "AutomaticApproval"
    state: str = "enrolled"  # the learner's enrollment before the call: none, enrolled or requested
    # The learner's enrollment status after an allowed call, given the acting role.
    after: Callable[[str], str] | None = None
    check: Callable[[Stage, Scene, Any], None] | None = None


def _enrollment(verb: str, body: dict[str, Any] | None = None) -> Callable[[Stage, Scene], Request]:
    def request(stage: Stage, scene: Scene) -> Request:
        assert scene.enrollment is not None
        return "POST", f"/odata/v2/Enrollments({scene.enrollment['Id']})/{verb}", body

    return request


def _enroll(stage: Stage, scene: Scene) -> Request:
    body = {"userLoginName": scene.learner["LoginName"], "courseSessionId": scene.session["Id"]}
    return "POST", f"/odata/v2/Courses({scene.course['Id']})/Enroll", body


def _enrolled_as(flow: str) -> Callable[[str], str]:
    """Self-enrollment waits for approval under every flow but AutomaticApproval; an admin's is approved at once."""
    return lambda role: "PendingApproval" if role == LEARNER and flow != "AutomaticApproval" else "NotStarted"


def _always(status: str) -> Callable[[str], str]:
    return lambda role: status


def _session_title(stage: Stage, scene: Scene, response: Any) -> None:
    got = stage.api.ok("GET", f"/odata/v2/CourseSessions({scene.session['Id']})")
    assert got["Title"] == "Renamed"


def _session_gone(stage: Stage, scene: Scene, response: Any) -> None:
    assert stage.api.get(f"/odata/v2/CourseSessions({scene.session['Id']})").status_code == 404


def _attended(stage: Stage, scene: Scene, response: Any) -> None:
    assert {(a["UserId"], a["Status"]) for a in response.json()["value"]} == {(scene.learner["Id"], "Attended")}


def _course_is(**expected: Any) -> Callable[[Stage, Scene, Any], None]:
    def check(stage: Stage, scene: Scene, response: Any) -> None:
        deleted = str(expected.get("IsDeleted", False)).lower()  # deleted courses are listed only when asked for
        (got,) = stage.api.ok(
            "GET", "/odata/v2/Courses", params={"$filter": f"Id eq '{scene.course['Id']}' and IsDeleted eq {deleted}"}
        )["value"]
        assert {k: got[k] for k in expected} == expected

    return check


def _learner_is(**expected: Any) -> Callable[[Stage, Scene, Any], None]:
    def check(stage: Stage, scene: Scene, response: Any) -> None:
        got = stage.api.ok("GET", f"/odata/v2/Users({scene.learner['Id']})")
        assert {k: got[k] for k in expected} == expected

    return check


def _new_course(stage: Stage, scene: Scene) -> Request:
    body = {
        "CourseCatalogId": stage.catalog["Id"],
        "CourseType": "ELearning",
        "Title": "Proposed",
        "Description": "By whoever may",
        "Culture": "en-US",
        "UICulture": "en-US",
        "Url": f"proposed-{scene.n}",
    }
    return "POST", "/odata/v2/Courses", body


def _new_session(stage: Stage, scene: Scene) -> Request:
    body = {
        "Title": "Extra",
        "StartDate": "2030-05-01T09:00:00Z",
        "EndDate": "2030-05-01T12:00:00Z",
        "TimeZone": "UTC",
    }
    return "POST", f"/odata/v2/Courses({scene.course['Id']})/CourseSessions", body


ACTIONS = [
    *[
        Action(
            f"enroll the learner ({flow})",
            "EnrollUserToCourse",
            SELF_OR_COURSE_ADMINS,
            _enroll,
            200,
            flow=flow,
            state="none",
            after=_enrolled_as(flow),
        )
        for flow in FLOWS
    ],
    Action(
        "cancel the learner's enrollment",
        "CancelEnrollment",
        SELF_OR_COURSE_ADMINS,
        _enrollment("Cancel", {}),
        204,
        after=_always("Cancelled"),
    ),
    Action(
        "cancel the learner's request",
        "CancelEnrollment",
        SELF_OR_COURSE_ADMINS,
        _enrollment("Cancel", {}),
        204,
        flow="LMSAdministratorsApproval",
        state="requested",
        after=_always("Cancelled"),
    ),
    Action(
        "start the learner's enrollment",
        "StartEnrollment",
        SELF_OR_COURSE_ADMINS,
        _enrollment("Start"),
        204,
        after=_always("InProgress"),
    ),
    Action(
        "complete the learner's enrollment",
        "CompleteEnrollmentById",
        COURSE_STAFF,
        _enrollment("Complete"),
        204,
        after=_always("Completed"),
    ),
    Action(
        "make the learner retake",
        "RetakeEnrollmentById",
        COURSE_STAFF,
        _enrollment("Retake", {}),
        204,
        after=_always("NotStarted"),
    ),
    *[
        Action(
            f"{verb.lower()} the learner's request ({flow})",
            f"{verb}EnrollmentRequest",
            COURSE_ADMINS | ({MANAGER} if flow == "LineManagerApproval" else set()),
            _enrollment(verb, {}),
            204,
            flow=flow,
            state="requested",
            after=_always(outcome),
        )
        for flow in APPROVAL_FLOWS
        for verb, outcome in (("Approve", "NotStarted"), ("Reject", "Rejected"))
    ],
    Action(
        "record attendance in the session",
        "RecordAttendance",
        ATTENDANCE_TAKERS,
        lambda stage, scene: (
            "POST",
            f"/odata/v2/CourseSessions({scene.session['Id']})/Attendance",
            {"Attendance": [{"UserLoginName": scene.learner["LoginName"], "Status": "Attended"}]},
        ),
        200,
        check=_attended,
    ),
    Action("create a session of the course", "CreateCourseSession", COURSE_ADMINS, _new_session, 200, state="none"),
    Action(
        "update the session",
        "UpdateCourseSession",
        COURSE_ADMINS,
        lambda stage, scene: ("PATCH", f"/odata/v2/CourseSessions({scene.session['Id']})", {"Title": "Renamed"}),
        200,
        state="none",
        check=_session_title,
    ),
    Action(
        "delete the session",
        "DeleteCourseSession",
        COURSE_ADMINS,
        lambda stage, scene: ("DELETE", f"/odata/v2/CourseSessions({scene.session['Id']})", None),
        204,
        check=_session_gone,
    ),
    Action(
        "update the course",
        "UpdateCourse",
        COURSE_ADMINS,
        lambda stage, scene: ("PATCH", f"/odata/v2/Courses({scene.course['Id']})", {"Title": "Renamed"}),
        200,
        state="none",
        check=_course_is(Title="Renamed"),
    ),
    Action(
        "delete the course",
        "DeleteCourse",
        COURSE_ADMINS,
        lambda stage, scene: ("DELETE", f"/odata/v2/Courses({scene.course['Id']})", None),
        204,
        after=_always("Cancelled"),
        check=_course_is(IsDeleted=True),
    ),
    Action(
        "unpublish the course",
        "UnpublishCourse",
        COURSE_ADMINS,
        lambda stage, scene: ("POST", f"/odata/v2/Courses({scene.course['Id']})/Unpublish", None),
        204,
        state="none",
        check=_course_is(IsPublished=False),
    ),
    Action(
        "publish the course",
        "PublishCourse",
        COURSE_ADMINS,
        lambda stage, scene: ("POST", f"/odata/v2/Courses({scene.course['Id']})/Publish", None),
        204,
        state="unpublished",
        check=_course_is(IsPublished=True),
    ),
    Action("create a course in the catalog", "CreateCourse", CATALOG_ADMINS, _new_course, 200, state="none"),
    Action(
        "create a category in the catalog",
        "CreateCourseCategory",
        CATALOG_ADMINS,
        lambda stage, scene: (
            "POST",
            "/odata/v2/CourseCategories",
            {"CourseCatalogId": stage.catalog["Id"], "Name": f"Category {scene.n}"},
        ),
        200,
        state="none",
    ),
    Action(
        "create a tag in the catalog",
        "CreateCourseTag",
        CATALOG_ADMINS,
        lambda stage, scene: (
            "POST",
            "/odata/v2/CourseTags",
            {"CourseCatalogId": stage.catalog["Id"], "Name": f"Tag {scene.n}"},
        ),
        200,
        state="none",
    ),
    Action(
        "create a catalog",
        "CreateCourseCatalog",
        ADMINS,
        lambda stage, scene: ("POST", "/odata/v2/CourseCatalogs", {"Title": f"Catalog {scene.n}"}),
        200,
        state="none",
    ),
    Action(
        "create a user",
        "CreateUser",
        ADMINS,
        lambda stage, scene: ("POST", "/odata/v2/Users", {"LoginName": login(f"new{scene.n}")}),
        200,
        state="none",
    ),
    Action(
        "update the learner's user",
        "UpdateUser",
        ADMINS,
        lambda stage, scene: ("PATCH", f"/odata/v2/Users({scene.learner['Id']})", {"Department": "Moved"}),
        200,
        state="none",
        check=_learner_is(Department="Moved"),
    ),
    Action(
        "make the learner an administrator",
        "UpdateUser",
        ADMINS,
        lambda stage, scene: ("PATCH", f"/odata/v2/Users({scene.learner['Id']})", {"Role": "Administrator"}),
        200,
        state="none",
        check=_learner_is(Role="Administrator"),
    ),
    Action(
        "delete the learner's user",
        "DeleteUser",
        ADMINS,
        lambda stage, scene: ("DELETE", f"/odata/v2/Users({scene.learner['Id']})", None),
        204,
        after=_always("Cancelled"),
        check=_learner_is(IsDeleted=True),
    ),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
def test_each_role_may_do_what_the_design_allows_and_nothing_more(stage: Stage, action: Action, role: str) -> None:
    """A shared key's LMS365-User-Id gets exactly its role's rights: allowed calls take effect, others are a
    403 that writes nothing (a 404 on an enrollment the role may not read)."""
    scene = stage.scene(action.flow, "none" if action.state == "unpublished" else action.state)
    if action.state == "unpublished":
        stage.api.ok("POST", f"/odata/v2/Courses({scene.course['Id']})/Unpublish", 204)
    method, path, body = action.request(stage, scene)
    before = stage.events()
    status_before = enrollment_status(stage, scene)

    response = stage.api.request(method, path, user=stage.actor(role, scene), json=body)

    if role in action.allowed:
        assert response.status_code == action.status, f"{role} may {action.name}: {response.text}"
        assert stage.events() > before
        if action.after is not None:
            assert enrollment_status(stage, scene) == action.after(role)
        if action.check is not None:
            action.check(stage, scene, response)
    else:
        # An action on an enrollment the role may not even read is the 404 a missing one gets (nothing to learn
        # from a write); on one it may read, a 403.
        bound = re.match(r"/odata/v2/Enrollments\(([^)]+)\)/", path)
        hidden = (
            bound is not None
            and stage.api.get(f"/odata/v2/Enrollments({bound[1]})", user=stage.actor(role, scene)).status_code == 404
        )
        expected = (404, "NotFound") if hidden else (403, "Forbidden")
        assert (
            response.status_code == expected[0]
        ), f"{role} may not {action.name}: {response.status_code} {response.text}"
        assert error(response)["code"] == expected[1]
        assert stage.events() == before
        assert enrollment_status(stage, scene) == status_before


# Write operations whose rights other tests cover: the platform's own calls, the delivery log (Full
# Control keys and administrators, tests/webhooks) and file uploads (tests of FileUpload).
OUTSIDE_THE_TABLE = {
    # The calendar operations' rights (the person, an administrator, nobody else; Read Only keys never write)
    # are tested operation by operation, with their own bodies, in tests/connector/test_calendar_api.py.
    "UpdateCalendarSettings",
    "CreateCalendarConnectionLink",
    "ConnectCalendar",
    "UpdateCalendarConnection",
    "DeleteCalendarConnection",
    # Tenant-wide Microsoft 365 (administrators only): tests/connector/test_calendar_tenant_api.py.
    "ConnectCalendarTenant",
    "DisconnectCalendarTenant",
    "HttpRequest",
    "HttpRequest_v2",
    "DeleteWebhookSubscription",
    "RedeliverWebhookDelivery",
    "FileUpload",
}


def test_the_table_has_a_row_for_every_write_operation() -> None:
    """A write operation added to the document without a row here fails, so nobody's rights over it go untested."""
    document = json.loads(DOCUMENT.read_text())
    writes = {
        op["operationId"]
        for item in document["paths"].values()
        for method, op in item.items()
        if method in ("post", "patch", "put", "delete") and "x-ms-trigger" not in op
    }
    assert writes - OUTSIDE_THE_TABLE == {a.operation for a in ACTIONS}
