"""Courses: create (provisioned in the background), update, publish, unpublish, soft-delete."""

from __future__ import annotations

import errno
import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from storage import access, catalogs, events, lookups, names, snapshots
from storage.db import Database, insert_sql, iso, new_id, update_sql
from storage.errors import Conflict, Invalid, clip
from storage.models import COURSE_TYPES, ENROLLMENT_FLOWS, SESSION_ENROLLMENT_TYPES, SYSTEM, Actor
from storage.odata import ReadContext, reading
from storage.timeutil import parse_days, parse_when

_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")

# wire property -> column for plain scalar properties that CreateCourse and UpdateCourse share
SCALARS = {
    "Title": "title",
    "Description": "description",
    "LongDescription": "long_description",
    "Culture": "culture",
    "UICulture": "ui_culture",
    "SiteTemplate": "site_template",
    "CourseLayoutId": "course_layout_id",
    "CertificateTemplateId": "certificate_template_id",
    "CourseID": "course_code",
    "Duration": "duration",
    "ImageUrl": "image_url",
    "FailedCourseId": "failed_course_id",
}
REQUIRED_TEXT = ("Title", "Description", "Culture", "UICulture")
MAX_URL = 2048  # ImageUrl's maxLength in the document
IMMUTABLE = {"CourseCatalogId": "catalog_id", "CourseType": "course_type", "Url": "url"}


def resolve_url(requested: Any, catalog_url: str, base_url: str) -> str:
    """The course site Url as stored: a path below the catalog's, or an absolute http(s) URL.

    As in LMS365, the Url a client sends is normally a path below the catalog (`safety-101`): it hangs off
    the catalog's stored Url (`catalogs/academy/safety-101`, relative to the public base URL, so it follows
    that URL when read). An absolute URL must pass storage.names.web_url (http or https, a host, no
    credentials); one under `base_url` (a Url read back from a response) is stored relative like the
    rest. Raises Invalid naming Url.
    """
    text = names.clean(requested if isinstance(requested, str) else None, "Url")
    scheme = re.match(r"^([a-z][a-z0-9+.-]*):", text, re.I)
    if scheme:
        if scheme.group(1).lower() not in ("http", "https"):
            raise Invalid(
                f"Url must be an http(s) URL or a relative path such as 'safety-101' (not {scheme.group(1)}:)",
                target="Url",
            )
        absolute = str(names.web_url(text, "Url")).rstrip("/")
        base = base_url.rstrip("/") + "/"
        if absolute[: len(base)].lower() == base.lower() and absolute[len(base) :].startswith(f"{catalog_url}/"):
            return absolute[len(base) :]
        return absolute
    segments = [s for s in text.strip("/").split("/") if s]
    if not segments or not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        raise Invalid(
            f"Url {text!r}: use letters, digits, '-', '_', '.' or '~' in each path segment, e.g. 'safety-101'",
            target="Url",
        )
    return f"{catalog_url.rstrip('/')}/{'/'.join(segments)}"


# A Url is taken when its key (storage/names.py: case, Unicode form) is reserved by a live course, or
# requested by one still queued; each is an index lookup.
URL_RESERVED = "SELECT 1 FROM courses WHERE site_url_key = ? AND is_deleted = 0 AND id IS NOT ?"
URL_REQUESTED = "SELECT 1 FROM courses WHERE url_key = ? AND site_url IS NULL AND is_deleted = 0 AND id IS NOT ?"


def _url_taken(
    conn: sqlite3.Connection, url: str, except_id: str | None = None, *, reserved_only: bool = False
) -> bool:
    """Is `url` reserved by another live course (or, unless reserved_only, requested by a queued one)?"""
    params = (names.key(url), except_id)
    if conn.execute(URL_RESERVED, params).fetchone():
        return True
    return not reserved_only and conn.execute(URL_REQUESTED, params).fetchone() is not None


def _settings_columns(body: dict[str, Any]) -> dict[str, Any]:
    """Columns from PublishingSettings, ExpirySettings and DueDateSettings present in the body."""
    out: dict[str, Any] = {}
    if isinstance(body.get("PublishingSettings"), dict):
        p = body["PublishingSettings"]
        out["publishing_enabled"] = int(bool(p.get("IsEnabled", True)))
        start = parse_when(p.get("StartDate"), "PublishingSettings.StartDate")
        end = parse_when(p.get("EndDate"), "PublishingSettings.EndDate")
        if start and end and end <= start:
            raise Invalid("PublishingSettings.EndDate must be after StartDate", target="PublishingSettings.EndDate")
        out["publishing_start"], out["publishing_end"] = iso(start), iso(end)
    if isinstance(body.get("ExpirySettings"), dict):
        x = body["ExpirySettings"]
        out["expiry_enabled"] = int(bool(x.get("IsEnabled", False)))
        out["expiry_fixed_date"] = iso(parse_when(x.get("FixedDate"), "ExpirySettings.FixedDate"))
        out["expiry_days_after_completion"] = parse_days(
            x.get("DaysAfterCompletion"), "ExpirySettings.DaysAfterCompletion"
        )
    if isinstance(body.get("DueDateSettings"), dict):
        d = body["DueDateSettings"]
        out["due_enabled"] = int(bool(d.get("IsEnabled", False)))
        out["due_fixed_date"] = iso(parse_when(d.get("FixedDate"), "DueDateSettings.FixedDate"))
        out["due_days_after_enrollment"] = parse_days(
            d.get("DaysAfterEnrollment"), "DueDateSettings.DaysAfterEnrollment"
        )
    return out


MAX_CEU = 10_000  # CEU's maximum in the document: 100,000 contact hours, far beyond any course


def _ceu(value: Any) -> float:
    """CEU as stored: a finite number from 0 to MAX_CEU (a NaN or an infinity compares false both ways)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_CEU:
        raise Invalid(f"CEU must be a number from 0 to {MAX_CEU:,}", target="CEU")
    return float(value)


def _enum(body: dict[str, Any], prop: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    value = body.get(prop) or default
    if value not in allowed:
        raise Invalid(f"{prop} must be one of {', '.join(allowed)}", target=prop)
    return str(value)


def _set_people(conn: sqlite3.Connection, course_id: str, role: str, user_ids: list[str]) -> None:
    conn.execute("DELETE FROM course_people WHERE course_id = ? AND role = ?", (course_id, role))
    conn.executemany(
        "INSERT INTO course_people (course_id, user_id, role) VALUES (?, ?, ?)",
        [(course_id, u, role) for u in user_ids],
    )


def _set_links(conn: sqlite3.Connection, table: str, column: str, course_id: str, ids: list[str]) -> None:
    conn.execute(f"DELETE FROM {table} WHERE course_id = ?", (course_id,))  # noqa: S608 (table from code)
    conn.executemany(insert_sql(table, ("course_id", column)), [(course_id, i) for i in ids])


PEOPLE = {"AdminLogins": "Admin", "TeacherLogins": "Teacher", "TrainerLogins": "Trainer"}


def _apply_relations(
    conn: sqlite3.Connection, actor: Actor, now: datetime, course_id: str, catalog_id: str, body: dict[str, Any]
) -> None:
    if "Categories" in body:
        _set_links(
            conn,
            "course_categories",
            "category_id",
            course_id,
            catalogs.resolve_categories(conn, actor, now, catalog_id, body["Categories"]),
        )
    if "Tags" in body:
        _set_links(
            conn, "course_tags", "tag_id", course_id, catalogs.resolve_tags(conn, actor, now, catalog_id, body["Tags"])
        )
    for prop, role in PEOPLE.items():
        if prop in body:
            _set_people(conn, course_id, role, lookups.users_by_login(conn, body[prop], prop))


def create(db: Database, actor: Actor, body: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Create a course in state `Queued`; provisioning finishes in the background. Return the course, its
    links under `base_url` (the server's public base URL).

    Raises Invalid (naming the field), Forbidden, or Conflict when the Url is already taken and
    AutoResolveUrlConflict is false.
    """
    for prop in REQUIRED_TEXT:
        if not isinstance(body.get(prop), str) or not body[prop].strip():
            raise Invalid(f"{prop} must not be empty", target=prop)
    course_type = _enum(body, "CourseType", COURSE_TYPES)
    image_url = names.web_url(body.get("ImageUrl"), "ImageUrl", limit=MAX_URL)
    flow = _enum(body, "EnrollmentFlow", ENROLLMENT_FLOWS, "AutomaticApproval")
    session_type = _enum(body, "CourseSessionEnrollmentType", SESSION_ENROLLMENT_TYPES, "EnrollToSingle")
    now = db.clock()
    course_id = new_id()
    with db.write() as conn:
        catalog = lookups.catalog(conn, body.get("CourseCatalogId") or "")
        access.require_catalog_admin(conn, actor, catalog["id"], "create courses in this catalog")
        url = resolve_url(body.get("Url"), catalog["url"], base_url)
        auto = bool(body.get("AutoResolveUrlConflict", False))
        if not auto and _url_taken(conn, url):
            raise Conflict(
                f"Url {url!r} is already used by another course: choose another Url or set AutoResolveUrlConflict",
                target="Url",
            )
        values: dict[str, Any] = {
            "id": course_id,
            "catalog_id": catalog["id"],
            "course_type": course_type,
            "url": url,
            "url_key": names.key(url),
            "auto_resolve_url": int(auto),
            "enrollment_flow": flow,
            "session_enrollment_type": session_type,
            "show_in_catalog": int(bool(body.get("ShowInCatalog", True))),
            "ceu": _ceu(body.get("CEU", 0)),
            "created_at": iso(now),
            "modified_at": iso(now),
        }
        values.update({column: body.get(prop) for prop, column in SCALARS.items()})
        values["image_url"] = image_url
        values.update(_settings_columns(body))
        conn.execute(insert_sql("courses", values), list(values.values()))
        _apply_relations(conn, actor, now, course_id, catalog["id"], body)
        for position, title in enumerate(body.get("LearningModules") or [], start=1):
            conn.execute(
                "INSERT INTO learning_modules (id, course_id, title, position) VALUES (?, ?, ?, ?)",
                (new_id(), course_id, str(title), position),
            )
        for title in body.get("Quizzes") or []:
            conn.execute(
                "INSERT INTO quizzes (id, course_id, title, modified_at) VALUES (?, ?, ?, ?)",
                (new_id(), course_id, str(title), iso(now)),
            )
        course = reading.load(conn, "Courses", [course_id], ReadContext(now, base_url))[course_id]
        events.record(
            conn,
            "CourseCreated",
            actor,
            now,
            {"course": snapshots.course(conn, course_id), "after": course},
            catalog_id=catalog["id"],
            course_id=course_id,
        )
    return course


def update(db: Database, actor: Actor, course_id: str, body: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Change the given properties; return the course, its links under `base_url`. Raises Invalid,
    Forbidden or NotFound."""
    now = db.clock()
    ctx = ReadContext(now, base_url)
    with db.write() as conn:
        row = lookups.course(conn, course_id, "CourseId")
        access.require_course_admin(conn, actor, course_id, "update this course")
        for prop, column in IMMUTABLE.items():
            if (
                prop in body
                and body[prop] not in (row[column], None)
                and not (
                    prop == "Url"
                    # The Url asked for, or the one provisioning reserved (which responses show).
                    and resolve_url(body[prop], lookups.catalog(conn, row["catalog_id"])["url"], base_url)
                    in (row["url"], row["site_url"])
                )
            ):
                raise Invalid(f"{prop} cannot change after the course is created", target=prop)
        for prop in REQUIRED_TEXT:
            if prop in body and (not isinstance(body[prop], str) or not body[prop].strip()):
                raise Invalid(f"{prop} must not be empty", target=prop)
        before = reading.load(conn, "Courses", [course_id], ctx)[course_id]
        sets: dict[str, Any] = {column: body[prop] for prop, column in SCALARS.items() if prop in body}
        if "ImageUrl" in body:
            sets["image_url"] = names.web_url(body["ImageUrl"], "ImageUrl", limit=MAX_URL)
        if "EnrollmentFlow" in body:
            sets["enrollment_flow"] = _enum(body, "EnrollmentFlow", ENROLLMENT_FLOWS)
        if "CourseSessionEnrollmentType" in body:
            sets["session_enrollment_type"] = _enum(body, "CourseSessionEnrollmentType", SESSION_ENROLLMENT_TYPES)
        if "ShowInCatalog" in body:
            sets["show_in_catalog"] = int(bool(body["ShowInCatalog"]))
        if "CEU" in body:
            sets["ceu"] = _ceu(body["CEU"])
        sets.update(_settings_columns(body))
        sets["modified_at"] = iso(now)
        conn.execute(update_sql("courses", sets), [*sets.values(), course_id])
        _apply_relations(conn, actor, now, course_id, row["catalog_id"], body)
        after = reading.load(conn, "Courses", [course_id], ctx)[course_id]
        changes = {
            k: {"before": before[k], "after": after[k]} for k in after if k != "ModifiedAt" and before[k] != after[k]
        }
        changed_relations = sorted(p for p in ("Categories", "Tags", *PEOPLE) if p in body)
        if changes or changed_relations:
            events.record(
                conn,
                "CourseUpdated",
                actor,
                now,
                {"course": snapshots.course(conn, course_id), "changes": changes, "relations": changed_relations},
                catalog_id=row["catalog_id"],
                course_id=course_id,
            )
    return after


def set_published(db: Database, actor: Actor, course_id: str, published: bool) -> None:
    """Publish or unpublish (idempotent). Raises Conflict while the course is still provisioning."""
    now = db.clock()
    with db.write() as conn:
        row = lookups.course(conn, course_id, "CourseId")
        access.require_course_admin(conn, actor, course_id, "publish or unpublish this course")
        if row["provisioning"] != "Created":
            raise Conflict(
                f"the course is still being provisioned (ProvisioningProgress {row['provisioning']}); try again shortly"
                if row["provisioning"] != "Failed"
                else f"the course failed to provision: {row['provisioning_error']}"
            )
        if bool(row["is_published"]) != published:
            _publish_in(conn, actor, now, row, published)


def _publish_in(conn: sqlite3.Connection, actor: Actor, now: datetime, row: sqlite3.Row, published: bool) -> None:
    conn.execute(
        "UPDATE courses SET is_published = ?, modified_at = ? WHERE id = ?", (int(published), iso(now), row["id"])
    )
    events.record(
        conn,
        "CoursePublished" if published else "CourseUnpublished",
        actor,
        now,
        {"course": snapshots.course(conn, row["id"])},
        catalog_id=row["catalog_id"],
        course_id=row["id"],
    )


def delete(db: Database, actor: Actor, course_id: str) -> None:
    """Soft-delete: cancel active enrollments, delete sessions, free the Url. Raises NotFound/Forbidden."""
    from storage import enrollments, sessions

    now = db.clock()
    with db.write() as conn:
        row = lookups.course(conn, course_id, "CourseId")
        access.require_course_admin(conn, actor, course_id, "delete this course")
        for enrollment in conn.execute(
            "SELECT * FROM enrollments WHERE course_id = ? AND status NOT IN (3, 4, 5)", (course_id,)
        ).fetchall():
            enrollments.cancel_in(conn, enrollment, actor, now, reason="Course deleted")
        for (session_id,) in conn.execute(
            "SELECT id FROM course_sessions WHERE course_id = ? AND is_deleted = 0", (course_id,)
        ).fetchall():
            sessions.delete_in(conn, actor, now, session_id)
        snapshot = snapshots.course(conn, course_id)
        conn.execute(
            "UPDATE courses SET is_deleted = 1, is_published = 0, site_url = NULL, site_url_key = NULL, modified_at = ?"
            " WHERE id = ?",
            (iso(now), course_id),
        )
        events.record(
            conn,
            "CourseDeleted",
            actor,
            now,
            {"course": snapshot},
            catalog_id=row["catalog_id"],
            course_id=course_id,
        )


# --- background provisioning ----------------------------------------------------------------------


# A file-system error that may pass by itself (a full disk, an I/O hiccup) is retried for this long after the
# course reached CreatingFolder; any other (a file in the way, permissions, a read-only disk) fails at once.
RETRY_FOR = timedelta(minutes=5)
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ENOMEM, errno.ESTALE}
    | {errno.ENFILE, errno.EMFILE, errno.ETIMEDOUT}
)
_FOLDER_HINTS = {
    errno.EEXIST: "something that is not a folder is in the way there; move it away, then create the course again",
    errno.ENOTDIR: "a file is in the way on that path (files/courses itself?); move it away, then create the course"
    " again",
    errno.EACCES: "the server's user may not create it; give it write access, then create the course again",
    errno.EPERM: "the server's user may not create it; give it write access, then create the course again",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the server's disk quota is used up",
}


@dataclass(frozen=True)
class Step:
    """What one provisioning step did to course `course_id`: its state `before` and `after` (the same when
    another worker moved it on, or a transient error is waiting to be retried: `retry`), and `error`, the
    ProvisioningError it failed with or the transient error it will retry."""

    course_id: str
    before: str
    after: str
    error: str | None = None
    retry: bool = False


def _folder_error(course_id: str, exc: OSError) -> str:
    """A ProvisioningError for a course folder that could not be created: the folder relative to the data
    directory (no server paths), what went wrong, and what to do."""
    reason = exc.strerror or type(exc).__name__
    hint = _FOLDER_HINTS.get(exc.errno or 0)
    return f"the course folder files/courses/{course_id} could not be created: {reason}" + (f"; {hint}" if hint else "")


def provision_step(db: Database, files_dir: Path, retrying: set[str] | None = None) -> Step | None:
    """Advance the oldest course that is still provisioning (and not in `retrying`) by one state; return what
    was done, or None when no course is left.

    Queued → ReservingUrl → CreatingFolder → Created (or Failed). Safe to run from several processes:
    each transition is a compare-and-set on the current state. Creating the folder `files/courses/<id>`
    can fail: an error another try may fix (TRANSIENT_ERRNOS) leaves the course at CreatingFolder and adds
    it to `retrying`, so the caller's next steps go on with the other courses, until RETRY_FOR after it
    reached CreatingFolder; any other, a transient one past RETRY_FOR, or any when the caller keeps no
    `retrying` set (a loop that could not skip the course), moves it to Failed with a ProvisioningError
    saying what is in the way. A failing course never holds up the queue. Raises only what the database
    raises.
    """
    now = db.clock()
    skip = sorted(retrying or ())
    with db.read() as conn:
        row = conn.execute(
            "SELECT * FROM courses WHERE provisioning NOT IN ('Created', 'Failed') AND is_deleted = 0"
            " AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY created_at, id LIMIT 1",
            (json.dumps(skip),),
        ).fetchone()
    if row is None:
        return None
    state = row["provisioning"]
    failure: str | None = None
    if state == "CreatingFolder":
        # File system work happens outside the transaction; mkdir is idempotent if we crash and retry.
        try:
            (files_dir / "courses" / row["id"]).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            failure = _folder_error(row["id"], exc)
            if retrying is not None and exc.errno in TRANSIENT_ERRNOS:
                started = parse_when(row["modified_at"], "modified_at")
                if started is None or now - started < RETRY_FOR:
                    retrying.add(row["id"])
                    return Step(row["id"], state, state, failure, retry=True)
                failure += f" (still so after trying again for {RETRY_FOR.total_seconds() / 60:g} minutes)"
    with db.write() as conn:
        current = conn.execute("SELECT * FROM courses WHERE id = ?", (row["id"],)).fetchone()
        if current["provisioning"] != state or current["is_deleted"]:
            return Step(row["id"], state, state)  # another worker moved it on
        if failure is not None:
            _move(conn, now, current, "Failed", failure)
        elif state == "Queued":
            _move(conn, now, current, "ReservingUrl")
        elif state == "ReservingUrl":
            _reserve_url(conn, now, current)
        else:
            _move(conn, now, current, "Created")
            if current["publishing_enabled"]:
                _publish_in(conn, SYSTEM, now, current, True)
        after = conn.execute(
            "SELECT provisioning, provisioning_error FROM courses WHERE id = ?", (row["id"],)
        ).fetchone()
    return Step(row["id"], state, after["provisioning"], after["provisioning_error"])


def _move(
    conn: sqlite3.Connection, now: datetime, row: sqlite3.Row, state: str, error: str | None = None, **extra: Any
) -> None:
    error = clip(error)
    sets = {"provisioning": state, "provisioning_error": error, "modified_at": iso(now), **extra}
    conn.execute(update_sql("courses", sets), [*sets.values(), row["id"]])
    events.record(
        conn,
        "CourseProvisioningChanged",
        SYSTEM,
        now,
        {"course": snapshots.course(conn, row["id"]), "before": row["provisioning"], "after": state, "error": error},
        catalog_id=row["catalog_id"],
        course_id=row["id"],
    )


def _reserve_url(conn: sqlite3.Connection, now: datetime, row: sqlite3.Row) -> None:
    candidate, n = row["url"], 1
    while _url_taken(conn, candidate, row["id"], reserved_only=True):
        if not row["auto_resolve_url"]:
            _move(conn, now, row, "Failed", f"Url {row['url']!r} was taken by another course while provisioning")
            return
        n += 1
        candidate = f"{row['url']}-{n}"
    _move(
        conn,
        now,
        row,
        "CreatingFolder",
        site_url=candidate,
        site_url_key=names.key(candidate),
        site_id=new_id(),
        web_id=new_id(),
    )
