"""A large, valid coursewire database for bench/data_scale.py: 100,000 users and 1,000,000 enrollments.

The few rich entities (catalog, courses, sessions) are created with coursewire's own storage verbs, so
they are exactly what the API would have made, provisioned and published. The bulk (users, enrollments,
session registrations) goes straight into the migrated schema with executemany, filled the way the
storage verbs fill it: lower-case uuid4 keys, `iso()` timestamps, one active enrollment per course and
user, waitlists in `seq` order, enrollment status 6 exactly when every registration waits, and so on.
The secondary indexes of the bulk tables are dropped during the load and re-created from the schema's
own DDL afterwards (far faster than maintaining them row by row). ANALYZE is not run, because coursewire
never runs it: the query planner sees what a real deployment's planner sees. The bulk rows get no
events (the event log is written, never read, by the calls measured here).
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage import apikeys, catalogs, courses, names, sessions
from storage.db import Database, iso
from storage.models import CLI

BULK_TABLES = ("users", "enrollments", "session_registrations")
FIRST = "Ada Ben Cleo Dan Eva Finn Gus Hana Ivo Jan Kim Lea Max Nia Oda Per Rut Sam Tea Uma".split()
LAST = "Berg Dahl Eng Falk Holm Lund Moe Nord Ost Roos Sand Strand Vik Wahl Ek Alm".split()
DEPARTMENTS = "Sales Finance Operations Learning Legal IT Marketing Support Research Logistics HR Facilities".split()
CITIES = [("Copenhagen", "Denmark"), ("Oslo", "Norway"), ("Stockholm", "Sweden"), ("Berlin", "Germany")]
# Enrollment statuses of courses without sessions (code, share); sessions add 6 (Waitlisted) by capacity.
STATUS_MIX = ((1, 0.30), (2, 0.25), (3, 0.35), (4, 0.05), (0, 0.03), (5, 0.02))


@dataclass(frozen=True)
class Scale:
    """How big: users, enrollments, courses (the first `session_courses` are ClassRoom with sessions)."""

    users: int = 100_000
    enrollments: int = 1_000_000
    courses: int = 200
    session_courses: int = 50
    sessions_per_course: int = 4
    busy_capacity: int = 5_000  # MaxAttendees of each session of the most popular course
    capacity: int = 2_000  # MaxAttendees of every other session (None for every second course)
    seed: int = 365


@dataclass
class Dataset:
    """What the bench needs to know about the generated data to pick realistic parameters."""

    path: Path
    key: str
    busy_course: str
    busy_sessions: list[str]
    course_ids: list[str]
    counts: dict[str, int] = field(default_factory=dict)


class _Ids:
    """Deterministic lower-case uuid4 strings (same seed, same data), as `storage.db.new_id` makes them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def build(path: Path, scale: Scale, files_dir: Path, base_url: str = "http://127.0.0.1:8365") -> Dataset:
    """Create the database at `path` (which must not exist) and return what was made."""
    rng = random.Random(scale.seed)  # noqa: S311 - reproducible bench data, not secrets
    db = Database(path)
    db.migrate()
    key = apikeys.create(db, "bench").secret
    now = datetime.now(UTC).replace(microsecond=0)
    course_ids, session_ids = _courses(db, scale, files_dir, base_url, now)
    conn = db.conn
    conn.execute("PRAGMA synchronous=OFF")  # a bench database: no durability needed while loading
    conn.execute("PRAGMA cache_size=-262144")
    indexes = _drop_indexes(conn)
    user_ids = _users(conn, scale, rng, now)
    counts = _enrollments(conn, scale, rng, now, user_ids, course_ids, session_ids)
    for sql in indexes:
        conn.execute(sql)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts["users"] = len(user_ids)
    db.close()
    return Dataset(path, key, course_ids[0], session_ids[course_ids[0]], course_ids, counts)


def _courses(
    db: Database, scale: Scale, files_dir: Path, base_url: str, now: datetime
) -> tuple[list[str], dict[str, list[str]]]:
    """Catalog, courses and sessions through the storage verbs; provisioned and published like the server does."""
    catalog = catalogs.create_catalog(db, CLI, {"Title": "Bench Academy", "Description": "Data-scale bench"}, base_url)
    ids = []
    for k in range(scale.courses):
        with_sessions = k < scale.session_courses
        created = courses.create(
            db,
            CLI,
            {
                "CourseCatalogId": catalog["Id"],
                "CourseType": "ClassRoom" if with_sessions else "ELearning",
                "Title": f"Course {k:03d}",
                "Description": "Generated for the data-scale bench.",
                "Url": f"course-{k:03d}",
                "Culture": "en-US",
                "UICulture": "en-US",
                "CEU": 1,
            },
            base_url,
        )
        ids.append(str(created["Id"]))
    while courses.provision_step(db, files_dir):
        pass
    start = (now + timedelta(days=30)).replace(hour=9, minute=0, second=0, tzinfo=None)
    session_ids: dict[str, list[str]] = {}
    for k, course_id in enumerate(ids[: scale.session_courses]):
        capacity = scale.busy_capacity if k == 0 else (scale.capacity if k % 2 else None)
        session_ids[course_id] = []
        for s in range(scale.sessions_per_course):
            day = start + timedelta(days=7 * s + k % 7)
            body = {
                "Title": f"Course {k:03d}, session {s + 1}",
                "StartDate": day.isoformat(),
                "EndDate": (day + timedelta(hours=7)).isoformat(),
                "TimeZone": "UTC",
                **({"MaxAttendees": str(capacity)} if capacity else {}),
            }
            session_ids[course_id].append(str(sessions.create(db, CLI, course_id, body)["Id"]))
    return ids, session_ids


def _drop_indexes(conn: sqlite3.Connection) -> list[str]:
    """Drop the secondary indexes of the bulk tables; return their CREATE statements (the schema's own)."""
    rows = conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"  # noqa: S608 - constants
        f" AND tbl_name IN ({', '.join('?' * len(BULK_TABLES))})",
        BULK_TABLES,
    ).fetchall()
    for name, _ in rows:
        conn.execute(f'DROP INDEX "{name}"')
    return [sql for _, sql in rows]


def _stamp(rng: random.Random, now: datetime, days_back: int) -> datetime:
    return now - timedelta(seconds=rng.randrange(days_back * 86_400))


def _users(conn: sqlite3.Connection, scale: Scale, rng: random.Random, now: datetime) -> list[str]:
    """Insert the users (the first thousand are everyone else's managers); return their ids in order."""
    new_id = _Ids(rng)
    ids = [new_id() for _ in range(scale.users)]

    def rows() -> Iterator[tuple[object, ...]]:
        for i, user_id in enumerate(ids):
            created = iso(_stamp(rng, now, 3 * 365))
            city, country = CITIES[i % len(CITIES)]
            login = f"user{i:06d}@bench.example"
            yield (
                user_id,
                login,
                names.key(login),
                login,
                names.key(login),
                f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                DEPARTMENTS[i % len(DEPARTMENTS)],
                ids[i % 1000] if i >= 1000 else None,
                city,
                country,
                new_id(),
                f"{city} office",
                "Specialist",
                "Administrator" if i < 10 else "Learner",
                created,
                created,
            )

    with _transaction(conn):
        conn.executemany(
            "INSERT INTO users (id, login_name, login_key, email, email_key, title, department, manager_id, city,"
            " country, directory_object_id, office, job_title, role, created_at, modified_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows(),
        )
    return ids


def _enrollments(
    conn: sqlite3.Connection,
    scale: Scale,
    rng: random.Random,
    now: datetime,
    user_ids: list[str],
    course_ids: list[str],
    session_ids: dict[str, list[str]],
) -> dict[str, int]:
    """Insert enrollments and their session registrations, oldest first so `seq` orders the waitlists."""
    new_id = _Ids(rng)
    per_user = scale.enrollments // len(user_ids)
    weights = [1 / (rank + 1) ** 0.5 for rank in range(len(course_ids))]  # a few courses are very popular
    pairs: list[tuple[str, int, str]] = []  # (registered_at, course index, user id)
    for user_id in user_ids:
        chosen: set[int] = set()
        while len(chosen) < per_user:
            chosen.update(rng.choices(range(len(course_ids)), weights, k=per_user - len(chosen)))
        pairs.extend((iso(_stamp(rng, now, 2 * 365)) or "", course, user_id) for course in chosen)
    pairs.sort()
    capacity = {
        sid: row[0]
        for sid, row in (
            (sid, conn.execute("SELECT max_attendees FROM course_sessions WHERE id = ?", (sid,)).fetchone())
            for ids in session_ids.values()
            for sid in ids
        )
    }
    seated: dict[str, int] = dict.fromkeys(capacity, 0)
    codes, shares = zip(*STATUS_MIX, strict=True)
    enrollments: list[tuple[object, ...]] = []
    registrations: list[tuple[object, ...]] = []
    for registered_at, course, user_id in pairs:
        enrollment_id = new_id()
        status = rng.choices(codes, shares)[0]
        course_id = course_ids[course]
        session_id = rng.choice(session_ids[course_id]) if course_id in session_ids else None
        if session_id is not None and status in (1, 2, 3, 4):
            limit = capacity[session_id]
            reg_status = "Registered" if limit is None or seated[session_id] < limit else "Waitlisted"
            if status == 4:
                reg_status = "Cancelled"
            elif reg_status == "Registered":
                seated[session_id] += 1
            else:
                status = 6  # every registration it has waits
            registrations.append(
                (new_id(), enrollment_id, session_id, user_id, reg_status, registered_at, registered_at)
            )
        when = datetime.fromisoformat(registered_at.replace("Z", "+00:00"))
        started = iso(when + timedelta(days=1)) if status in (2, 3) else None
        completed = iso(when + timedelta(days=3)) if status == 3 else None
        reason = "Bench: cancelled" if status == 4 else ("Bench: rejected" if status == 5 else None)
        enrollments.append(
            (
                enrollment_id,
                course_id,
                user_id,
                status,
                session_id,
                registered_at,
                started,
                completed,
                reason,
                registered_at,
                completed or registered_at,
            )
        )
    with _transaction(conn):
        conn.executemany(
            "INSERT INTO enrollments (id, course_id, user_id, status, session_id, registered_at, started_at,"
            " completed_at, cancellation_reason, created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            enrollments,
        )
        conn.executemany(
            "INSERT INTO session_registrations (id, enrollment_id, session_id, user_id, status, registered_at,"
            " modified_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            registrations,
        )
    return {"enrollments": len(enrollments), "session_registrations": len(registrations)}


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN ... COMMIT around a bulk insert (the connection is in autocommit mode)."""
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
