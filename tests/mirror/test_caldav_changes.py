"""CalDAV as a change feed, against a real Radicale: RFC 6578 sync-collection with its tokens, what a person does
in their own calendar app (events added, edited, deleted, moved to another calendar), and the calendar or the
password going away; a server without sync-collection (tests/mirror/dav_hostile.py) is listed in full."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import pytest
from contract import item, put, run
from dav_hostile import dav_server, multistatus, response
from icalendar import Calendar
from radicale_support import CalDAVEnv

from calendars.model import (
    AuthorizationLost,
    CalendarGone,
    Change,
    Changes,
    CursorExpired,
    Rejected,
    RemoteEvent,
    Written,
)
from calendars.providers import caldav
from calendars.providers.caldav import CalDAVProvider

T = TypeVar("T")

PERSONAL_EVENT = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//person//app//EN\r\nBEGIN:VEVENT\r\nUID:dentist@example.com\r\n"
    b"DTSTAMP:20300101T000000Z\r\nDTSTART:20300310T090000Z\r\nDTEND:20300310T100000Z\r\nSUMMARY:Dentist\r\n"
    b"END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def changes(env: CalDAVEnv, cursor: str | None) -> Changes:
    return on(env, lambda p: p.changes(cursor))


def on(env: CalDAVEnv, step: Callable[[CalDAVProvider], Awaitable[T]]) -> T:
    return run(env, step)  # type: ignore[arg-type]


def person_puts(env: CalDAVEnv, path: str, data: bytes) -> str:
    """The person's calendar app writes `data` at `path`; the URL the provider knows it by."""
    answer = env.person("PUT", path, data, {"Content-Type": "text/calendar"})
    assert answer.status in (201, 204), answer
    return env.proxy.url + path


def ids(found: Changes) -> set[tuple[str, bool]]:
    return {(c.provider_id, c.removed) for c in found.changes}


def test_the_first_listing_names_every_event_of_the_calendar(caldav_env: CalDAVEnv) -> None:
    """changes(None) is a full listing by sync-collection (Depth 0, empty token): our events and the person's own,
    none removed, and a sync token to continue from."""
    ours = [put(caldav_env, item("day1")), put(caldav_env, item("day2"))]
    theirs = person_puts(caldav_env, caldav_env.calendar_path + "dentist.ics", PERSONAL_EVENT)
    found = changes(caldav_env, None)
    assert (found.full, found.more) == (True, False)
    assert ids(found) == {(w.provider_id, False) for w in ours} | {(theirs, False)}
    assert all(c.key is None for c in found.changes)
    assert found.cursor.startswith("http://radicale.org/ns/sync/")
    report = caldav_env.exchanges()[-1]
    assert (report.method, report.path, report.headers["Depth"], report.status) == (
        "REPORT",
        caldav_env.calendar_path,
        "0",
        207,
    )


def test_each_change_by_the_person_is_reported_once(caldav_env: CalDAVEnv) -> None:
    """After the first listing, each call reports only what changed since its cursor: an event the person added,
    one they edited, one they deleted (a removal: a 404 member, RFC 6578 §3.5.2), and nothing when nothing did."""
    written = put(caldav_env, item("day1"))
    other = put(caldav_env, item("day2"))
    first = changes(caldav_env, None)
    quiet = changes(caldav_env, first.cursor)
    assert (quiet.changes, quiet.cursor, quiet.full) == ([], first.cursor, False)

    added = person_puts(caldav_env, caldav_env.calendar_path + "dentist.ics", PERSONAL_EVENT)
    after_add = changes(caldav_env, quiet.cursor)
    assert ids(after_add) == {(added, False)} and not after_add.full

    edited = PERSONAL_EVENT.replace(b"Dentist", b"Dentist (moved to 10:00)")
    person_puts(caldav_env, caldav_env.calendar_path + "dentist.ics", edited)
    after_edit = changes(caldav_env, after_add.cursor)
    assert ids(after_edit) == {(added, False)}

    caldav_env.delete_as_person(written.provider_id)
    after_delete = changes(caldav_env, after_edit.cursor)
    assert ids(after_delete) == {(written.provider_id, True)}

    put(caldav_env, item("day2", subject="Renamed"), other)
    assert ids(changes(caldav_env, after_delete.cursor)) == {(other.provider_id, False)}


def test_a_token_the_server_does_not_know_is_cursor_expired_then_a_full_listing_works(caldav_env: CalDAVEnv) -> None:
    """A corrupted token gets Radicale's 403 DAV:valid-sync-token (RFC 6578 §3.2): CursorExpired, and
    changes(None) then lists the calendar again."""
    written = put(caldav_env, item())
    cursor = changes(caldav_env, None).cursor
    corrupt = cursor[:-1] + ("0" if cursor[-1] != "0" else "1")
    with pytest.raises(CursorExpired):
        changes(caldav_env, corrupt)
    assert caldav_env.exchanges()[-1].status == 403
    again = changes(caldav_env, None)
    assert again.full and ids(again) == {(written.provider_id, False)}


def test_an_expired_token_is_cursor_expired(caldav_env: CalDAVEnv) -> None:
    """Radicale forgets a token older than `[storage] max_sync_token_age` by removing its state file; removing
    it here (no clock to wait for) makes the next call CursorExpired, not an error of the connection."""
    put(caldav_env, item())
    cursor = changes(caldav_env, None).cursor
    name = cursor.rsplit("/", 1)[-1]
    folder = caldav_env.server.storage / "collection-root" / caldav_env.username / "training"
    [state] = [p for p in folder.rglob(name) if p.parent.name == "sync-token"]
    state.unlink()
    person_puts(caldav_env, caldav_env.calendar_path + "dentist.ics", PERSONAL_EVENT)  # (an unchanged calendar
    with pytest.raises(CursorExpired):  # answers a token equal to the current one without reading its state)
        changes(caldav_env, cursor)


def test_a_deleted_calendar_is_calendar_gone(caldav_env: CalDAVEnv) -> None:
    """The person deleted the whole calendar: that is CalendarGone for the feed and for check_calendar, never a
    list of removed events (none of them was deleted by the person one by one)."""
    put(caldav_env, item())
    cursor = changes(caldav_env, None).cursor
    on(caldav_env, lambda p: p.check_calendar())
    answer = caldav_env.person("DELETE", caldav_env.calendar_path)
    assert answer.status in (200, 204), answer
    for step in (lambda p: p.changes(cursor), lambda p: p.changes(None), lambda p: p.check_calendar()):
        with pytest.raises(CalendarGone):
            on(caldav_env, step)


def test_a_changed_password_is_authorization_lost(caldav_env: CalDAVEnv) -> None:
    """A password that stopped working (401) is AuthorizationLost for the feed and for check_calendar."""
    cursor = changes(caldav_env, None).cursor
    caldav_env.fail_next("auth")
    for step in (lambda p: p.changes(cursor), lambda p: p.changes(None), lambda p: p.check_calendar()):
        with pytest.raises(AuthorizationLost):
            on(caldav_env, step)


def move_to_other_calendar(env: CalDAVEnv, written: Written, name: str = "moved-by-app.ics") -> str:
    """The person moves the event to their calendar "Personal" the way CalDAV apps do it: the same iCalendar
    object (same UID) PUT into the other collection under a name of the app's choice, then the original
    DELETEd. The event's new URL."""
    personal = env.make_calendar("personal", "Personal")
    data = env.files()[written.provider_id.rsplit("/", 1)[-1]]
    new_url = person_puts(env, personal + name, data)
    env.delete_as_person(written.provider_id)
    return new_url


def stored_at(env: CalDAVEnv, url: str) -> Any:
    answer = env.person("GET", urlsplit(url).path)
    if answer.status == 404:
        return None
    assert answer.status == 200, answer
    return Calendar.from_ical(answer.body).walk("VEVENT")[0]


def test_a_moved_event_is_found_in_the_other_calendar_and_followed_there(caldav_env: CalDAVEnv) -> None:
    """An event the person moved to another calendar is not a deletion: get finds it by UID (calendar-query,
    RFC 4791 §7.8) with its new URL; updates and the delete then go there, and nothing is created again in the
    connected calendar."""
    it = item()
    written = put(caldav_env, it)
    new_url = move_to_other_calendar(caldav_env, written)
    found = on(caldav_env, lambda p: p.get(written))
    assert found is not None
    assert (found.provider_id, found.key, found.subject) == (new_url, it.key, it.subject)
    assert found.extra["uid"] == it.uid

    moved = Written(found.provider_id, found.etag)
    updated = put(caldav_env, item(subject="Forklift safety, room changed"), moved)
    assert updated.provider_id == new_url
    assert str(stored_at(caldav_env, new_url)["SUMMARY"]) == "Forklift safety, room changed"
    assert caldav_env.events() == []
    again = on(caldav_env, lambda p: p.get(updated))
    assert again is not None and again.provider_id == new_url

    on(caldav_env, lambda p: p.delete(updated, it))
    assert stored_at(caldav_env, new_url) is None
    assert on(caldav_env, lambda p: p.get(updated)) is None
    assert on(caldav_env, lambda p: p.get(written)) is None


def test_a_session_edit_before_the_move_was_noticed_updates_the_moved_event(caldav_env: CalDAVEnv) -> None:
    """A write with the old URL after the person moved the event updates it where it now is, instead of
    creating a second copy in the connected calendar."""
    written = put(caldav_env, item())
    new_url = move_to_other_calendar(caldav_env, written)
    updated = put(caldav_env, item(subject="Later"), written)
    assert updated.provider_id == new_url
    assert caldav_env.events() == []
    assert str(stored_at(caldav_env, new_url)["SUMMARY"]) == "Later"


def test_a_deleted_event_is_searched_for_then_none(caldav_env: CalDAVEnv) -> None:
    """An event the person deleted (not moved) is looked for in their calendars, found nowhere: None; a UID that
    merely contains ours (text-match is a substring match) is not taken for it."""
    it = item()
    written = put(caldav_env, it)
    personal = caldav_env.make_calendar("personal", "Personal")
    lookalike = caldav_env.files()[f"{it.handle}.ics"].replace(it.uid.encode(), b"x" + it.uid.encode())
    person_puts(caldav_env, personal + "lookalike.ics", lookalike)
    caldav_env.delete_as_person(written.provider_id)
    assert on(caldav_env, lambda p: p.get(written)) is None
    reports = [e.path for e in caldav_env.exchanges() if e.method == "REPORT"]
    assert reports == [caldav_env.calendar_path, personal]


def test_an_event_of_another_name_gone_is_not_searched(caldav_env: CalDAVEnv) -> None:
    """A resource whose name is not one of ours gives no UID to look for: reading it once it is gone is None."""
    url = person_puts(caldav_env, caldav_env.calendar_path + "dentist.ics", PERSONAL_EVENT)
    caldav_env.delete_as_person(url)
    assert on(caldav_env, lambda p: p.get(Written(url))) is None
    assert [e.method for e in caldav_env.exchanges()] == ["GET"]


def test_check_calendar_passes_on_a_calendar_and_not_on_an_address_book(caldav_env: CalDAVEnv) -> None:
    """check_calendar is one PROPFIND Depth 0; a collection that is not a calendar (any more: here an address
    book at the address) is CalendarGone."""
    on(caldav_env, lambda p: p.check_calendar())
    assert [(e.method, e.headers["Depth"]) for e in caldav_env.exchanges()] == [("PROPFIND", "0")]
    answer = caldav_env.person(
        "MKCOL",
        f"/{caldav_env.username}/files/",
        b'<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>'
        b"<D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>",
        {"Content-Type": "application/xml"},
    )
    assert answer.status == 201, answer

    async def check() -> None:
        async with aiohttp.ClientSession() as session:
            url = caldav_env.proxy.url + f"/{caldav_env.username}/files/"
            await CalDAVProvider(session, url, caldav_env.username, caldav_env.password).check_calendar()

    with pytest.raises(CalendarGone):
        asyncio.run(check())


# --- servers without sync-collection, and what a server cannot make the feed do ------------------------------

CAL = "/cal/"
EVENT = '<D:getetag>"1"</D:getetag>'


def feed(url: str, cursor: str | None) -> Changes:
    async def go() -> Changes:
        async with aiohttp.ClientSession() as session:
            return await CalDAVProvider(session, url + CAL.lstrip("/"), "someone", "secret").changes(cursor)

    return asyncio.run(go())


LISTING = multistatus(
    response(CAL, "<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>"),
    response(CAL + "a.ics", EVENT + "<D:resourcetype/>"),
    response(CAL + "b.ics", EVENT),
    response(CAL + "inner/", "<D:resourcetype><D:collection/></D:resourcetype>"),
    response("/elsewhere/c.ics", EVENT),
)
UNSUPPORTED = {
    "501": (501, b"Not Implemented"),
    "403 supported-report": (403, b'<?xml version="1.0"?><D:error xmlns:D="DAV:"><D:supported-report/></D:error>'),
    "207 without a token": (207, multistatus(response(CAL + "a.ics", EVENT))),
}


@pytest.mark.parametrize("refusal", list(UNSUPPORTED))
def test_a_server_without_sync_collection_is_listed_in_full_every_time(refusal: str) -> None:
    """A server that does not do sync-collection (501, 403 DAV:supported-report, a 207 without DAV:sync-token)
    is listed by PROPFIND Depth 1 instead: the calendar's own resources (not sub-collections, nor resources
    elsewhere), full, with LISTING_CURSOR, which lists in full again without trying the REPORT."""
    with dav_server({CAL: LISTING}, reports={CAL: UNSUPPORTED[refusal]}) as server:
        found = feed(server.url, None)
        assert found == Changes(
            [Change(server.url + "cal/a.ics"), Change(server.url + "cal/b.ics")], caldav.LISTING_CURSOR, full=True
        )
        assert feed(server.url, found.cursor) == found
        assert server.requests() == [("REPORT", CAL), ("PROPFIND", CAL), ("PROPFIND", CAL)]


def sync_answer(*responses: str, cursor: str = "https://example.com/sync/2") -> bytes:
    return multistatus(*responses)[: -len(b"</D:multistatus>")] + (
        f"<D:sync-token>{cursor}</D:sync-token></D:multistatus>".encode()
    )


def test_a_truncated_answer_says_more() -> None:
    """A 507 on the calendar itself means the server cut the answer (RFC 6578 §3.6): `more`, with the token to
    continue from; members outside the calendar are ignored, and a member named on another host is taken by its
    path on the calendar's own server (a listing cannot send the worker's later requests elsewhere)."""
    cut = f"<D:response><D:href>{CAL}</D:href><D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>"
    gone = f"<D:response><D:href>{CAL}old.ics</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>"
    elsewhere = response("http://192.0.2.9/cal/z.ics", EVENT)
    body = sync_answer(response(CAL + "a.ics", EVENT), gone, response("/other/x.ics", EVENT), elsewhere, cut)
    with dav_server({}, reports={CAL: (207, body)}) as server:
        found = feed(server.url, "https://example.com/sync/1")
    assert found == Changes(
        [
            Change(server.url + "cal/a.ics"),
            Change(server.url + "cal/old.ics", removed=True),
            Change(server.url + "cal/z.ics"),
        ],
        "https://example.com/sync/2",
        more=True,
    )


@pytest.mark.parametrize("status", [403, 409, 412])
def test_every_status_carrying_valid_sync_token_is_cursor_expired(status: int) -> None:
    """Radicale says 403, Xandikos 412, the RFC's example 409: with DAV:valid-sync-token each is CursorExpired;
    a 403 without it is AuthorizationLost; the precondition on an initial listing is a refusal, not a loop."""
    expired = b'<?xml version="1.0"?><D:error xmlns:D="DAV:"><D:valid-sync-token/></D:error>'
    with dav_server({}, reports={CAL: (status, expired)}) as server:
        with pytest.raises(CursorExpired):
            feed(server.url, "https://example.com/sync/1")
        with pytest.raises(Rejected):
            feed(server.url, None)
    with dav_server({}, reports={CAL: (403, b"Forbidden")}) as server, pytest.raises(AuthorizationLost):
        feed(server.url, "https://example.com/sync/1")


def test_answers_are_bounded() -> None:
    """A listing of more than MAX_MEMBERS resources, or an overlong sync token, is refused, not kept."""
    many = sync_answer(*(response(f"{CAL}{n}.ics", EVENT) for n in range(caldav.MAX_MEMBERS + 1)))
    long_token = sync_answer(response(CAL + "a.ics", EVENT), cursor="https://example.com/" + "x" * caldav.MAX_TOKEN)
    for body, said in ((many, "more than"), (long_token, "longer than")):
        with dav_server({}, reports={CAL: (207, body)}) as server, pytest.raises(Rejected, match=said):
            feed(server.url, None)


def test_a_calendar_made_after_the_first_search_is_searched_too(
    caldav_env: CalDAVEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider a worker keeps learns the person's calendars again (after CALENDARS_TTL): an event moved into
    a calendar the person made after an earlier search is still found, not taken for a deletion (which would
    unregister the person)."""
    monkeypatch.setattr(caldav, "CALENDARS_TTL", 0.0)
    found, new_url = _searched_then_moved_into_a_new_calendar(caldav_env)
    assert found is not None and found.provider_id == new_url


def test_a_calendar_made_moments_after_a_search_is_searched_before_the_event_counts_as_gone(
    caldav_env: CalDAVEnv,
) -> None:
    """Within CALENDARS_TTL of a search, the person makes a calendar and moves the event into it (a newcomer did
    just that, and a session edit made the check at once): a miss among the calendars known learns them again
    before the event counts as gone -- which would unregister the person while the event is still there."""
    found, new_url = _searched_then_moved_into_a_new_calendar(caldav_env)
    assert found is not None and found.provider_id == new_url


def _searched_then_moved_into_a_new_calendar(env: CalDAVEnv) -> tuple[RemoteEvent | None, str]:
    """One provider: a search (which learns the person's calendars), then the person moves another event into
    a calendar made just now; what `get` finds for it, and the event's new URL."""
    first, second = item(day="day1"), item(day="day2")

    async def steps(provider: CalDAVProvider) -> tuple[RemoteEvent | None, str]:
        gone = await provider.put(first, None)
        kept = await provider.put(second, None)
        env.delete_as_person(gone.provider_id)
        assert await provider.get(gone) is None  # a search: the person's calendars are learnt
        new_url = await asyncio.to_thread(move_to_other_calendar, env, kept)  # into a calendar made now
        return await provider.get(kept), new_url

    return on(env, steps)
