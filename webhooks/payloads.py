"""From events to notifications: which trigger each event fires, about which entity, carrying what.

Each notification is one item of a delivery's `Notifications` array and has the fields of its
trigger's `x-ms-notification-content` schema in openapi/apiDefinition.swagger.json; `validate`
checks it against that schema before it is queued. The enrollment, course and user triggers carry
the LMS365 connector's payloads; the session triggers are coursewire's own.

No notification carries `null`: a property without a value is left out (arrays are `[]`), because
Power Automate may refuse a trigger body that does not match its declared types and Power Apps
shows an empty table for a null. `notification` is the one place that rule is applied. Entities
have the shapes the actions give them (a session's `Room` is the same object as in
GetCourseSessionById, `MaxAttendees` the same integer).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema_rs

from storage.models import Event

# openapi/ in the checkout, installed as the package coursewire_openapi (pyproject.toml).
SPEC_PATH = Path(str(resources.files("coursewire_openapi"))) / "apiDefinition.swagger.json"

# Event type in the log -> the trigger it fires.
TRIGGERS: dict[str, str] = {
    "EnrollmentRequested": "EnrollmentApprovalRequest",
    "EnrollmentCreated": "CourseEnrollment",
    "EnrollmentApproved": "CourseEnrollment",
    "EnrollmentCancelled": "CourseUnenrollment",
    "EnrollmentStarted": "CourseStarted",
    "EnrollmentCompleted": "CourseCompleted",
    "CoursePublished": "CoursePublished",
    "CourseUnpublished": "CourseUnpublished",
    "CourseCreated": "CourseCreated",
    "CourseDeleted": "CourseDeleted",
    "UserCreated": "UserCreated",
    "UserDeleted": "UserDeleted",
    "CourseSessionCreated": "CourseSessionCreated",
    "CourseSessionUpdated": "CourseSessionUpdated",
    "CourseSessionDeleted": "CourseSessionDeleted",
    "SessionRegistered": "SessionRegistration",
    "SessionUnregistered": "SessionUnregistration",
    "WaitlistPromoted": "WaitlistPromotion",
    "AttendanceRecorded": "AttendanceRecorded",
    "CalendarConnectionNeedsReauthorization": "CalendarConnectionNeedsReauthorization",
}


# Values written as they are; anything else (dicts, lists, tuples, other objects) is looked into.
_SCALARS = frozenset({str, int, float, bool})


def without_nulls(value: Any) -> Any:
    """`value` with every object member whose value is None left out, and every None item of an array.

    Returns new dicts and lists (tuples become lists; the input is not changed); anything else comes back
    as it is. The no-null rule of the wire: action responses go through connector.wire, notifications
    through `notification`. About 5 us for an enrollment with its User and Course (60 values).
    """
    kind = type(value)
    if kind is dict:
        return {k: (v if type(v) in _SCALARS else without_nulls(v)) for k, v in value.items() if v is not None}
    if kind is list or kind is tuple:
        return [v if type(v) in _SCALARS else without_nulls(v) for v in value if v is not None]
    return value


def _course(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "SiteId": c.get("SiteId"),
        "WebId": c.get("WebId"),
        "Id": c["Id"],
        "Title": c["Title"],
        "Url": c.get("Url") or "",
        "CourseType": c["CourseType"],
        "Published": bool(c.get("IsPublished")),
    }


def _person(u: dict[str, Any]) -> dict[str, Any]:
    return {
        "Id": u["Id"],
        "DirectoryObjectId": u.get("DirectoryObjectId"),
        "LoginName": u["LoginName"],
        "Title": u.get("Title"),
        "Department": u.get("Department"),
        "Email": u.get("Email"),
    }


def _enrollment(event: Event) -> dict[str, Any]:
    d = event.data
    return {
        "EnrollmentStatus": d["enrollment"]["EnrollmentStatus"],
        "EnrollmentStatusText": d["enrollment"]["EnrollmentStatusText"],
        "Course": _course(d["course"]),
        "Users": [{**_person(d["user"]), "EnrollmentId": d["enrollment"]["Id"]}],
    }


def _training(event: Event) -> dict[str, Any]:
    course = _course(event.data["course"])
    return {k: course[k] for k in ("SiteId", "WebId", "Id", "Title", "Url", "CourseType", "Published")}


def _user(event: Event) -> dict[str, Any]:
    u = event.data["user"]
    return {
        "UserId": u["Id"],
        "LoginName": u["LoginName"],
        "Email": u.get("Email"),
        "Title": u.get("Title"),
        "DirectoryObjectId": u.get("DirectoryObjectId"),
        "IsDeleted": event.type == "UserDeleted" or bool(u.get("IsDeleted")),
        "UserFieldValues": u.get("UserFieldValues") or [],
    }


def _text(value: Any) -> str | None:
    """A changed value as `Changes[].Before`/`After` carry it: strings as they are, anything else as JSON text
    of the shape the actions give it (a Room object without its empty members)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(without_nulls(value), separators=(",", ":"), ensure_ascii=False)


def _session(event: Event) -> dict[str, Any]:
    s = event.data["session"]
    out = {
        "CourseSessionId": s["Id"],
        "Title": s["Title"],
        "StartDate": s.get("StartDate"),
        "EndDate": s.get("EndDate"),
        "TimeZone": s.get("TimeZone"),
        "Days": [{"Id": d["Id"], "StartDate": d["StartDate"], "EndDate": d["EndDate"]} for d in s.get("Days") or []],
        "Room": s.get("Room"),
        "MeetingUrl": s.get("MeetingUrl"),
        "MaxAttendees": s.get("MaxAttendees"),
        "EnrollmentDeadline": s.get("EnrollmentDeadline"),
        "Instructors": s.get("Instructors") or [],
        "Course": _course(event.data["course"]),
    }
    if event.type == "CourseSessionUpdated":
        out["Changes"] = [
            {"Property": name, "Before": _text(change.get("before")), "After": _text(change.get("after"))}
            for name, change in (event.data.get("changes") or {}).items()
        ]
    if event.type == "CourseSessionDeleted":
        out["UnregisteredEnrollmentIds"] = event.data.get("UnregisteredEnrollmentIds") or []
    return out


def _registration(event: Event) -> dict[str, Any]:
    d = event.data
    status = {"SessionRegistered": d.get("Status"), "WaitlistPromoted": "Registered"}.get(event.type, "Cancelled")
    return {
        "CourseSessionId": d["session"]["Id"],
        "SessionTitle": d["session"]["Title"],
        "RegistrationId": d["RegistrationId"],
        "EnrollmentId": event.enrollment_id,
        "Status": status,
        "PreviousStatus": d.get("PreviousStatus") or ("Waitlisted" if event.type == "WaitlistPromoted" else None),
        "Reason": d.get("Reason"),
        "Course": _course(d["course"]),
        "User": _person(d["user"]),
    }


def _attendance(event: Event) -> dict[str, Any]:
    d = event.data
    return {
        "CourseSessionId": d["session"]["Id"],
        "SessionTitle": d["session"]["Title"],
        "CourseSessionDayId": d["CourseSessionDayId"],
        "EnrollmentId": event.enrollment_id,
        "Status": d["Status"],
        "PreviousStatus": d.get("PreviousStatus"),
        "Course": _course(d["course"]),
        "User": _person(d["user"]),
    }


def _calendar_connection(event: Event) -> dict[str, Any]:
    """A person's calendar connection (storage.calendar.set_status records the event) and the person, so a
    flow can tell them in Teams or by mail to connect their calendar again."""
    c = event.data["connection"]
    return {
        "User": _person(event.data["user"]),
        "Provider": c["Provider"],
        "Account": c.get("Account"),
        "Status": c.get("Status") or "NeedsReauthorization",
        "LastError": c.get("LastError"),
    }


BUILDERS: dict[str, Callable[[Event], dict[str, Any]]] = {
    "EnrollmentApprovalRequest": _enrollment,
    "CourseEnrollment": _enrollment,
    "CourseUnenrollment": _enrollment,
    "CourseStarted": _enrollment,
    "CourseCompleted": _enrollment,
    "CoursePublished": _training,
    "CourseUnpublished": _training,
    "CourseCreated": _training,
    "CourseDeleted": _training,
    "UserCreated": _user,
    "UserDeleted": _user,
    "CourseSessionCreated": _session,
    "CourseSessionUpdated": _session,
    "CourseSessionDeleted": _session,
    "SessionRegistration": _registration,
    "SessionUnregistration": _registration,
    "WaitlistPromotion": _registration,
    "AttendanceRecorded": _attendance,
    "CalendarConnectionNeedsReauthorization": _calendar_connection,
}


def entity_key(event: Event) -> str:
    """What the notification is about; notifications about one entity reach a subscriber in order."""
    if event.enrollment_id:
        return f"enrollment:{event.enrollment_id}"
    if event.user_id and event.type.startswith(("User", "CalendarConnection")):
        return f"user:{event.user_id}"
    if event.session_id:
        return f"session:{event.session_id}"
    if event.course_id:
        return f"course:{event.course_id}"
    return f"event:{event.seq}"


def notification(event: Event) -> tuple[str, dict[str, Any]] | None:
    """(trigger, notification) for an event that fires a trigger, None for one that fires none.

    The notification carries no null anywhere: properties without a value are left out.
    """
    trigger = TRIGGERS.get(event.type)
    if trigger is None:
        return None
    return trigger, without_nulls({"Action": trigger, **BUILDERS[trigger](event), "TimeStamp": event.occurred_at})


@functools.cache
def _spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return loaded


def body_schema(trigger: str) -> dict[str, Any]:
    """The trigger's `x-ms-notification-content` schema (the whole POST body), references resolved."""
    spec = _spec()
    schema = spec["paths"][f"/webhooks/subscribe/{trigger}"]["x-ms-notification-content"]["schema"]
    return {**_resolve(schema, spec), "definitions": spec["definitions"]}


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        resolved: dict[str, Any] = spec["definitions"][ref.rsplit("/", 1)[1]]
        return resolved
    return schema


@functools.cache
def _validator(trigger: str) -> jsonschema_rs.Draft4Validator:
    # Swagger's `x-nullable` is not JSON Schema: a null is refused like any other value of the wrong type.
    schema = body_schema(trigger)
    item = {**schema["properties"]["Notifications"]["items"], "definitions": schema["definitions"]}
    return jsonschema_rs.Draft4Validator(item)


def validate(trigger: str, item: dict[str, Any]) -> list[str]:
    """Problems of a notification against its trigger's schema (empty when it conforms)."""
    validator = _validator(trigger)
    if validator.is_valid(item):  # the common case, about a microsecond
        return []
    return [f"{'/'.join(map(str, e.instance_path)) or '(item)'}: {e.message}" for e in validator.iter_errors(item)]


def conform(trigger: str, item: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The notification as it may be queued, and what is still wrong with it (empty when it conforms).

    A conforming notification comes back unchanged. Otherwise strings and arrays longer than their
    declared `maxLength`/`maxItems` are cut to fit (values stored before the document declared those
    limits), so a notification is not lost for a long title; whatever else is wrong is reported.
    """
    problems = validate(trigger, item)
    if not problems:
        return item, []
    schema = body_schema(trigger)
    fitted = _fit(schema["properties"]["Notifications"]["items"], item, schema["definitions"])
    return fitted, validate(trigger, fitted)


def _fit(schema: dict[str, Any], value: Any, definitions: dict[str, Any]) -> Any:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        schema = definitions[ref.rsplit("/", 1)[1]]
    if isinstance(value, str):
        limit = schema.get("maxLength")
        return value[: limit - 1] + "…" if isinstance(limit, int) and len(value) > limit else value
    if isinstance(value, list):
        limit = schema.get("maxItems")
        kept = value[:limit] if isinstance(limit, int) else value
        items = schema.get("items")
        return [_fit(items, v, definitions) for v in kept] if isinstance(items, dict) else kept
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for key, v in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            out[key] = _fit(sub, v, definitions) if sub is not None else v
        return out
    return value
