"""Declared limits, enforced: every string of every JSON body at its maxLength and one past it, every array
one item past its maxItems, and values at their limits read back and notified within the declared limits."""

from __future__ import annotations

import copy
import json
import re
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from support import Api, World, build_world

import certification
from connector.settings import Settings
from storage import calendar, events
from storage.models import CLI
from storage.outbound import parse_networks
from storage.secrets import SecretBox
from webhooks import payloads

sys.path.insert(0, str(Path(__file__).parents[1] / "mirror"))  # the calendar tests' CalDAV server
from dav_hostile import DavServer, account, dav_server, multistatus, response

DOCUMENT = certification.load_json(certification.DEFINITION_PATH)
# How a refusal for length reads (jsonschema's own words, coursewire's, storage's).
LENGTH_WORDS = re.compile(
    r"too long|too many|longer than|at most [\d,]+ (?:are allowed|characters|items|properties)", re.IGNORECASE
)
# A key the free-form objects of the base bodies hold, so their values have a path of their own.
FREE_KEY = "X-Test"

Steps = tuple[str | int, ...]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = DOCUMENT["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


@dataclass(frozen=True)
class Case:
    """One limited value of a body: where it is, what kind of limit it has, and its schema."""

    steps: Steps
    kind: str  # string, array or object
    limit: int
    node: dict[str, Any] = field(repr=False)

    @property
    def target(self) -> str:
        """The field as an error's `target` names it: `Title`, `Room.Title`, `Days[0].StartDate`."""
        out = ""
        for step in self.steps:
            out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
        return out

    @property
    def name(self) -> str:
        return next(str(s) for s in reversed(self.steps) if isinstance(s, str))


def _cases(schema: dict[str, Any], steps: Steps = ()) -> Iterator[Case]:
    schema = _resolve(schema)
    kind = schema.get("type")
    if kind == "string":
        yield Case(steps, "string", schema["maxLength"], schema)
    elif kind == "array":
        yield Case(steps, "array", schema["maxItems"], schema)
        yield from _cases(schema["items"], (*steps, 0))
    else:
        if isinstance(schema.get("additionalProperties"), dict):
            yield Case(steps, "object", schema["maxProperties"], schema)
            yield from _cases(schema["additionalProperties"], (*steps, FREE_KEY))
        for name, child in schema.get("properties", {}).items():
            yield from _cases(child, (*steps, name))


def _body_operations() -> dict[str, list[Case]]:
    """operationId -> the limited values of its JSON body, for every operation that takes one."""
    found = {}
    for item in DOCUMENT["paths"].values():
        for method, op in item.items():
            if method not in certification.METHODS:
                continue
            for param in op.get("parameters", []):
                param = _resolve_parameter(param)
                if param.get("in") == "body":
                    found[op["operationId"]] = list(_cases(param["schema"]))
    return found


def _resolve_parameter(param: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in param:
        resolved: dict[str, Any] = DOCUMENT["parameters"][param["$ref"].rsplit("/", 1)[-1]]
        return resolved
    return param


BODY_OPERATIONS = _body_operations()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """CalDAV servers on 127.0.0.1 may be connected (the test's own, tests/mirror/dav_hostile.py)."""
    return replace(settings, calendar=replace(settings.calendar, allowed_networks=parse_networks("127.0.0.0/8")))


@pytest.fixture
def dav() -> Iterator[DavServer]:
    """A CalDAV server on 127.0.0.1 whose account has one calendar for events, /cal/mine/."""
    with dav_server(account({"/cal/": [("/cal/mine/", "Mine")]})) as server:
        yield server


# --------------------------------------------------------------------------------------------- the scene


@dataclass
class Request:
    method: str
    path: str
    body: dict[str, Any]


class Scene:
    """build_world plus what bodies refer to: a category, a tag, an enrollment registered in the session,
    users with logins of a given length, fresh users and enrollments on demand, and (given `dav`) a CalDAV
    server to connect calendars to."""

    def __init__(self, api: Api, dav: DavServer | None = None) -> None:
        self.api = api
        self.dav = dav
        self.world: World = build_world(api, max_attendees="50")
        self.serial = 0
        self._long_logins: dict[int, str] = {}
        self._approval_course: str | None = None
        catalog = self.world.catalog["Id"]
        self.category = api.ok(
            "POST", "/odata/v2/CourseCategories", json={"Name": "Safety", "CourseCatalogId": catalog}
        )
        self.tag = api.ok("POST", "/odata/v2/CourseTags", json={"Name": "first-aid", "CourseCatalogId": catalog})
        self.enrollment = self.enroll(self.world.login("ann"))
        self.day = self.world.session["Days"][0]["Id"]

    @property
    def course(self) -> str:
        return str(self.world.course["Id"])

    @property
    def session(self) -> str:
        return str(self.world.session["Id"])

    def next(self) -> int:
        self.serial += 1
        return self.serial

    def unique_login(self, length: int = 0) -> str:
        """A login name nobody has, `length` characters long (any length when 0)."""
        head, tail = f"u{self.next()}-", "@x.example"
        return head + "l" * max(0, length - len(head) - len(tail)) + tail

    def user(self, length: int = 0) -> dict[str, Any]:
        login = self.unique_login(length)
        return dict(self.api.ok("POST", "/odata/v2/Users", json={"LoginName": login, "Title": "Fresh"}))

    def long_login(self, length: int) -> str:
        """The login of a user whose login name is `length` characters long (created once)."""
        if length not in self._long_logins:
            self._long_logins[length] = self.user(length)["LoginName"]
        return self._long_logins[length]

    def enroll(self, login: str, course: str | None = None, **kw: Any) -> dict[str, Any]:
        body = {"userLoginName": login}
        if course is None:
            body["courseSessionId"] = self.session
        return dict(self.api.ok("POST", f"/odata/v2/Courses({course or self.course})/Enroll", json=body, **kw))

    def fresh_enrollment(self) -> str:
        return str(self.enroll(self.user()["LoginName"])["Id"])

    def pending_enrollment(self, learner: dict[str, Any] | None = None) -> str:
        """A learner's own request (a fresh user's by default) into a course that needs an administrator's
        approval."""
        if self._approval_course is None:
            course = self.api.ok("POST", "/odata/v2/Courses", json=_course_body(self, flow="LMSAdministratorsApproval"))
            self.api.provision()
            self.api.ok("POST", f"/odata/v2/Courses({course['Id']})/Publish", 204)
            self._approval_course = str(course["Id"])
        learner = learner or self.user()
        return str(self.enroll(learner["LoginName"], self._approval_course, user=learner["Id"])["Id"])

    def caldav_user(self) -> str:
        """A fresh user to connect a CalDAV calendar for, CalDAV turned on."""
        calendar.update_settings(self.api.db, CLI, {"CalDAVEnabled": True})
        return str(self.user()["Id"])

    def caldav_url(self, length: int = 0) -> str:
        """An address on the CalDAV server, `length` characters long (its root when 0), that names the account's
        principal, so discovery goes on from it to the calendar /cal/mine/."""
        assert self.dav is not None, "ConnectCalendar needs the dav fixture"
        if not length:
            return str(self.dav.url)
        url = _text(length, self.dav.url + "x/", "/")
        path = url[len(self.dav.url) - 1 :]
        self.dav.pages[path] = multistatus(
            response(path, "<D:current-user-principal><D:href>/p/</D:href></D:current-user-principal>")
        )
        return url

    def connected_user(self) -> str:
        """A fresh user with a CalDAV calendar connected (as the calendar page leaves it)."""
        user_id = self.caldav_user()
        sealed = SecretBox.for_database(self.api.db.path).seal(json.dumps({"username": "u", "password": "p"}))
        calendar.connect(
            self.api.db, CLI, user_id, "CalDAV", account="u", calendar="https://dav.example/cal/", credentials=sealed
        )
        return user_id

    def reference(self, case: Case) -> str | None:
        """A real value for a field that names something, when it has the field's exact length."""
        ids = {
            "CourseCatalogId": self.world.catalog["Id"],
            "courseSessionId": self.session,
            "ParentCategoryId": self.category["Id"],
            "FailedCourseId": self.course,
            "EnrollmentId": self.enrollment["Id"],
            "CourseSessionDayId": self.day,
            "DirectoryObjectId": str(uuid.uuid4()),
        }
        if case.name == "Id" and case.steps[:1] == ("Categories",):
            return str(self.category["Id"])
        if case.name == "Id" and case.steps[:1] == ("Tags",):
            return str(self.tag["Id"])
        value = ids.get(case.name)
        return str(value) if value is not None and len(str(value)) == case.limit else None


def _course_body(scene: Scene, flow: str = "AutomaticApproval") -> dict[str, Any]:
    """A CreateCourse body with every property written."""
    teacher = scene.world.login("teacher")
    return {
        "CourseCatalogId": scene.world.catalog["Id"],
        "CourseType": "ClassRoom",
        "Title": "Fire safety",
        "Description": "Hands-on",
        "Culture": "en-US",
        "UICulture": "en-US",
        "Categories": [{"Id": scene.category["Id"], "Name": "Safety", "ParentCategoryId": scene.category["Id"]}],
        "Tags": [{"Id": scene.tag["Id"], "TagName": "first-aid", "Name": "first-aid"}],
        "EnrollmentFlow": flow,
        "Url": f"fire-safety-{scene.next()}",
        "SiteTemplate": "STS#3",
        "LearningModules": ["Introduction"],
        "Quizzes": ["Final quiz"],
        "AutoResolveUrlConflict": True,
        "CourseLayoutId": "layout-1",
        "CourseSessionEnrollmentType": "EnrollToSingle",
        "TeacherLogins": [teacher],
        "TrainerLogins": [teacher],
        "CertificateTemplateId": "certificate-1",
        "CourseID": "HR-101",
        "Duration": "2 hours",
        "LongDescription": "<p>What to do when the alarm rings.</p>",
        "PublishingSettings": {
            "IsEnabled": True,
            "StartDate": "2030-01-01T00:00:00Z",
            "EndDate": "2031-01-01T00:00:00Z",
        },
        "ExpirySettings": {"IsEnabled": True, "FixedDate": "2032-01-01T00:00:00Z", "DaysAfterCompletion": "365"},
        "DueDateSettings": {"IsEnabled": True, "FixedDate": "2030-06-01T00:00:00Z", "DaysAfterEnrollment": "30"},
        "ShowInCatalog": True,
        "CEU": 1,
        "ImageUrl": "https://images.example/fire.png",
        "FailedCourseId": scene.course,
        "AdminLogins": [teacher],
    }


def _session_body(scene: Scene) -> dict[str, Any]:
    """A CreateCourseSession body with every property written."""
    return {
        "Title": "Afternoon",
        "StartDate": "2030-04-02T13:00:00Z",
        "EndDate": "2030-04-02T16:00:00Z",
        "TimeZone": "UTC",
        "EnrollmentDeadline": "2030-03-30T00:00:00Z",
        "Room": {"EmailAddress": "room1@x.example", "Title": "Room 1", "Location": "Building 4", "Source": "Exchange"},
        "MeetingUrl": "https://meet.example/j/1",
        "MaxAttendees": "50",
        "Days": [{"StartDate": "2030-04-02T13:00:00Z", "EndDate": "2030-04-02T16:00:00Z"}],
        "Details": "Bring a notebook.",
        "InstructorLogins": [scene.world.login("teacher")],
    }


def _user_body(scene: Scene, login: str, email: str) -> dict[str, Any]:
    """A CreateUser body with every property written."""
    return {
        "LoginName": login,
        "Email": email,
        "Title": "Eve Example",
        "Department": "Ops",
        "ManagerLoginName": scene.world.login("boss"),
        "City": "Oslo",
        "Country": "Norway",
        "Office": "HQ",
        "JobTitle": "Engineer",
        "IsExternal": False,
        "DirectoryObjectId": str(uuid.uuid4()),
        "Role": "Learner",
        "UserFieldValues": [{"FieldTitle": "Employee number", "Value": "1001"}],
    }


def _http_body(uri: str) -> dict[str, Any]:
    return {"method": "GET", "uri": uri, "headers": {"Accept": "application/json", FREE_KEY: "1"}, "body": ""}


def _new_user(scene: Scene) -> Request:
    login = scene.unique_login()
    return Request("POST", "/odata/v2/Users", _user_body(scene, login, login))


def _ann(scene: Scene) -> Request:
    body = _user_body(scene, scene.world.login("ann"), scene.world.login("ann"))
    body["DirectoryObjectId"] = "0b6f6f4e-6c1a-4a55-9d55-3c8e7a9d2f10"
    return Request("PATCH", f"/odata/v2/Users({scene.world.uid('ann')})", body)


def _connect_calendar(scene: Scene) -> Request:
    body = {"Provider": "CalDAV", "Url": scene.caldav_url(), "Username": "ann", "Password": "app-password"}
    return Request("PUT", f"/odata/v2/Users({scene.caldav_user()})/CalendarConnection", body)


def _subscribe(event: str) -> Callable[[Scene], Request]:
    return lambda scene: Request("POST", f"/webhooks/subscribe/{event}", {"WebHookUri": "https://hooks.example/f"})


def _attendance(scene: Scene) -> Request:
    item = {
        "EnrollmentId": scene.enrollment["Id"],
        "UserLoginName": scene.world.login("ann"),
        "CourseSessionDayId": scene.day,
        "Status": "Attended",
    }
    return Request("POST", f"/odata/v2/CourseSessions({scene.session})/Attendance", {"Attendance": [item]})


# operationId -> a request with every body property written, valid and accepted as it is.
REQUESTS: dict[str, Callable[[Scene], Request]] = {
    "CreateCourse": lambda s: Request("POST", "/odata/v2/Courses", _course_body(s)),
    "UpdateCourse": lambda s: Request(
        "PATCH",
        f"/odata/v2/Courses({s.course})",
        {**_course_body(s), "CourseCatalogId": s.world.catalog["Id"], "Url": s.world.course["Url"]},
    ),
    "CreateCourseCatalog": lambda s: Request(
        "POST",
        "/odata/v2/CourseCatalogs",
        {"Title": "Academy", "Description": "Everything", "AdminLogins": [s.world.login("teacher")]},
    ),
    "CreateCourseCategory": lambda s: Request(
        "POST",
        "/odata/v2/CourseCategories",
        {
            "Name": f"Category {s.next()}",
            "CourseCatalogId": s.world.catalog["Id"],
            "ParentCategoryId": s.category["Id"],
        },
    ),
    "CreateCourseTag": lambda s: Request(
        "POST", "/odata/v2/CourseTags", {"Name": f"tag-{s.next()}", "CourseCatalogId": s.world.catalog["Id"]}
    ),
    "CreateCourseSession": lambda s: Request("POST", f"/odata/v2/Courses({s.course})/CourseSessions", _session_body(s)),
    "UpdateCourseSession": lambda s: Request(
        "PATCH", f"/odata/v2/CourseSessions({s.session})", {**_session_body(s), "MaxAttendees": 50}
    ),
    "RecordAttendance": _attendance,
    "EnrollUserToCourse": lambda s: Request(
        "POST",
        f"/odata/v2/Courses({s.course})/Enroll",
        {"userLoginName": s.user()["LoginName"], "courseSessionId": s.session},
    ),
    "RejectEnrollmentRequest": lambda s: Request(
        "POST", f"/odata/v2/Enrollments({s.pending_enrollment()})/Reject", {"message": "The course is full"}
    ),
    "CancelEnrollment": lambda s: Request(
        "POST", f"/odata/v2/Enrollments({s.fresh_enrollment()})/Cancel", {"message": "Moved to another team"}
    ),
    "RetakeEnrollmentById": lambda s: Request(
        "POST", f"/odata/v2/Enrollments({s.enrollment['Id']})/Retake", {"courseSessionId": s.session}
    ),
    "CreateUser": _new_user,
    "UpdateUser": _ann,
    "HttpRequest": lambda s: Request("POST", "/httprequest", _http_body("Courses?$top=1")),
    "HttpRequest_v2": lambda s: Request("POST", "/v2/httprequest", _http_body("odata/v2/Courses?$top=1")),
    # Turning a provider on needs its OAuth client or the mail server configured (not here); CalDAV needs nothing.
    "UpdateCalendarSettings": lambda s: Request(
        "PATCH",
        "/odata/v2/CalendarSettings",
        {"Microsoft365Enabled": False, "GoogleEnabled": False, "CalDAVEnabled": True, "EmailFallbackEnabled": False},
    ),
    "ConnectCalendar": _connect_calendar,
    "UpdateCalendarConnection": lambda s: Request(
        "PATCH", f"/odata/v2/Users({s.connected_user()})/CalendarConnection", {"SyncEnabled": False}
    ),
    **{
        op_id: _subscribe(op_id)
        for op_id, cases in BODY_OPERATIONS.items()
        if [c.steps for c in cases] == [("WebHookUri",)]
    },
}

URL_NAMES = {"Url", "ImageUrl", "MeetingUrl", "WebHookUri"}


def _text(length: int, head: str = "", tail: str = "") -> str:
    return head + "x" * (length - len(head) - len(tail)) + tail


def at_limit(scene: Scene, case: Case, base: str) -> str:
    """A value of exactly the case's maxLength, as valid for its field as a value that long can be; `base` is
    the valid value the base body holds (a date-time gets a longer fraction, a number leading zeros)."""
    n, name = case.limit, case.name
    if "enum" in case.node:
        longest = max(case.node["enum"], key=len)
        assert len(longest) == n, f"{case.target}: the longest enum value has {len(longest)} characters, not {n}"
        return str(longest)
    if (reference := scene.reference(case)) is not None:
        return reference
    if name == "LoginName":
        return scene.unique_login(n)
    if "Login" in name:
        return scene.long_login(n)
    if "Email" in name:
        return _text(n, f"e{scene.next()}-", "@x.example")
    if scene.dav is not None and name == "Url" and base.startswith(scene.dav.url):
        return scene.caldav_url(n)
    if name in URL_NAMES:
        return _text(n, "https://hooks.example/")
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", base):
        return base[:-1] + "." + "0" * (n - len(base) - 1) + "Z"
    if base.isdigit():
        return base.rjust(n, "0")
    return _text(n)


def put(body: dict[str, Any], steps: Steps, value: Any) -> dict[str, Any]:
    """A copy of `body` with the value at `steps` replaced; every step must already exist."""
    out = copy.deepcopy(body)
    node: Any = out
    for step in steps[:-1]:
        node = node[step]
    assert steps[-1] in node if isinstance(node, dict) else steps[-1] < len(node), steps
    node[steps[-1]] = value
    return out


def get(body: Any, steps: Steps) -> Any:
    for step in steps:
        body = body[step]
    return body


def _error(response: Any) -> dict[str, Any]:
    """The OData error of an answer, or {} when it has none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def refused_for_length(response: Any, target: str) -> bool:
    """Whether the answer is a 400 about the length of `target`."""
    error = _error(response)
    return (
        response.status_code == 400
        and error.get("target") == target
        and LENGTH_WORDS.search(error.get("message", "")) is not None
    )


def send(scene: Scene, request: Request) -> Any:
    return scene.api.request(request.method, request.path, json=request.body)


def _show(response: Any) -> str:
    return f"{response.status_code} {response.text[:300]}"


def _items(case: Case, base: list[Any], count: int) -> list[Any]:
    """`count` valid items for an array: distinct days and fields, header names for headers, copies of the base
    item otherwise."""
    if case.name == "Days":
        return [
            {
                "StartDate": f"2030-06-{1 + i // 24:02d}T{i % 24:02d}:00:00Z",
                "EndDate": f"2030-06-{1 + i // 24:02d}T{i % 24:02d}:30:00Z",
            }
            for i in range(count)
        ]
    if case.name == "UserFieldValues":
        return [{"FieldTitle": f"Field {i}", "Value": str(i)} for i in range(count)]
    if case.kind == "object":
        return [f"X-Header-{i}" for i in range(count)]
    return [copy.deepcopy(base[0]) for _ in range(count)]


# --------------------------------------------------------------------------------------------- tests

SUBSCRIBE = sorted(op for op, cases in BODY_OPERATIONS.items() if [c.steps for c in cases] == [("WebHookUri",)])
OTHERS = sorted(set(BODY_OPERATIONS) - set(SUBSCRIBE))
# Values that cannot be both as long as their limit and what the operation accepts, with the refusal they get.
REFUSED_AT_LIMIT = {
    ("HttpRequest", "method"): 405,  # DELETE, the longest method, on a list
    ("HttpRequest_v2", "method"): 405,
    ("HttpRequest", "uri"): 404,  # a relative address of 131,072 characters names no operation
    ("HttpRequest_v2", "uri"): 404,
    ("UpdateCourse", "CourseType"): 400,  # TrainingPlan, the longest type, but a course keeps its type
    ("UpdateCourse", "Url"): 400,  # another Url, and a course keeps its Url
    ("ConnectCalendar", "Provider"): 400,  # Microsoft365 is connected on the calendar page, with consent
}


def _judge(op_id: str, case: Case, response: Any, over: bool) -> str | None:
    """What is wrong with the answer to a value at its limit (`over` False) or one past it, or None."""
    if over:
        error = _error(response)
        if response.status_code != 400 or error.get("target") != case.target:
            return f"{case.target} past its limit: {_show(response)}"
        if "enum" not in case.node and not refused_for_length(response, case.target):
            return f"{case.target} past its limit, refused for something else: {_show(response)}"
        return None
    expected = REFUSED_AT_LIMIT.get((op_id, case.target))
    if expected is None and response.status_code >= 300:
        return f"{case.target} at its limit: {_show(response)}"
    if expected is not None and (response.status_code != expected or refused_for_length(response, case.target)):
        return f"{case.target} at its limit, expected a {expected} for what it means: {_show(response)}"
    return None


def _strings(scene: Scene, op_id: str) -> list[str]:
    """Send the operation's base body, then each string at its limit and one character past it."""
    base = REQUESTS[op_id](scene)
    for case in BODY_OPERATIONS[op_id]:
        get(base.body, case.steps)  # raises when the base body leaves a value out
    response = send(scene, base)
    failures = [] if response.status_code < 300 else [f"the base body: {_show(response)}"]
    for case in (c for c in BODY_OPERATIONS[op_id] if c.kind == "string"):
        request = REQUESTS[op_id](scene)
        value = at_limit(scene, case, get(request.body, case.steps))
        assert len(value) == case.limit, case
        for sent, over in ((value, False), (value + "x", True)):
            request = REQUESTS[op_id](scene)
            response = send(scene, Request(request.method, request.path, put(request.body, case.steps, sent)))
            failures.append(_judge(op_id, case, response, over) or "")
    return [f"{op_id}: {f}" for f in failures if f]


def test_every_json_body_operation_is_covered() -> None:
    """Each operation that takes a JSON body has a request here, so a new one cannot go untested."""
    assert set(REQUESTS) == set(BODY_OPERATIONS)
    kinds = Counter(case.kind for cases in BODY_OPERATIONS.values() for case in cases)
    assert (len(BODY_OPERATIONS), len(SUBSCRIBE), kinds) == (38, 19, {"string": 171, "array": 22, "object": 2})


@pytest.mark.parametrize("op_id", OTHERS)
def test_strings_at_their_limit_pass_and_one_character_more_is_a_400_naming_them(
    api: Api, dav: DavServer, op_id: str
) -> None:
    """Starting from a body with every property written and accepted, each string of maxLength characters is
    accepted (or refused for what it means, as REFUSED_AT_LIMIT lists), and one more character is a 400 whose
    target is the string's path and whose message says it is too long. ConnectCalendar connects for real, to a
    CalDAV server on 127.0.0.1: a Url of 2,048 characters on it is discovered and connected."""
    failures = _strings(Scene(api, dav), op_id)
    assert failures == [], "\n".join(failures)


def test_trigger_callbacks_at_their_limit_subscribe_and_one_character_more_is_a_400(api: Api) -> None:
    """Every trigger takes a callback URL of 4,096 characters (a flow's signed URL fits) and refuses a longer one
    naming WebHookUri."""
    scene = Scene(api)
    failures = [f for op_id in SUBSCRIBE for f in _strings(scene, op_id)]
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("op_id", sorted(op for op in OTHERS if any(c.kind != "string" for c in BODY_OPERATIONS[op])))
def test_arrays_and_objects_at_their_limit_pass_and_one_more_is_a_400_naming_them(api: Api, op_id: str) -> None:
    """An array of maxItems items (an object of maxProperties members) is accepted, and one more is a 400 whose
    target is its path and whose message gives the limit."""
    scene = Scene(api)
    failures = []
    for case in (c for c in BODY_OPERATIONS[op_id] if c.kind != "string"):
        for count in (case.limit, case.limit + 1):
            request = REQUESTS[op_id](scene)
            items = _items(case, get(request.body, case.steps), count)
            value = {k: "1" for k in items} if case.kind == "object" else items
            body = put(request.body, case.steps, value)
            if case.name == "Days":  # StartDate/EndDate must agree with the days sent with them
                body.update(StartDate=value[0]["StartDate"], EndDate=value[-1]["EndDate"])
            response = send(scene, Request(request.method, request.path, body))
            if count == case.limit and response.status_code >= 300:
                failures.append(f"{case.target} with {count}: {_show(response)}")
            if count > case.limit and not refused_for_length(response, case.target):
                failures.append(f"{case.target} with {count}: {_show(response)}")
    assert failures == [], "\n".join(failures)


# --------------------------------------------------------------------------------------------- read back


def _dense(length: int, salt: str = "", controls: bool = True) -> str:
    """Text of `length` characters that JSON writes as long as it can: quotes, backslashes and (where the
    field takes them; names refuse them) a control character, which take 2 and 6 characters once escaped."""
    return (salt + ('"\\\x01' if controls else '"\\') * length)[:length]


def _person(scene: Scene, dense: bool = True) -> dict[str, Any]:
    """A user whose every text property is at its limit."""
    n = scene.next()
    body = {
        "LoginName": scene.unique_login(256),
        "Email": _text(320, f"e{n}-", "@x.example"),
        "Title": _dense(256, f"{n} ") if dense else _text(256),
        "Department": _dense(64),
        "City": _dense(128),
        "Country": _dense(128),
        "Office": _dense(128),
        "JobTitle": _dense(128),
        "DirectoryObjectId": str(uuid.uuid4()),
    }
    return dict(scene.api.ok("POST", "/odata/v2/Users", json=body))


def test_values_at_their_limits_come_back_and_notify_within_the_declared_limits(api: Api, dav: DavServer) -> None:
    """Entities whose every text is at its limit, written in characters JSON escapes, read back within the
    response limits (responses are validated) and give notifications their trigger schemas accept: a value
    the server keeps can always be answered and notified. Calendars: a CalDAV one connected through the API
    (Username and Url at their limits) and a Google one as its consent page leaves it (an account of 320
    characters), both losing their authorization with an error longer than is kept."""
    scene = Scene(api, dav)
    learner = _person(scene)
    fields = [{"FieldTitle": f"{i:03d} " + _text(251), "Value": _dense(1000)} for i in range(100)]
    api.ok("PATCH", f"/odata/v2/Users({learner['Id']})", json={"UserFieldValues": fields})
    before = [_person(scene)["LoginName"] for _ in range(20)]
    after = [_person(scene)["LoginName"] for _ in range(20)]
    catalog = api.ok(
        "POST", "/odata/v2/CourseCatalogs", json={"Title": _dense(255, controls=False), "Description": _dense(10000)}
    )
    course = api.ok(
        "POST",
        "/odata/v2/Courses",
        json={
            **_course_body(scene),
            "CourseCatalogId": catalog["Id"],
            "Title": _dense(255),
            "Description": _dense(10000),
            "LongDescription": _dense(64000),
            "Url": "/".join(["u" * 63] * 32)[:2048].rstrip("/"),
            "Categories": [{"Name": f"{i:03d} " + _text(96)} for i in range(100)],
            "Tags": [{"TagName": f"{i:03d} " + _text(96)} for i in range(100)],
            "LearningModules": [_dense(255)] * 100,
            "Quizzes": [_dense(255)] * 100,
            "TeacherLogins": before,
            "AdminLogins": after,
        },
    )
    api.provision()
    api.ok("POST", f"/odata/v2/Courses({course['Id']})/Publish", 204)
    room = {"EmailAddress": _text(320, "room-", "@x.example"), "Title": _dense(255), "Location": _dense(1000)}
    days = [{"StartDate": f"2030-07-{1 + i // 4:02d}T{9 + 2 * (i % 4):02d}:00:00Z"} for i in range(100)]
    for day in days:
        day["EndDate"] = day["StartDate"].replace(":00:00Z", ":30:00Z")
    session = api.ok(
        "POST",
        f"/odata/v2/Courses({course['Id']})/CourseSessions",
        json={
            **_session_body(scene),
            "Title": _dense(255),
            "Room": {**room, "Source": "Exchange"},
            "Details": _dense(10000),
            "MeetingUrl": _text(2048, "https://meet.example/"),
            "MaxAttendees": "1",
            "Days": days,
            "StartDate": days[0]["StartDate"],
            "EndDate": days[-1]["EndDate"],
            "InstructorLogins": before,
        },
    )
    later = [{k: v.replace("2030-07", "2030-08") for k, v in day.items()} for day in days]
    room = {"EmailAddress": _text(320, "hall-", "@x.example"), "Title": _dense(255, "B"), "Location": _dense(1000, "B")}
    api.ok(
        "PATCH",
        f"/odata/v2/CourseSessions({session['Id']})",
        json={"Room": room, "Days": later, "InstructorLogins": after, "Details": _dense(10000, "B")},
    )
    seat = {"courseSessionId": session["Id"]}
    enroll = f"/odata/v2/Courses({course['Id']})/Enroll"
    enrollment = api.ok("POST", enroll, json={"userLoginName": learner["LoginName"], **seat})
    api.ok("POST", enroll, json={"userLoginName": after[0], **seat})  # waitlisted: one seat
    for action in ("Start", "Complete"):
        api.ok("POST", f"/odata/v2/Enrollments({enrollment['Id']})/{action}", 204)
    api.ok("POST", f"/odata/v2/Enrollments({enrollment['Id']})/Retake", 204, json=seat)
    scene.pending_enrollment(learner)
    api.ok(
        "POST",
        f"/odata/v2/CourseSessions({session['Id']})/Attendance",
        json={"Attendance": [{"EnrollmentId": enrollment["Id"], "Status": "Attended"}]},
    )
    api.ok("PATCH", "/odata/v2/CalendarSettings", json={"CalDAVEnabled": True})
    calendar.update_settings(api.db, CLI, {"GoogleEnabled": True})  # its OAuth client is not configured here
    caldav = {
        "Provider": "CalDAV",
        "Url": scene.caldav_url(2048),
        "Username": _dense(256, controls=False),
        "Password": _dense(1024, controls=False),  # a control character is refused
    }
    api.ok("PUT", f"/odata/v2/Users({learner['Id']})/CalendarConnection", json=caldav)
    sealed = SecretBox.for_database(api.db.path).seal(json.dumps({"refresh_token": "r"}))
    google = api.ok("GET", "/odata/v2/Users", params={"$filter": f"LoginName eq '{after[0]}'"})
    google_id = google["value"][0]["Id"]
    calendar.connect(
        api.db,
        CLI,
        google_id,
        "Google",
        account=_text(320, "g-", "@x.example"),
        calendar="https://www.googleapis.com/calendar/v3/calendars/primary",
        credentials=sealed,
    )
    for user_id in (learner["Id"], google_id):
        connection = calendar.active_connection(api.db, user_id)
        assert connection is not None
        calendar.set_status(api.db, connection.id, "NeedsReauthorization", _dense(10000, "invalid_grant "))
        api.ok("GET", f"/odata/v2/Users({user_id})/CalendarConnection")
        api.ok("POST", f"/odata/v2/Users({user_id})/CalendarConnectionLink")
    assert len(api.ok("GET", "/odata/v2/CalendarConnections", params={"$top": 1000})["value"]) == 2
    expand = {
        f"/odata/v2/CourseCatalogs({catalog['Id']})": "Courses,Admins",
        f"/odata/v2/Courses({course['Id']})": (
            "DueDate,Publishing,CertificateExpiry,SharepointWeb,Categories,Tags,CourseSessions,LearningModules,"
            "ProvisioningProgress,Trainers,Teachers,Admins,Quizzes,CourseCatalog"
        ),
        f"/odata/v2/CourseSessions({session['Id']})": "Instructors,Registrations,Attendance",
        f"/odata/v2/Enrollments({enrollment['Id']})": "Course,User,CourseSession,Registrations,Attendance",
        f"/odata/v2/Users({learner['Id']})": None,
    }
    for path, navigations in expand.items():
        api.ok("GET", path, params={"$expand": navigations} if navigations else None)
    api.ok("POST", f"/odata/v2/Enrollments({enrollment['Id']})/Cancel", 204, json={"message": _dense(1000)})
    api.ok("POST", f"/odata/v2/Courses({course['Id']})/Unpublish", 204)
    api.ok("DELETE", f"/odata/v2/CourseSessions({session['Id']})", 204)
    api.ok("DELETE", f"/odata/v2/Users({learner['Id']})", 204)
    api.ok("DELETE", f"/odata/v2/Courses({course['Id']})", 204)

    notified: Counter[str] = Counter()
    problems = []
    for event in events.read_after(api.db, 0, limit=100_000):
        found = payloads.notification(event)
        if found is not None:
            trigger, item = found
            notified[trigger] += 1
            problems += [f"{trigger} (event {event.seq}): {p[:300]}" for p in payloads.validate(trigger, item)]
    assert problems == [], "\n".join(problems)
    assert set(notified) == set(payloads.BUILDERS), "every trigger's notification was checked"
