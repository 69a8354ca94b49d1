"""Versioned schema migrations (sqlite-utils `Migrations`); add new ones at the end, never edit old ones."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("coursewire")

# Timestamps are TEXT in the `iso()` form (`2026-11-21T09:30:00.000Z`), which sorts as time.
# Booleans are INTEGER 0/1. JSON columns are TEXT holding JSON.
SCHEMA_V1 = """
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    access TEXT NOT NULL CHECK (access IN ('full', 'read')),
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    login_name TEXT NOT NULL,
    email TEXT,
    title TEXT,
    department TEXT,
    manager_id TEXT REFERENCES users(id),
    city TEXT,
    country TEXT,
    directory_object_id TEXT,
    office TEXT,
    job_title TEXT,
    is_external INTEGER NOT NULL DEFAULT 0,
    role TEXT NOT NULL DEFAULT 'Learner' CHECK (role IN ('Learner', 'Administrator')),
    field_values TEXT NOT NULL DEFAULT '[]',
    is_deleted INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL
);
CREATE UNIQUE INDEX users_login ON users(login_name COLLATE NOCASE) WHERE is_deleted = 0;
CREATE INDEX users_email ON users(email COLLATE NOCASE);
CREATE INDEX users_directory_object ON users(directory_object_id);
CREATE INDEX users_manager ON users(manager_id);
CREATE INDEX users_title ON users(title);

CREATE TABLE catalogs (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT,
    url TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE catalog_admins (
    catalog_id TEXT NOT NULL REFERENCES catalogs(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (catalog_id, user_id)
);

CREATE TABLE categories (
    id TEXT PRIMARY KEY,
    catalog_id TEXT NOT NULL REFERENCES catalogs(id),
    name TEXT NOT NULL,
    parent_id TEXT REFERENCES categories(id)
);
CREATE UNIQUE INDEX categories_name ON categories(catalog_id, name COLLATE NOCASE);

CREATE TABLE tags (
    id TEXT PRIMARY KEY,
    catalog_id TEXT NOT NULL REFERENCES catalogs(id),
    name TEXT NOT NULL
);
CREATE UNIQUE INDEX tags_name ON tags(catalog_id, name COLLATE NOCASE);

CREATE TABLE courses (
    id TEXT PRIMARY KEY,
    catalog_id TEXT NOT NULL REFERENCES catalogs(id),
    course_type TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    long_description TEXT,
    culture TEXT NOT NULL,
    ui_culture TEXT NOT NULL,
    url TEXT NOT NULL,
    auto_resolve_url INTEGER NOT NULL DEFAULT 0,
    site_template TEXT,
    course_layout_id TEXT,
    enrollment_flow TEXT NOT NULL,
    session_enrollment_type TEXT NOT NULL,
    certificate_template_id TEXT,
    course_code TEXT,
    duration TEXT,
    show_in_catalog INTEGER NOT NULL DEFAULT 1,
    is_required INTEGER NOT NULL DEFAULT 0,
    ceu REAL NOT NULL DEFAULT 0,
    image_url TEXT,
    failed_course_id TEXT,
    publishing_enabled INTEGER NOT NULL DEFAULT 1,
    publishing_start TEXT,
    publishing_end TEXT,
    expiry_enabled INTEGER NOT NULL DEFAULT 0,
    expiry_fixed_date TEXT,
    expiry_days_after_completion INTEGER,
    due_enabled INTEGER NOT NULL DEFAULT 0,
    due_fixed_date TEXT,
    due_days_after_enrollment INTEGER,
    is_published INTEGER NOT NULL DEFAULT 0,
    is_deleted INTEGER NOT NULL DEFAULT 0,
    provisioning TEXT NOT NULL DEFAULT 'Queued',
    provisioning_error TEXT,
    site_url TEXT,
    site_id TEXT,
    web_id TEXT,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL
);
CREATE INDEX courses_catalog ON courses(catalog_id);
CREATE INDEX courses_created ON courses(created_at);
CREATE UNIQUE INDEX courses_site_url ON courses(site_url COLLATE NOCASE) WHERE site_url IS NOT NULL;
CREATE INDEX courses_provisioning ON courses(provisioning) WHERE provisioning NOT IN ('Created', 'Failed');

CREATE TABLE course_categories (
    course_id TEXT NOT NULL REFERENCES courses(id),
    category_id TEXT NOT NULL REFERENCES categories(id),
    PRIMARY KEY (course_id, category_id)
);
CREATE INDEX course_categories_category ON course_categories(category_id);
CREATE TABLE course_tags (
    course_id TEXT NOT NULL REFERENCES courses(id),
    tag_id TEXT NOT NULL REFERENCES tags(id),
    PRIMARY KEY (course_id, tag_id)
);
CREATE INDEX course_tags_tag ON course_tags(tag_id);
-- role: Admin, Teacher, Trainer
CREATE TABLE course_people (
    course_id TEXT NOT NULL REFERENCES courses(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL CHECK (role IN ('Admin', 'Teacher', 'Trainer')),
    PRIMARY KEY (course_id, role, user_id)
);
CREATE INDEX course_people_user ON course_people(user_id);

CREATE TABLE learning_modules (
    id TEXT PRIMARY KEY,
    course_id TEXT NOT NULL REFERENCES courses(id),
    title TEXT NOT NULL,
    position INTEGER NOT NULL
);
CREATE INDEX learning_modules_course ON learning_modules(course_id);
CREATE TABLE quizzes (
    id TEXT PRIMARY KEY,
    course_id TEXT NOT NULL REFERENCES courses(id),
    title TEXT NOT NULL,
    modified_at TEXT NOT NULL
);
CREATE INDEX quizzes_course ON quizzes(course_id);

CREATE TABLE course_sessions (
    id TEXT PRIMARY KEY,
    course_id TEXT NOT NULL REFERENCES courses(id),
    title TEXT NOT NULL,
    start_at TEXT NOT NULL,
    end_at TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    details TEXT,
    room TEXT,
    meeting_url TEXT,
    max_attendees INTEGER,
    enrollment_deadline TEXT,
    is_deleted INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL
);
CREATE INDEX course_sessions_course ON course_sessions(course_id, start_at);
CREATE TABLE session_days (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES course_sessions(id),
    start_at TEXT NOT NULL,
    end_at TEXT NOT NULL
);
CREATE INDEX session_days_session ON session_days(session_id, start_at);
CREATE TABLE session_instructors (
    session_id TEXT NOT NULL REFERENCES course_sessions(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (session_id, user_id)
);

-- status: see docs/design.md, "Enrollment status"
CREATE TABLE enrollments (
    id TEXT PRIMARY KEY,
    course_id TEXT NOT NULL REFERENCES courses(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 6),
    session_id TEXT REFERENCES course_sessions(id),
    registered_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    due_at TEXT,
    certificate_id TEXT,
    cancellation_reason TEXT,
    decided_by TEXT,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL
);
CREATE UNIQUE INDEX enrollments_active ON enrollments(course_id, user_id) WHERE status NOT IN (4, 5);
CREATE INDEX enrollments_user ON enrollments(user_id, registered_at);
CREATE INDEX enrollments_course ON enrollments(course_id, registered_at);
CREATE INDEX enrollments_session ON enrollments(session_id);
CREATE INDEX enrollments_status ON enrollments(status, registered_at);
CREATE INDEX enrollments_registered ON enrollments(registered_at);

-- status: Registered (holds a seat), Waitlisted, Cancelled; seq orders the waitlist
CREATE TABLE session_registrations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    enrollment_id TEXT NOT NULL REFERENCES enrollments(id),
    session_id TEXT NOT NULL REFERENCES course_sessions(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL CHECK (status IN ('Registered', 'Waitlisted', 'Cancelled')),
    registered_at TEXT NOT NULL,
    modified_at TEXT NOT NULL
);
CREATE UNIQUE INDEX session_registrations_active
    ON session_registrations(session_id, enrollment_id) WHERE status <> 'Cancelled';
CREATE INDEX session_registrations_seats ON session_registrations(session_id, status, seq);
CREATE INDEX session_registrations_enrollment ON session_registrations(enrollment_id);

CREATE TABLE attendance (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES course_sessions(id),
    day_id TEXT NOT NULL REFERENCES session_days(id),
    enrollment_id TEXT NOT NULL REFERENCES enrollments(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL CHECK (status IN ('Attended', 'NoShow')),
    recorded_at TEXT NOT NULL,
    UNIQUE (day_id, enrollment_id)
);
CREATE INDEX attendance_session ON attendance(session_id);
CREATE INDEX attendance_enrollment ON attendance(enrollment_id);

CREATE TABLE files (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    file_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    uploaded_by TEXT NOT NULL
);

CREATE TABLE webhook_subscriptions (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    callback_url TEXT NOT NULL,
    api_key_id TEXT NOT NULL REFERENCES api_keys(id),
    created_by TEXT,
    created_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE UNIQUE INDEX webhook_subscriptions_unique
    ON webhook_subscriptions(event, callback_url, api_key_id) WHERE deleted_at IS NULL;
CREATE INDEX webhook_subscriptions_event ON webhook_subscriptions(event) WHERE deleted_at IS NULL;

-- The event log and outbox: written in the same transaction as the change it records.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    catalog_id TEXT,
    course_id TEXT,
    session_id TEXT,
    enrollment_id TEXT,
    user_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX events_type ON events(type, seq);
CREATE INDEX events_course ON events(course_id, seq) WHERE course_id IS NOT NULL;
CREATE INDEX events_user ON events(user_id, seq) WHERE user_id IS NOT NULL;
CREATE INDEX events_enrollment ON events(enrollment_id, seq) WHERE enrollment_id IS NOT NULL;

CREATE TABLE event_cursors (
    consumer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
"""


@migrations(name="0001_initial")
def initial(db: Database) -> None:
    for statement in _statements(SCHEMA_V1):
        db.execute(statement)


@migrations(name="0002_id_lookups")
def id_lookups(db: Database) -> None:
    """Ids compare exactly from here on: directory object ids in lower case like every other id, and an
    index for a course's enrollments by status (bench/results/data_scale.md showed both scans)."""
    db.execute(
        "UPDATE users SET directory_object_id = lower(directory_object_id) WHERE directory_object_id IS NOT NULL"
    )
    db.execute("CREATE INDEX enrollments_course_status ON enrollments(course_id, status, registered_at)")


@migrations(name="0003_users_by_department")
def users_by_department(db: Database) -> None:
    """Users of a department, by name: the commonest user list in flows (25 ms -> 5.5 ms at 100k users)."""
    db.execute("CREATE INDEX users_department_title ON users(department COLLATE NOCASE, title COLLATE NOCASE)")


WEBHOOK_DELIVERY = """
-- Callback URLs carry the flow's SAS signature and signing secrets sign deliveries: both are kept
-- encrypted (storage/secrets.py); callback_hash finds "the same callback again" without decrypting.
ALTER TABLE webhook_subscriptions ADD COLUMN callback_hash TEXT;
ALTER TABLE webhook_subscriptions ADD COLUMN callback_host TEXT;  -- scheme://host[:port], shown and logged
ALTER TABLE webhook_subscriptions ADD COLUMN callback_sealed TEXT;
ALTER TABLE webhook_subscriptions ADD COLUMN secret_sealed TEXT;
-- active | disabled (failing for days; subscribe again to revive) | removed (DELETE, or 404/410)
ALTER TABLE webhook_subscriptions ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE webhook_subscriptions ADD COLUMN status_reason TEXT;
ALTER TABLE webhook_subscriptions ADD COLUMN failing_since TEXT;
ALTER TABLE webhook_subscriptions ADD COLUMN last_delivered_at TEXT;
-- A subscription hears of events after this sequence number only: not of what happened before it.
ALTER TABLE webhook_subscriptions ADD COLUMN since_seq INTEGER NOT NULL DEFAULT 0;
DROP INDEX webhook_subscriptions_unique;
DROP INDEX webhook_subscriptions_event;
CREATE INDEX webhook_subscriptions_callback ON webhook_subscriptions(event, callback_hash, api_key_id)
    WHERE deleted_at IS NULL;
CREATE INDEX webhook_subscriptions_active ON webhook_subscriptions(event) WHERE status = 'active';

-- One row per event and subscription, written by the dispatcher in the transaction that moves its
-- cursor over the event; joined into a delivery when sent (several, when batching).
CREATE TABLE webhook_notifications (
    id INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions(id),
    event_seq INTEGER NOT NULL,
    entity_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    due_at TEXT NOT NULL,
    delivery_id TEXT REFERENCES webhook_deliveries(id),
    UNIQUE (subscription_id, event_seq)
);
CREATE INDEX webhook_notifications_waiting ON webhook_notifications(subscription_id, id) WHERE delivery_id IS NULL;
CREATE INDEX webhook_notifications_due ON webhook_notifications(due_at) WHERE delivery_id IS NULL;
CREATE INDEX webhook_notifications_delivery ON webhook_notifications(delivery_id);

-- One POST to a callback, retried under the same id. status: pending (due at next_attempt_at),
-- sending (claimed by a worker until lease_until), delivered, dead, cancelled.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions(id),
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    last_status INTEGER,
    last_error TEXT,
    dead_reason TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries(lease_until) WHERE status = 'sending';
CREATE INDEX webhook_deliveries_subscription ON webhook_deliveries(subscription_id, status);
CREATE INDEX webhook_deliveries_status ON webhook_deliveries(status, created_at);

-- Every attempt: what was answered, how fast, or what failed.
CREATE TABLE webhook_attempts (
    id INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id),
    attempt INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    status_code INTEGER,
    latency_ms REAL,
    response TEXT,
    error TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id, attempt);
"""


@migrations(name="0004_webhook_delivery")
def webhook_delivery(db: Database) -> None:
    """Delivery of webhook triggers: subscription secrets and state, notifications, deliveries, attempts.

    Existing subscriptions get their callback hash and host here; their URL is encrypted, and a
    signing secret created, by `storage.subscriptions.seal_legacy` when a key is at hand.
    """
    for statement in _statements(WEBHOOK_DELIVERY):
        db.execute(statement)
    for row in db.execute("SELECT id, callback_url FROM webhook_subscriptions").fetchall():
        url = row[1]
        db.execute(
            "UPDATE webhook_subscriptions SET callback_hash = ?, callback_host = ?, status = ? WHERE id = ?",
            (hashlib.sha256(url.encode()).hexdigest(), _origin(url), "active", row[0]),
        )
    db.execute("UPDATE webhook_subscriptions SET status = 'removed' WHERE deleted_at IS NOT NULL")
    db.execute("UPDATE webhook_subscriptions SET since_seq = (SELECT coalesce(max(seq), 0) FROM events)")


WEBHOOK_ENTITY_ORDER = """
-- A notification about an entity with an earlier one still on its way is held by that delivery
-- (held_by) until it is delivered, dead or cancelled. Held notifications are not due: an idle worker
-- neither looks at them nor takes the write lock for them, however many pile up behind a retry.
ALTER TABLE webhook_notifications ADD COLUMN held_by TEXT;
DROP INDEX webhook_notifications_waiting;
DROP INDEX webhook_notifications_due;
CREATE INDEX webhook_notifications_waiting ON webhook_notifications(subscription_id, id)
    WHERE delivery_id IS NULL AND held_by IS NULL;
CREATE INDEX webhook_notifications_due ON webhook_notifications(due_at) WHERE delivery_id IS NULL AND held_by IS NULL;
CREATE INDEX webhook_notifications_held ON webhook_notifications(held_by) WHERE held_by IS NOT NULL;
-- Which deliveries carry notifications about an entity: the order check looks up waiting keys only.
CREATE INDEX webhook_notifications_entity ON webhook_notifications(subscription_id, entity_key, delivery_id);
"""


@migrations(name="0005_webhook_entity_order")
def webhook_entity_order(db: Database) -> None:
    """Per-entity order at a cost that does not grow with the backlog (bench/results/delivery.md):
    before, every round looked at every unfinished delivery of a subscription and at every
    notification waiting behind one."""
    for statement in _statements(WEBHOOK_ENTITY_ORDER):
        db.execute(statement)


NAME_KEYS = """
-- The comparison key of each name that identifies something (storage/names.py: NFC, full case folding,
-- NFC): written beside the name as the user gave it, so equality is an index lookup. NULL for no value.
ALTER TABLE users ADD COLUMN login_key TEXT;
ALTER TABLE users ADD COLUMN email_key TEXT;
ALTER TABLE categories ADD COLUMN name_key TEXT;
ALTER TABLE tags ADD COLUMN name_key TEXT;
ALTER TABLE courses ADD COLUMN url_key TEXT;
ALTER TABLE courses ADD COLUMN site_url_key TEXT;
UPDATE users SET login_key = coursewire_name_key(login_name), email_key = coursewire_name_key(email);
UPDATE categories SET name_key = coursewire_name_key(name);
UPDATE tags SET name_key = coursewire_name_key(name);
UPDATE courses SET url_key = coursewire_name_key(url), site_url_key = coursewire_name_key(site_url);
-- Not UNIQUE: rows stored before this migration may share a key, and must stay as they are. The
-- check-then-write in each write transaction (BEGIN IMMEDIATE) keeps new rows unique.
-- users_login was UNIQUE on login_name COLLATE NOCASE: a user stored decomposed (`josé`) beside one
-- stored composed could then not even be saved composed. It stays, for `$filter=LoginName eq`, not unique.
DROP INDEX users_login;
CREATE INDEX users_login ON users(login_name COLLATE NOCASE) WHERE is_deleted = 0;
CREATE INDEX users_login_key ON users(login_key) WHERE is_deleted = 0;
CREATE INDEX users_email_key ON users(email_key) WHERE is_deleted = 0 AND email_key IS NOT NULL;
CREATE INDEX categories_name_key ON categories(catalog_id, name_key);
CREATE INDEX tags_name_key ON tags(catalog_id, name_key);
CREATE INDEX courses_url_key ON courses(url_key) WHERE site_url IS NULL AND is_deleted = 0;
CREATE INDEX courses_site_url_key ON courses(site_url_key) WHERE site_url_key IS NOT NULL
"""


@migrations(name="0006_name_keys")
def name_keys(db: Database) -> None:
    """Login names, e-mails, tag and category names and course Urls compare by one key (issue 8).

    Why a plain index and a check in the write transaction rather than a UNIQUE index: a database may
    already hold live rows whose names now share a key (`josé` composed and decomposed), and a UNIQUE
    index over them cannot be built without changing or hiding one of them, which is the user's data.
    So every row is kept as it was; the storage verbs look the key up inside their BEGIN IMMEDIATE
    transaction, which holds SQLite's write lock from the check to the commit across threads and
    processes, so no other writer can slip a row in between; and a lookup by a key that two live rows
    share is a Conflict naming both, never a guess. users_login, UNIQUE on the login name under NOCASE,
    becomes a plain index: saving a legacy `josé` (decomposed) composed would have broken it beside its
    composed twin. The other UNIQUE NOCASE indexes (tag, category names, reserved course Urls) stay: no
    write renames those rows, and a key that is free is free under NOCASE too (NOCASE-equal texts have
    equal keys).

    Custom field ids are uuid5 of the title's key from here on (of `title.lower()` before): the same for
    ASCII titles, different where lower() and the key differ (`Straße`, decomposed text). The ids stored
    in users' field values are recomputed, so one field keeps one id across old and new rows; titles and
    values are not touched.
    """
    # The one definition of the key and of field ids (imported here: storage.db imports this module).
    from storage import names
    from storage.users import field_id

    db.conn.create_function("coursewire_name_key", 1, names.stored_key, deterministic=True)
    for statement in _statements(NAME_KEYS):
        db.execute(statement)
    rows = db.execute("SELECT id, field_values FROM users WHERE field_values <> '[]'").fetchall()
    for user_id, text in rows:
        values = json.loads(text)
        changed = False
        for item in values:
            if isinstance(item, dict) and isinstance(item.get("FieldTitle"), str) and item["FieldTitle"].strip():
                new_id = field_id(item["FieldTitle"])
                changed |= item.get("FieldId") != new_id
                item["FieldId"] = new_id
        if changed:
            db.execute(
                "UPDATE users SET field_values = ? WHERE id = ?", (json.dumps(values, separators=(",", ":")), user_id)
            )


@migrations(name="0007_files_by_uploader")
def files_by_uploader(db: Database) -> None:
    """What a user keeps in uploaded files, summed for the upload quota on every upload of someone who is not an
    administrator, is one index range instead of a scan of every file."""
    db.execute("CREATE INDEX files_uploaded_by ON files(uploaded_by, size)")


@migrations(name="0008_links_relative_to_base_url")
def links_relative_to_base_url(db: Database) -> None:
    """Catalog and course Urls are stored relative to the public base URL and made absolute when read
    (issue 9), so they follow COURSEWIRE_PUBLIC_URL or the request's host instead of keeping the one they
    were created under.

    A catalog's Url was `<base>/catalogs/<slug>`: it becomes `catalogs/<slug>`, and `base_url` keeps
    `<base>` for readers without a request (event snapshots). A course Url below its catalog's old Url
    moves with it (requested and reserved alike, keys recomputed); one a client gave as an absolute URL
    elsewhere stays. Two catalogs with the same slug under different hosts get `-2`, `-3`... as new ones do.
    """
    from storage import names  # storage.db imports this module

    db.execute("ALTER TABLE catalogs ADD COLUMN base_url TEXT")
    moved: dict[str, tuple[str, str]] = {}  # catalog id -> (old absolute Url, new relative Url)
    taken: set[str] = set()
    rows = db.execute("SELECT id, url FROM catalogs ORDER BY created_at, id").fetchall()
    for catalog_id, url in rows:
        base, found, slug = url.rpartition("/catalogs/")
        if not found or "/" in slug or not slug or not base.lower().startswith(("http://", "https://")):
            taken.add(url.lower())
            continue
        path, n = f"catalogs/{slug}", 1
        while path.lower() in taken:
            n += 1
            path = f"catalogs/{slug}-{n}"
        taken.add(path.lower())
        moved[catalog_id] = (url, path)
        db.execute("UPDATE catalogs SET url = ?, base_url = ? WHERE id = ?", (path, base, catalog_id))

    def relative(url: str | None, old: str, new: str) -> str | None:
        return new + url[len(old) :] if url is not None and url.startswith(old + "/") else url

    courses = db.execute("SELECT id, catalog_id, url, site_url FROM courses").fetchall()
    for course_id, catalog_id, url, site_url in courses:
        if catalog_id not in moved:
            continue
        old, new = moved[catalog_id]
        url, site_url = relative(url, old, new), relative(site_url, old, new)
        db.execute(
            "UPDATE courses SET url = ?, url_key = ?, site_url = ?, site_url_key = ? WHERE id = ?",
            (url, names.stored_key(url), site_url, names.stored_key(site_url), course_id),
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (our scripts have no `;` inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


CALENDAR_MIRROR = """
-- One row: which providers the account owner enabled (docs/design.md, "Calendar mirror").
CREATE TABLE calendar_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    microsoft365_enabled INTEGER NOT NULL DEFAULT 0,
    google_enabled INTEGER NOT NULL DEFAULT 0,
    caldav_enabled INTEGER NOT NULL DEFAULT 0,
    email_fallback_enabled INTEGER NOT NULL DEFAULT 1,
    modified_at TEXT NOT NULL
);
-- A person's connected calendar. state 'active' is the connection (one per user); 'removing' waits for the
-- worker to delete its events from the calendar (disconnect without KeepEvents), then the row goes.
-- status: Connected | NeedsReauthorization | Error (Paused is shown when sync is off or the provider disabled).
-- credentials: sealed JSON (refresh/access token and expiry, or CalDAV user name and password).
CREATE TABLE calendar_connections (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL CHECK (provider IN ('Microsoft365', 'Google', 'CalDAV')),
    account TEXT,
    calendar TEXT,
    credentials TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'removing')),
    status TEXT NOT NULL DEFAULT 'Connected' CHECK (status IN ('Connected', 'NeedsReauthorization', 'Error')),
    sync_enabled INTEGER NOT NULL DEFAULT 1,
    connected_at TEXT NOT NULL,
    last_sync_at TEXT,
    last_error TEXT,
    modified_at TEXT NOT NULL
);
CREATE UNIQUE INDEX calendar_connections_user ON calendar_connections(user_id) WHERE state = 'active';
CREATE INDEX calendar_connections_status ON calendar_connections(status, provider);
CREATE INDEX calendar_connections_removing ON calendar_connections(state) WHERE state = 'removing';
-- What was last written for a person and session day, per channel: a connection's calendar, or e-mail
-- (connection_id NULL). digest: CalendarItem.digest() of what was written; sequence: iCalendar SEQUENCE;
-- day_start, time_zone and subject as written, so a CANCEL for a day that is gone still names it.
CREATE TABLE calendar_items (
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    day_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    connection_id TEXT,
    provider_id TEXT,
    etag TEXT,
    uid TEXT NOT NULL,
    sequence INTEGER NOT NULL DEFAULT 0,
    digest TEXT NOT NULL,
    day_start TEXT,
    day_end TEXT NOT NULL,
    time_zone TEXT,
    subject TEXT,
    written_at TEXT NOT NULL,
    PRIMARY KEY (user_id, session_id, day_id, channel)
);
CREATE INDEX calendar_items_session ON calendar_items(session_id);
CREATE INDEX calendar_items_connection ON calendar_items(connection_id) WHERE connection_id IS NOT NULL;
-- The iCalendar SEQUENCE last used per UID, kept when an item row goes, so a REQUEST after a CANCEL is newer.
CREATE TABLE calendar_sequences (
    uid TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL
);
-- (person, session) pairs whose calendar may differ from what it should hold. A burst of edits bumps
-- version; the worker leases a pair, writes the difference, and drops the row only if version is unchanged.
CREATE TABLE calendar_dirty (
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    due_at TEXT NOT NULL,
    owner TEXT,
    lease_until TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (user_id, session_id)
);
CREATE INDEX calendar_dirty_due ON calendar_dirty(due_at) WHERE owner IS NULL;
CREATE INDEX calendar_dirty_leased ON calendar_dirty(lease_until) WHERE owner IS NOT NULL;
-- Signed single-use links to a person's calendar page (token hash only), page sessions and OAuth states.
CREATE TABLE calendar_links (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
CREATE INDEX calendar_links_expiry ON calendar_links(expires_at);
CREATE INDEX calendar_links_user ON calendar_links(user_id, created_at);
CREATE TABLE calendar_page_sessions (
    session_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX calendar_page_sessions_expiry ON calendar_page_sessions(expires_at);
CREATE INDEX calendar_page_sessions_user ON calendar_page_sessions(user_id, created_at);
CREATE TABLE calendar_oauth_states (
    state_hash TEXT PRIMARY KEY,
    session_hash TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    provider TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX calendar_oauth_states_expiry ON calendar_oauth_states(expires_at);
CREATE INDEX calendar_oauth_states_session ON calendar_oauth_states(session_hash);
-- What the last worker started with (key 'mail': 'on' when SMTP was configured), to notice a change.
CREATE TABLE calendar_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@migrations(name="0009_calendar_mirror")
def calendar_mirror(db: Database) -> None:
    """The ILT calendar mirror (issue 10): settings, connections, written items, the dirty queue, links,
    page sessions and OAuth states."""
    for statement in _statements(CALENDAR_MIRROR):
        db.execute(statement)


CALENDAR_TWO_WAY = """
-- Whether a learner who deletes a session's event from their calendar is unregistered (issue 11).
ALTER TABLE calendar_settings ADD COLUMN unregister_on_delete INTEGER NOT NULL DEFAULT 1;
-- When the person deleted the event from their calendar (and it was kept deleted: an instructor, a past session,
-- the setting off). The item is written again only when what it should hold changes (its digest).
ALTER TABLE calendar_items ADD COLUMN deleted_at TEXT;
CREATE INDEX calendar_items_provider ON calendar_items(connection_id, provider_id) WHERE connection_id IS NOT NULL;
-- How the mirror hears about changes in a connected calendar: a push channel (Graph subscription, Google
-- events.watch channel: channel_id, resource_id, the SHA-256 of the clientState or channel token, expiry) and the
-- change cursor (Graph deltaLink, Google sync token, CalDAV sync-token; NULL: the next check lists everything).
-- check_due_at: when the next check is due (a notification makes it due at once; else the sweep or poll
-- interval); owner/lease_until: the worker checking it.
CREATE TABLE calendar_watches (
    connection_id TEXT PRIMARY KEY,
    channel_id TEXT,
    resource_id TEXT,
    secret_hash TEXT,
    expires_at TEXT,
    watch_due_at TEXT,
    watch_error TEXT,
    cursor TEXT,
    full_check INTEGER NOT NULL DEFAULT 1,
    check_due_at TEXT NOT NULL,
    owner TEXT,
    lease_until TEXT,
    last_check_at TEXT,
    last_check_error TEXT,
    last_notification_at TEXT,
    notifications INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX calendar_watches_channel ON calendar_watches(channel_id) WHERE channel_id IS NOT NULL;
CREATE INDEX calendar_watches_check ON calendar_watches(check_due_at);
CREATE INDEX calendar_watches_watch ON calendar_watches(watch_due_at) WHERE watch_due_at IS NOT NULL;
"""


@migrations(name="0010_calendar_two_way")
def calendar_two_way(db: Database) -> None:
    """The two-way mirror (issue 11): the UnregisterOnCalendarDelete setting, items the person deleted, and each
    connection's push channel and change cursor."""
    for statement in _statements(CALENDAR_TWO_WAY):
        db.execute(statement)


CALENDAR_TENANT = """
-- Tenant-wide Microsoft 365 (issue 11): one row, the tenant an administrator connected with the app's own
-- permissions (client credentials; Calendars.ReadWrite and User.Read.All with admin consent), whether it is on,
-- and the roster's last round.
CREATE TABLE calendar_tenant (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tenant_id TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 0,
    enabled_at TEXT,
    enabled_by TEXT,
    last_roster_at TEXT,
    last_error TEXT,
    modified_at TEXT NOT NULL
);
-- A connection the roster made: the Graph user id of the person's mailbox (NULL: the person's own OAuth
-- connection) and when the roster last saw that it still matches.
ALTER TABLE calendar_connections ADD COLUMN tenant_mailbox TEXT;
ALTER TABLE calendar_connections ADD COLUMN tenant_checked_at TEXT;
CREATE UNIQUE INDEX calendar_connections_tenant_mailbox ON calendar_connections(tenant_mailbox)
    WHERE tenant_mailbox IS NOT NULL AND state = 'active';
CREATE INDEX calendar_connections_tenant_checked ON calendar_connections(tenant_checked_at)
    WHERE tenant_mailbox IS NOT NULL;
-- People the roster looked up and found no mailbox for, and when: looked up again after a while or when they
-- change (users.modified_at).
CREATE TABLE calendar_tenant_misses (
    user_id TEXT PRIMARY KEY,
    looked_at TEXT NOT NULL
);
"""


@migrations(name="0011_calendar_tenant")
def calendar_tenant(db: Database) -> None:
    """Tenant-wide Microsoft 365 (issue 11): the tenant row, tenant-made connections, the roster's misses."""
    for statement in _statements(CALENDAR_TENANT):
        db.execute(statement)


CALENDAR_FOLLOWED = """
-- When the mirror last found this event of ours in another of the person's calendars than the connected one
-- (moved there by the person, and followed there). Only the connected calendar is watched, so such an event is
-- read again every sweep (or CalDAV poll): its deletion there is a deletion like any other.
ALTER TABLE calendar_items ADD COLUMN followed_at TEXT;
"""


@migrations(name="0012_calendar_followed")
def calendar_followed(db: Database) -> None:
    """Events followed to another calendar (issue 11): when each was last found there."""
    for statement in _statements(CALENDAR_FOLLOWED):
        db.execute(statement)
