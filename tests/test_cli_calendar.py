"""`coursewire calendar settings` through click's runner, and `coursewire check` on the e-mail fallback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.cli import main
from storage import calendar, events
from storage.db import Database

GOOGLE = {"COURSEWIRE_GOOGLE_CLIENT_ID": "client", "COURSEWIRE_GOOGLE_CLIENT_SECRET": "secret"}
MAIL = {"COURSEWIRE_SMTP_URL": "smtp://mail.example:587", "COURSEWIRE_MAIL_FROM": "lms@x.example"}
UNSET = {
    name: None for name in (*GOOGLE, *MAIL, "COURSEWIRE_MICROSOFT_CLIENT_ID", "COURSEWIRE_MICROSOFT_CLIENT_SECRET")
}


@pytest.fixture
def run(tmp_path: Path):
    def invoke(*args: str, env: dict[str, str] | None = None, ok: bool = True) -> Result:
        result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), *args], env={**UNSET, **(env or {})})
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def _stored(tmp_path: Path) -> dict[str, object]:
    db = Database(str(tmp_path / "data" / "coursewire.db"))
    try:
        return calendar.get_settings(db)
    finally:
        db.close()


def test_settings_show_each_switch_and_what_it_needs(run) -> None:
    """Without changes: every provider off, e-mail on but not in effect, and the variable each one lacks;
    unregistering on a deleted calendar event on (it needs no variable)."""
    lines = run("calendar", "settings").output.splitlines()
    assert lines == [
        "Microsoft 365:         off  (COURSEWIRE_MICROSOFT_CLIENT_ID is not set; set it before --enable microsoft365)",
        "Google:                off  (COURSEWIRE_GOOGLE_CLIENT_ID is not set; set it before --enable google)",
        "CalDAV:                off",
        "E-mail fallback:       on  (not in effect: COURSEWIRE_SMTP_URL is not set)",
        "Unregister on delete:  on",
        "Last changed: never (defaults)",
    ]


def test_enable_and_disable_change_the_settings(run, tmp_path: Path) -> None:
    """--enable and --disable (repeatable, any case) change the same settings the API shows, as the CLI actor."""
    output = run(
        "calendar", "settings", "--enable", "google", "--enable", "CalDAV", "--disable", "email", env=GOOGLE
    ).output
    assert "Google:                on\n" in output and "CalDAV:                on\n" in output
    assert "E-mail fallback:       off" in output
    assert _stored(tmp_path) | {"ModifiedAt": None} == {
        "Microsoft365Enabled": False,
        "GoogleEnabled": True,
        "CalDAVEnabled": True,
        "EmailFallbackEnabled": False,
        "UnregisterOnCalendarDelete": True,
        "ModifiedAt": None,
    }
    db = Database(str(tmp_path / "data" / "coursewire.db"))
    try:
        changed = events.read_after(db, 0, types=["CalendarSettingsChanged"])
    finally:
        db.close()
    assert [e.actor["kind"] for e in changed] == ["cli"]


def test_unregister_on_delete_is_turned_off_and_on(run, tmp_path: Path) -> None:
    """--disable unregister-on-delete keeps a learner who deletes a session's event registered; --enable turns it
    back on; neither needs a variable, and the other switches stay as they were."""
    off = run("calendar", "settings", "--disable", "unregister-on-delete").output
    assert "Unregister on delete:  off\n" in off and "E-mail fallback:       on" in off
    assert _stored(tmp_path)["UnregisterOnCalendarDelete"] is False
    on = run("calendar", "settings", "--enable", "Unregister-On-Delete").output
    assert "Unregister on delete:  on\n" in on
    stored = _stored(tmp_path)
    assert (stored["UnregisterOnCalendarDelete"], stored["EmailFallbackEnabled"]) == (True, True)


@pytest.mark.parametrize(
    ("option", "variable", "env"),
    [
        ("microsoft365", "COURSEWIRE_MICROSOFT_CLIENT_ID", {}),
        ("google", "COURSEWIRE_GOOGLE_CLIENT_SECRET", {"COURSEWIRE_GOOGLE_CLIENT_ID": "client"}),
        ("email", "COURSEWIRE_MAIL_FROM", {"COURSEWIRE_SMTP_URL": "smtp://mail.example"}),
    ],
)
def test_what_is_not_configured_cannot_be_enabled(
    run, tmp_path: Path, option: str, variable: str, env: dict[str, str]
) -> None:
    """Enabling a provider (or e-mail) whose variables are unset is one error line naming the option and the
    variable; nothing changes."""
    result = run("calendar", "settings", "--enable", "caldav", "--enable", option, env=env, ok=False)
    assert result.exit_code == 1
    assert (
        result.output.strip() == f"Error: --enable {option}: {variable} is not set in this command's environment;"
        " set it here as for the server"
    )
    assert _stored(tmp_path)["CalDAVEnabled"] is False


def test_enable_and_disable_of_the_same_switch_is_a_usage_error(run) -> None:
    """Naming one switch in both --enable and --disable is refused before anything changes."""
    result = run("calendar", "settings", "--enable", "caldav", "--disable", "CALDAV", ok=False)
    assert result.exit_code == 2 and "--enable and --disable both name caldav" in result.output


def test_check_says_when_the_email_fallback_is_off(run) -> None:
    """`coursewire check` warns, naming the variable, while SMTP is not configured, and not once it is."""
    off = run("check").output
    assert "WARNING EmailFallbackOff: COURSEWIRE_SMTP_URL: not set, so the e-mail fallback is off" in off
    on = run("check", env=MAIL).output
    assert "EmailFallbackOff" not in on
    assert _warnings(off) == _warnings(on) + 1 and "0 error(s)" in off


def _warnings(output: str) -> int:
    found = re.search(r"(\d+) warning\(s\)", output)
    assert found, output
    return int(found[1])


def test_check_says_when_push_notifications_cannot_reach_this_server(run) -> None:
    """With a Microsoft or Google client configured, `coursewire check` warns while COURSEWIRE_PUBLIC_URL is not
    https (the providers' notifications cannot reach the server; deletions wait for the sweep), and not once it is."""
    client = {**MAIL, "COURSEWIRE_MICROSOFT_CLIENT_ID": "app", "COURSEWIRE_MICROSOFT_CLIENT_SECRET": "s"}
    plain = run("check", env={**client, "COURSEWIRE_PUBLIC_URL": "http://lms.example"}).output
    assert "WARNING CalendarPushOff: COURSEWIRE_PUBLIC_URL: not an https address" in plain
    secure = run("check", env={**client, "COURSEWIRE_PUBLIC_URL": "https://lms.example"}).output
    assert "CalendarPushOff" not in secure
    assert "CalendarPushOff" not in run("check", env=MAIL).output  # no provider that pushes is configured
