"""`coursewire calendar resync`: make connected calendars hold exactly what they should.

Two steps. `storage.calendar_watch.force_rewrite` marks the items in scope so the worker writes each event again
as it should be (an event missing from the calendar is created again, not taken for a deletion by the person)
and queues the pairs, so whatever was never written is created. Then `strays` lists a connection's calendar and
finds the events of ours it holds without a record of ours -- left behind by a crash between a write and its
record, a restore from a backup, or an older copy of coursewire -- which `remove` deletes.

An event is ours when it carries our key (Google's private extended property; the iCalendar
X-COURSEWIRE-KEY), or a handle derived from a key of this person (a CalDAV resource `<handle>.ics`, a Graph
transactionId): keys are `<user id>.<session day id>`, so only the person's own keys count, and a stray of a
session day that no longer exists is recognized only by its tag.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from calendars import inbound
from calendars.model import Change, Provider, ProviderError, Written
from storage.calendar import Connection
from storage.db import Database

# Calls of `changes(None)` listing one calendar (each up to the provider's page cap).
MAX_LISTING_CALLS = 50


@dataclass(frozen=True)
class Stray:
    """An event of ours the calendar holds without a record: its provider id and the key it was made for."""

    provider_id: str
    key: str


async def strays(db: Database, provider: Provider, connection: Connection) -> list[Stray]:
    """The events of ours in `connection`'s calendar that coursewire has no record of (module docstring).
    Providers without a change feed have none to find. Raises the provider's errors (Throttled, Unavailable,
    AuthorizationLost, CalendarGone, Rejected)."""
    changes = inbound.feed(provider)
    if changes is None:
        return []
    listed: list[Change] = []
    cursor: str | None = None
    for _ in range(MAX_LISTING_CALLS):
        page = await changes.changes(cursor)
        listed.extend(c for c in page.changes if not c.removed)
        cursor = page.cursor
        if not page.more:
            break
    user = connection.user_id
    # Read after the listing: an event the worker wrote while it ran is recorded by now, or its pair is still
    # queued or leased (written, not yet recorded): neither is a stray.
    with db.read() as conn:
        busy = {row[0] for row in conn.execute("SELECT session_id FROM calendar_dirty WHERE user_id = ?", (user,))}
        recorded = {
            row[0]
            for row in conn.execute(
                "SELECT provider_id FROM calendar_items WHERE connection_id = ? AND provider_id IS NOT NULL",
                (connection.id,),
            )
        }
        days = dict(conn.execute("SELECT id, session_id FROM session_days").fetchall())
    handles = {hashlib.sha256(f"{user}.{day}".encode()).hexdigest()[:32]: f"{user}.{day}" for day in days}
    found = []
    for change in listed:
        if change.provider_id in recorded:
            continue
        key = change.key if change.key is not None and change.key.startswith(f"{user}.") else None
        if key is None and change.handle is not None:
            key = handles.get(change.handle)
        if key is None or days.get(key.split(".", 1)[1]) in busy:
            continue
        found.append(Stray(change.provider_id, key))
    return found


async def remove(provider: Provider, found: list[Stray]) -> list[tuple[Stray, ProviderError]]:
    """Delete the strays; returns those that could not be deleted, with the error."""
    failed = []
    for stray in found:
        try:
            await provider.delete(Written(stray.provider_id))
        except ProviderError as exc:
            failed.append((stray, exc))
    return failed
