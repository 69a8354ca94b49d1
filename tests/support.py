"""Test support: a hand-moved clock, an authenticated API client, error-shape checks, scenario builders."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from starlette.testclient import TestClient

from connector.background import Provisioner
from connector.settings import Settings
from storage.db import Database


class Clock:
    """A clock tests move by hand; storage reads it through Database.clock."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


# DNS stand-in for the callback check: no name resolves here (no internet). Any host is a public
# address unless listed; the listed ones are what SSRF attempts look like.
FAKE_DNS = {
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["20.50.2.1", "192.168.1.10"],
    "loopback.example": ["127.0.0.1"],
}


def fake_resolve(host: str) -> list[str]:
    if host == "nxdomain.example":
        raise OSError("Name or service not known")
    return FAKE_DNS.get(host, ["20.50.2.1"])


def basic(secret: str, username: str = "api") -> dict[str, str]:
    token = base64.b64encode(f"{username}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Api:
    """The connexion test client with a key's Basic auth; `user=` sends LMS365-User-Id."""

    client: TestClient
    secret: str
    db: Database
    settings: Settings

    def request(
        self, method: str, path: str, *, user: str | None = None, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        h = {**basic(self.secret), **(headers or {})}
        if user:
            h["LMS365-User-Id"] = user
        return self.client.request(method, path, headers=h, **kwargs)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        """Make the call, assert the status (showing the error body if not), return the JSON (or None)."""
        response = self.request(method, path, **kw)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def provision(self) -> None:
        """Run the background provisioner until nothing is left, as `serve` does every second."""
        Provisioner(self.db, self.settings.files_dir).run_once()


def error(response: Any) -> dict[str, Any]:
    """The OData error of a response, after checking its shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return body["error"]  # type: ignore[no-any-return]


@dataclass
class World:
    """A small organisation built through the API: people, a catalog, an ILT course with one session."""

    users: dict[str, dict[str, Any]]
    catalog: dict[str, Any]
    course: dict[str, Any]
    session: dict[str, Any]

    def uid(self, name: str) -> str:
        return str(self.users[name]["Id"])

    def login(self, name: str) -> str:
        return str(self.users[name]["LoginName"])


PEOPLE = {
    "admin": {"Role": "Administrator"},
    "boss": {},
    "teacher": {},
    "ann": {"ManagerLoginName": "boss@x.example"},
    "bob": {"ManagerLoginName": "boss@x.example"},
    "cid": {},
    "dee": {},
}


def build_world(
    api: Api, *, max_attendees: str = "2", flow: str = "AutomaticApproval", session_type: str = "EnrollToSingle"
) -> World:
    users = {}
    for name, extra in PEOPLE.items():
        users[name] = api.ok(
            "POST",
            "/odata/v2/Users",
            json={
                "LoginName": f"{name}@x.example",
                "Email": f"{name}@x.example",
                "Title": name.title(),
                "Department": "Ops",
                **extra,
            },
        )
    catalog = api.ok("POST", "/odata/v2/CourseCatalogs", json={"Title": "Academy", "AdminLogins": []})
    course = api.ok(
        "POST",
        "/odata/v2/Courses",
        json={
            "CourseCatalogId": catalog["Id"],
            "CourseType": "ClassRoom",
            "Title": "First aid",
            "Description": "Hands-on",
            "Culture": "en-US",
            "UICulture": "en-US",
            "Url": "first-aid",
            "EnrollmentFlow": flow,
            "CourseSessionEnrollmentType": session_type,
            "TeacherLogins": ["teacher@x.example"],
        },
    )
    api.provision()
    session = api.ok(
        "POST",
        f"/odata/v2/Courses({course['Id']})/CourseSessions",
        json={
            "Title": "Morning",
            "StartDate": "2030-04-01T09:00:00Z",
            "EndDate": "2030-04-01T12:00:00Z",
            "TimeZone": "UTC",
            "MaxAttendees": max_attendees,
            "EnrollmentDeadline": "2030-03-25T00:00:00Z",
        },
    )
    return World(users, catalog, course, session)


def relative(url: str) -> str:
    """The path and query of an absolute URL (to follow @odata.nextLink with the test client)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path
