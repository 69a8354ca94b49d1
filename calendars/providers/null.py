"""A provider that keeps events in memory: for the engine's tests and dry runs, and the reference behaviour
of the Provider interface (calendars/model.py) in a few lines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from calendars.model import CalendarItem, ProviderError, RemoteEvent, Written, put_each


@dataclass
class NullProvider:
    """Events by handle; `writes` counts puts and deletes. `fail` (if set) is raised by the next call."""

    events: dict[str, CalendarItem] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    writes: int = 0
    fail: list[ProviderError] = field(default_factory=list)

    def _maybe_fail(self) -> None:
        if self.fail:
            raise self.fail.pop(0)

    async def put(self, item: CalendarItem, written: Written | None) -> Written:
        self._maybe_fail()
        self.writes += 1
        self.events[item.handle] = item
        self.versions[item.handle] = self.versions.get(item.handle, 0) + 1
        return Written(provider_id=item.handle, etag=str(self.versions[item.handle]))

    async def put_many(self, batch: Sequence[tuple[CalendarItem, Written | None]]) -> list[Written | ProviderError]:
        return await put_each(self, batch)

    async def delete(self, written: Written, item: CalendarItem | None = None) -> None:
        self._maybe_fail()
        self.writes += 1
        self.events.pop(written.provider_id, None)

    async def get(self, written: Written) -> RemoteEvent | None:
        self._maybe_fail()
        item = self.events.get(written.provider_id)
        if item is None:
            return None
        etag = str(self.versions[written.provider_id])
        return RemoteEvent(written.provider_id, etag, item.subject, item.start, item.end, item.key)

    async def close(self) -> None:
        return None
