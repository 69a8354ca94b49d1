"""Windows time zone names (what Microsoft Graph takes) for IANA zones (what sessions are kept in), and back.

The table is icalendar's `WINDOWS_TO_OLSON`: Unicode CLDR `windowsZones.xml`, territory "001" only, one IANA
zone per Windows name, often under a legacy name (`Asia/Calcutta`, `America/Indianapolis`)
(../shared/reference/notes/calendar-sync.md §2.5 [T3]). Reading it backwards therefore goes through tzdata's
links (`L Asia/Kolkata Asia/Calcutta` in the tzdata package's `tzdata.zi`): two IANA names are the
same zone when they lead to the same target, so `Asia/Kolkata`, `Asia/Calcutta` and `Europe/Oslo` (a link to
`Europe/Berlin` since tzdata 2022b) all find their Windows name. A zone that is its own zone but not a
territory-"001" target (`Europe/Vienna`, `Europe/Amsterdam`) has no Windows name here: Graph writes fall back
to UTC times then, which are the same instants.
"""

from __future__ import annotations

import importlib.resources
import zoneinfo
from functools import cache
from pathlib import Path

from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

__all__ = ["canonical_zone", "iana_zone", "windows_zone"]


def windows_zone(iana: str) -> str | None:
    """The Windows time zone name for the IANA zone `iana` (`Europe/Berlin` -> `W. Europe Standard Time`,
    `Asia/Kolkata` -> `India Standard Time`, `UTC` -> `UTC`), or None when CLDR's territory-"001" table has
    no zone that tzdata links `iana` to. Names are case-sensitive, as zoneinfo keys are."""
    return _windows_by_zone().get(canonical_zone(iana))


def iana_zone(windows: str) -> str | None:
    """The IANA zone for a Windows time zone name, under its current tzdata name (`India Standard Time` ->
    `Asia/Kolkata`, not CLDR's `Asia/Calcutta`); None for a name the table does not know."""
    target = WINDOWS_TO_OLSON.get(windows)
    return None if target is None else canonical_zone(target)


def canonical_zone(iana: str) -> str:
    """The zone tzdata's links lead `iana` to (`Asia/Calcutta` -> `Asia/Kolkata`, `UTC` -> `Etc/UTC`);
    `iana` itself when it is a zone of its own or unknown."""
    links = _links()
    seen = {iana}
    while iana in links:  # tzdata.zi links point at zones, but follow chains in case a build has them
        iana = links[iana]
        if iana in seen:
            break
        seen.add(iana)
    return iana


@cache
def _windows_by_zone() -> dict[str, str]:
    return {canonical_zone(target): windows for windows, target in WINDOWS_TO_OLSON.items()}


@cache
def _links() -> dict[str, str]:
    """Link name -> target from the `tzdata` package's `tzdata.zi` (a pinned dependency), else the system's.

    The package is tzdata's main build, where zones that agree since 1970 are links (Europe/Oslo ->
    Europe/Berlin); a system build with `backzone` (Debian's) keeps them apart for their older history, which
    no session needs. The package first makes the answer the same on every machine."""
    text = _tzdata_zi()
    links = {}
    for line in text.splitlines():
        if line.startswith("L "):
            parts = line.split()
            if len(parts) == 3:
                links[parts[2]] = parts[1]
    return links


def _tzdata_zi() -> str:
    try:
        return importlib.resources.files("tzdata").joinpath("zoneinfo", "tzdata.zi").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - tzdata is a dependency
        pass
    for root in zoneinfo.TZPATH:  # pragma: no cover
        path = Path(root) / "tzdata.zi"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return ""  # pragma: no cover
