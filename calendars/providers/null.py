"""A provider that keeps events in memory: for the engine's tests and dry runs, and the reference behaviour
of the Provider and ChangeFeed interfaces (calendars/model.py) in a few lines.

The change feed is a log of (provider id, removed) entries; a cursor is a position in it. The `person_*`
methods change the calendar as its owner would (delete, move to another calendar, edit), `expire_cursors`
makes every cursor invalid (CursorExpired), `gone` makes the calendar itself disappear (CalendarGone)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from calendars.model import (
    CalendarGone,
    CalendarItem,
    Change,
    Changes,
    CursorExpired,
    EventGone,
    ProviderError,
    RemoteEvent,
    Written,
    put_each,
)

_ids = itertools.count(1)


@dataclass
class NullProvider:
    """Events by provider id (the item's handle until the person moves one); `writes` counts puts and deletes.
    `fail` (if set) is raised by the next call."""

    events: dict[str, CalendarItem] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    writes: int = 0
    fail: list[ProviderError] = field(default_factory=list)
    log: list[tuple[str, bool]] = field(default_factory=list)  # (provider id, removed), the change feed
    moved: dict[str, str] = field(default_factory=dict)  # old provider id -> where the person moved it
    elsewhere: set[str] = field(default_factory=set)  # ids in the person's other calendars (not in the feed)
    unreachable: set[str] = field(default_factory=set)  # ids whose other calendar was unshared or deleted
    epoch: int = 0  # bumped by expire_cursors
    gone: bool = False
    reads: int = 0  # changes() and get() calls

    def _maybe_fail(self) -> None:
        if self.gone:
            raise CalendarGone("the calendar was deleted")
        if self.fail:
            raise self.fail.pop(0)

    def _id(self, item: CalendarItem, written: Written | None) -> str:
        if written is not None and written.provider_id in self.events:
            return written.provider_id
        return item.handle

    async def put(self, item: CalendarItem, written: Written | None, *, recreate: bool = True) -> Written:
        self._maybe_fail()
        if not recreate and written is not None and written.provider_id not in self.events:
            raise EventGone(f"{written.provider_id} is no longer in the calendar")
        self.writes += 1
        provider_id = self._id(item, written)
        self.events[provider_id] = item
        self.versions[provider_id] = self.versions.get(provider_id, 0) + 1
        self._logged(provider_id, False)
        return Written(provider_id=provider_id, etag=str(self.versions[provider_id]))

    async def put_many(
        self, batch: Sequence[tuple[CalendarItem, Written | None]], *, recreate: bool = True
    ) -> list[Written | ProviderError]:
        return await put_each(self, batch, recreate=recreate)

    async def delete(self, written: Written, item: CalendarItem | None = None) -> None:
        self._maybe_fail()
        self.writes += 1
        if self.events.pop(written.provider_id, None) is not None:
            self._logged(written.provider_id, True)

    async def get(self, written: Written, *, uid: str | None = None) -> RemoteEvent | None:
        self._maybe_fail()
        self.reads += 1
        provider_id = written.provider_id
        while provider_id not in self.events and provider_id in self.moved:
            provider_id = self.moved[provider_id]
        item = self.events.get(provider_id)
        if item is None:
            return None
        etag = str(self.versions[provider_id])
        return RemoteEvent(
            provider_id, etag, item.subject, item.start, item.end, item.key, elsewhere=provider_id in self.elsewhere
        )

    async def changes(self, cursor: str | None) -> Changes:
        self._maybe_fail()
        self.reads += 1
        if cursor is None:
            listing = [Change(pid, item.key) for pid, item in self.events.items() if pid not in self.elsewhere]
            return Changes(listing, f"{self.epoch}:{len(self.log)}", full=True)
        epoch, _, position = cursor.partition(":")
        if int(epoch) != self.epoch:
            raise CursorExpired("the cursor expired")
        since = self.log[int(position) :]
        found = [Change(pid, None if removed else self.events[pid].key, removed) for pid, removed in since
                 if removed or pid in self.events]  # fmt: skip
        return Changes(found, f"{self.epoch}:{len(self.log)}")

    async def check_calendar(self) -> None:
        self._maybe_fail()

    async def reaches(self, written: Written) -> bool:
        self._maybe_fail()
        return written.provider_id not in self.unreachable

    async def close(self) -> None:
        return None

    # -- what the calendar's owner does -------------------------------------------------------------------

    def person_deletes(self, provider_id: str) -> None:
        """Delete the event, in this calendar (the feed reports it) or in the other one it was moved to (not)."""
        self.events.pop(provider_id)
        self._logged(provider_id, True)

    def person_moves(self, provider_id: str) -> str:
        """Move the event to another calendar of the person: gone from this one's feed, found by `get`."""
        new_id = f"moved-{next(_ids)}"
        self.events[new_id] = self.events.pop(provider_id)
        self.versions[new_id] = 1
        self.moved[provider_id] = new_id
        self._logged(provider_id, True)
        self.elsewhere.add(new_id)
        return new_id

    def _logged(self, provider_id: str, removed: bool) -> None:
        """The connected calendar's feed hears of changes to its own events only."""
        if provider_id not in self.elsewhere:
            self.log.append((provider_id, removed))

    def expire_cursors(self) -> None:
        self.epoch += 1
