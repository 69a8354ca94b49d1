"""A small training world for the mirror's engine tests: a real SQLite file, an injected clock, a course with
ILT sessions, learners and an instructor, and a worker whose providers are in-memory (NullProvider) and whose
e-mails are collected, so each test reads what each person's calendar or mailbox holds."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from calendars.config import CalendarConfig
from calendars.model import CalendarItem
from calendars.providers.null import NullProvider
from calendars.sync import Recipient
from calendars.worker import CalendarWorker
from storage import calendar, catalogs, courses, enrollments, sessions, users
from storage.calendar import Connection, ItemRecord
from storage.db import Database
from storage.models import CLI
from storage.secrets import SecretBox

START = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)


@dataclass
class Mail:
    method: str
    to: str
    uid: str
    sequence: int
    item: CalendarItem


@dataclass
class World:
    db: Database
    now: list[datetime]
    course_id: str
    people: dict[str, str]  # login prefix -> user id
    providers: dict[str, NullProvider] = field(default_factory=dict)  # connection id -> provider
    mails: list[Mail] = field(default_factory=list)
    mail_failures: list[Exception] = field(default_factory=list)

    # -- the worker ---------------------------------------------------------------------------------------
    def worker(self, **kwargs: Any) -> CalendarWorker:
        def provider_for(connection: Connection) -> NullProvider:
            return self.providers.setdefault(connection.id, NullProvider())

        async def send_mail(
            method: str, item: CalendarItem, record: ItemRecord | None, to: Recipient, sequence: int, now: datetime
        ) -> None:
            if self.mail_failures:
                raise self.mail_failures.pop(0)
            assert to.email
            self.mails.append(Mail(method, to.email, item.uid, sequence, item))

        box = SecretBox.for_database(":memory:")
        return CalendarWorker(self.db, box, CalendarConfig(), provider_for=provider_for, send_mail=send_mail, **kwargs)

    def sync(self, rounds: int = 5) -> int:
        """Run worker rounds until one finds nothing to do; return the pairs worked on."""

        async def go() -> int:
            total = 0
            async with self.worker() as w:
                for _ in range(rounds):
                    n = await w.run_once(self.now[0])
                    total += n
                    if not n:
                        break
            return total

        return asyncio.run(go())

    def advance(self, **delta: float) -> None:
        self.now[0] += timedelta(**delta)

    # -- people and sessions ------------------------------------------------------------------------------
    def session(
        self, title: str = "Session", days: int = 1, zone: str = "W. Europe Standard Time", **extra: Any
    ) -> str:
        body: dict[str, Any] = {"Title": title, "TimeZone": zone, **extra}
        if days == 1:
            body.setdefault("StartDate", "2027-03-01T09:00:00")
            body.setdefault("EndDate", "2027-03-01T17:00:00")
        else:
            body["Days"] = [
                {"StartDate": f"2027-03-{d + 1:02d}T09:00:00", "EndDate": f"2027-03-{d + 1:02d}T12:00:00"}
                for d in range(days)
            ]
            body.setdefault("StartDate", body["Days"][0]["StartDate"])
            body.setdefault("EndDate", body["Days"][-1]["EndDate"])
        return str(sessions.create(self.db, CLI, self.course_id, body)["Id"])

    def enroll(self, person: str, session_id: str) -> str:
        e = enrollments.enroll(
            self.db, CLI, self.course_id, {"userLoginName": f"{person}@example.org", "courseSessionId": session_id}
        )
        return str(e["Id"])

    def settings(self, **switches: bool) -> None:
        calendar.update_settings(self.db, CLI, switches)

    def connect(self, person: str, provider: str = "CalDAV") -> str:
        calendar.connect(
            self.db,
            CLI,
            self.people[person],
            provider,
            account=f"{person}@calendar.example",
            calendar="https://calendar.example/cal/",
            credentials=json.dumps({"username": person, "password": "x"}),
        )
        conn = calendar.active_connection(self.db, self.people[person])
        assert conn is not None
        return conn.id

    def calendar_of(self, person: str) -> list[CalendarItem]:
        """What the person's connected calendar holds (the active connection's in-memory provider)."""
        conn = calendar.active_connection(self.db, self.people[person])
        if conn is None or conn.id not in self.providers:
            return []
        return sorted(self.providers[conn.id].events.values(), key=lambda i: i.start)

    def mailbox(self, person: str) -> dict[str, Mail]:
        """The newest message per UID the person received: what their calendar app shows after applying them
        in order (RFC 5546 §2.1.5: the highest SEQUENCE wins)."""
        latest: dict[str, Mail] = {}
        for mail in self.mails:
            newer = mail.uid not in latest or mail.sequence >= latest[mail.uid].sequence
            if mail.to == f"{person}@example.org" and newer:
                latest[mail.uid] = mail
        return latest

    def mailbox_events(self, person: str) -> list[Mail]:
        return [m for m in self.mailbox(person).values() if m.method == "REQUEST"]


def make_world(tmp_path: Path, learners: tuple[str, ...] = ("lena", "omar", "pia")) -> World:
    now = [datetime(2027, 2, 1, 12, 0, tzinfo=UTC)]
    db = Database(tmp_path / "coursewire.db", clock=lambda: now[0])
    db.migrate()
    people = {}
    for person in (*learners, "ivan"):
        u = users.create(
            db, CLI, {"LoginName": f"{person}@example.org", "Email": f"{person}@example.org", "Title": person}
        )
        people[person] = u["Id"]
    catalog = catalogs.create_catalog(db, CLI, {"Title": "Academy"}, "https://lms.example")
    course = courses.create(
        db,
        CLI,
        {
            "CourseCatalogId": catalog["Id"],
            "Title": "First aid",
            "Description": "A hands-on day",
            "Culture": "en-US",
            "UICulture": "en-US",
            "CourseType": "ClassRoom",
            "Url": "first-aid",
            "CourseSessionEnrollmentType": "EnrollToMultiple",
        },
        "https://lms.example",
    )
    for _ in range(10):
        courses.provision_step(db, tmp_path / "files")
    return World(db=db, now=now, course_id=course["Id"], people=people)
