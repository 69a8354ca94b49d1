"""`coursewire calendar status` and `coursewire calendar resync` through click's runner, on the demo data with
calendars connected through storage (issue 11, "Keeping it right")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.cli import main
from storage import calendar, calendar_watch
from storage.db import Database
from storage.models import CLI

# No provider client and no mail server: the worker writes nothing anywhere (people get e-mail, which is off).
UNSET = {
    name: None
    for name in (
        "COURSEWIRE_GOOGLE_CLIENT_ID",
        "COURSEWIRE_GOOGLE_CLIENT_SECRET",
        "COURSEWIRE_MICROSOFT_CLIENT_ID",
        "COURSEWIRE_MICROSOFT_CLIENT_SECRET",
        "COURSEWIRE_SMTP_URL",
        "COURSEWIRE_MAIL_FROM",
    )
}


@dataclass
class World:
    """The demo data, with Lena's CalDAV calendar watched and then paused, and Omar's Google calendar needing
    reauthorization. `run` invokes the CLI on it; `db` is its database."""

    tmp_path: Path
    db: Database
    users: dict[str, str]  # first name -> user id
    session: str  # "First aid, Copenhagen": Ivan teaches, Lena, Omar, Pia registered, Raj waitlisted
    lena_connection: str

    def run(self, *args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(main, ["--data-dir", str(self.tmp_path / "data"), *args], env=UNSET)
        if ok:
            assert result.exit_code == 0, result.output
        return result


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), "demo"], env=UNSET)
    assert result.exit_code == 0, result.output
    db = Database(str(tmp_path / "data" / "coursewire.db"))
    with db.read() as conn:
        users = {
            r[0].split(".")[0]: r[1]
            for r in conn.execute("SELECT login_name, id FROM users WHERE login_name LIKE '%@contoso.example'")
        }
        session = conn.execute("SELECT id FROM course_sessions WHERE title = 'First aid, Copenhagen'").fetchone()[0]
    calendar.update_settings(db, CLI, {"CalDAVEnabled": True, "GoogleEnabled": True})
    calendar.connect(
        db, CLI, users["lena"], "CalDAV", account="lena", calendar="https://dav.example/lena/", credentials="-"
    )
    calendar.connect(db, CLI, users["omar"], "Google", account="omar@gmail.example", calendar=None, credentials="-")
    lena = calendar.active_connection(db, users["lena"])
    omar = calendar.active_connection(db, users["omar"])
    assert lena is not None and omar is not None
    calendar.set_status(db, omar.id, "NeedsReauthorization", "invalid_grant")  # so not watched
    # Lena's calendar was watched and checked once (its next check in 5 minutes), then she paused the mirror.
    now = db.clock()
    calendar_watch.ensure(db, now)
    assert [c.connection_id for c in calendar_watch.claim_checks(db, "t", 5, timedelta(minutes=1), now)] == [lena.id]
    with db.write() as conn:
        calendar_watch.checked(
            conn, "t", lena.id, cursor="token-1", next_due=now + timedelta(minutes=5), now=now, started=now
        )
    calendar.set_sync_enabled(db, CLI, users["lena"], False)
    try:
        yield World(tmp_path, db, users, session, lena.id)
    finally:
        db.close()


def _dump(db: Database) -> list[str]:
    with db.read() as conn:
        return list(conn.iterdump())


def test_status_lists_connections_that_need_attention(world: World) -> None:
    """Counts by the status the API shows (Paused included), one line per connection that is not Connected with
    its person, provider, status, last check and last error, then the sync health; it changes nothing."""
    before = _dump(world.db)
    lines = world.run("calendar", "status").output.splitlines()
    assert lines[0] == "Connections: 2 (NeedsReauthorization 1, Paused 1)"
    lena, omar = lines[1], lines[2]
    assert lena.startswith("  lena.learner@contoso.example  CalDAV  Paused  last check: 20")
    assert "error" not in lena
    assert omar == (
        "  omar.learner@contoso.example  Google  NeedsReauthorization  last check: never  error: invalid_grant"
    )
    assert lines[3].startswith("Watched: 1; channel errors: 0; check errors: 0; oldest check: 20")
    assert lines[3].endswith("soonest channel expiry: none")
    assert lines[4].startswith("Stored statuses: Connected 1, NeedsReauthorization 1, Error 0; pairs waiting")
    assert _dump(world.db) == before


def test_status_json(world: World) -> None:
    """--json prints one object: counts by status, the connections not Connected, the health figures of
    GetCalendarSyncHealth and the pairs waiting for the worker."""
    shown = json.loads(world.run("calendar", "status", "--json").output)
    assert shown["by_status"] == {"NeedsReauthorization": 1, "Paused": 1}
    assert [(c["login_name"], c["status"], c["last_error"]) for c in shown["not_connected"]] == [
        ("lena.learner@contoso.example", "Paused", None),
        ("omar.learner@contoso.example", "NeedsReauthorization", "invalid_grant"),
    ]
    assert shown["not_connected"][0]["last_check_at"] is not None
    assert shown["health"]["ByProvider"] == {"CalDAV": 1, "Google": 1}
    assert shown["health"]["Watched"] == 1
    assert isinstance(shown["pending_pairs"], int)


def test_status_of_an_empty_database(tmp_path: Path) -> None:
    """Without any connection: zero, and health without times."""
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), "calendar", "status"], env=UNSET)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "Connections: 0"
    assert "oldest check: none; soonest channel expiry: none" in result.output


def test_resync_dry_run_prints_what_it_would_queue_and_changes_nothing(world: World) -> None:
    """--dry-run names each (person, session) pair and each connected calendar it would look at (a calendar it
    cannot read is named with the reason); the database is the same afterwards, byte for byte in its dump."""
    before = _dump(world.db)
    output = world.run("calendar", "resync", "--session", world.session, "--dry-run").output
    lines = output.splitlines()
    assert lines[0] == "Would queue 5 pair(s) (person, session):"
    people = [line.split()[0] for line in lines[1:6]]  # sorted by person
    assert people == sorted(
        f"{n}@contoso.example" for n in ("ivan.instructor", *(f"{p}.learner" for p in ("lena", "omar", "pia", "raj")))
    )
    assert all(f"First aid, Copenhagen ({world.session})" in line for line in lines[1:6])
    assert lines[6] == "Would look for strays in 2 connected calendar(s):"
    assert lines[7:9] == [
        "  lena.learner@contoso.example  CalDAV  lena",
        "  omar.learner@contoso.example  Google  omar@gmail.example",
    ]
    assert lines[-2] == "Would remove 0 stray event(s) of ours."
    assert lines[-1] == "Dry run: nothing was changed."
    assert sum("Could not read the" in line for line in lines) == 2  # the stand-in credentials open nothing
    assert _dump(world.db) == before
    everything = world.run("calendar", "resync", "--dry-run").output
    assert "Would look for strays in 2 connected calendar(s):" in everything
    assert _dump(world.db) == before


def test_resync_of_a_user_writes_their_events_again_and_runs_the_mirror(world: World) -> None:
    """--user marks the person's calendar items to be written again as they are (calendar_watch.force_rewrite:
    a missing event is created again, not taken for a deletion) and queues their pairs, runs the calendar
    worker until it is idle and says how many pairs it worked on; nothing is left waiting (no calendar can be
    written here, and e-mail is off, so each pair is done at once)."""
    result = world.run("calendar", "resync", "--user", world.users["lena"].upper())
    assert result.output.startswith("Queued 1 pair(s); 0 event(s) to write again.")
    last = result.output.splitlines()[-1]
    assert last.startswith("Done: the calendar mirror worked on ") and last.endswith("; no pair is waiting.")
    assert int(last.split("worked on ")[1].split(" ")[0]) >= 1
    assert calendar.pending(world.db) == 0
    with world.db.read() as conn:
        assert conn.execute("SELECT full_check FROM calendar_watches").fetchall() in ([], [(0,)])  # no full check


def test_resync_of_both_options_takes_the_pairs_in_common(world: World) -> None:
    """--user and --session together: only that person's pair of that session; an unknown id is one error line
    naming it, and nothing is queued."""
    output = world.run("calendar", "resync", "--user", world.users["raj"], "--session", world.session, "--dry-run")
    assert output.output.splitlines()[:2] == [
        "Would queue 1 pair(s) (person, session):",
        f"  raj.learner@contoso.example  First aid, Copenhagen ({world.session})",
    ]
    missing = world.run("calendar", "resync", "--user", "0b5e9f0e-0000-4000-8000-000000000000", ok=False)
    assert missing.exit_code == 1
    assert missing.output.strip() == "Error: no user with Id '0b5e9f0e-0000-4000-8000-000000000000'"
    assert calendar.pending(world.db) == 0


def test_status_names_the_pairs_waiting_for_a_retry_and_why(world: World) -> None:
    """A newcomer read "1 pair(s) wait for a retry (see coursewire calendar status)" and found no pair there:
    status lists each pair that failed (person, session, failures, next try, last error), text and JSON."""
    now = world.db.clock()
    with world.db.write() as conn:
        calendar.mark_dirty(conn, {(world.users["pia"], world.session)}, now)
    claimed = calendar.claim(world.db, "t", 10, timedelta(minutes=1), now)
    (pair,) = [p for p in claimed if p.user_id == world.users["pia"]]
    with world.db.write() as conn:
        calendar.retry(conn, "t", pair, now + timedelta(minutes=2), "HTTP 503 from the CalDAV server")
    lines = world.run("calendar", "status").output.splitlines()
    at = lines.index("Waiting for a retry (the first 20, soonest first):")
    assert lines[at + 1].startswith("  pia.learner@contoso.example  First aid, Copenhagen  failed 1x  next try: 20")
    assert lines[at + 1].endswith("error: HTTP 503 from the CalDAV server")
    shown = json.loads(world.run("calendar", "status", "--json").output)
    assert [(r["login_name"], r["attempts"], r["last_error"]) for r in shown["retrying"]] == [
        ("pia.learner@contoso.example", 1, "HTTP 503 from the CalDAV server")
    ]
