"""Power Automate's pagination against a real `coursewire serve`: follow @odata.nextLink until it is absent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving import Server, start

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def paged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two worker processes with pages of 25 rows, so a few hundred rows make many pages."""
    yield from start(tmp_path_factory.mktemp("paging") / "data", "--workers", "2", env={"COURSEWIRE_PAGE_SIZE": "25"})


def _user(s: Server, n: int, title: str) -> dict[str, Any]:
    return s.call("POST", "/odata/v2/Users", json={"LoginName": f"flow{n:04d}@x.example", "Title": title})


def flow_pages(s: Server, path: str, params: dict[str, str], between: Any = None) -> Iterator[dict[str, Any]]:
    """What a flow's "Get items" with pagination on does: GET, then GET each @odata.nextLink as given
    (absolute, on either worker process) until the answer has none; `between(page number)` runs after
    each page, as other clients change data meanwhile."""
    body = s.call("GET", path, params=params)
    number = 0
    while True:
        yield body
        link = body.get("@odata.nextLink")
        if link is None:
            return
        assert link.startswith(s.base + path)
        if between is not None:
            between(number)
        number += 1
        response = s.session.get(link, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()


def test_a_flow_collects_every_row_once_while_rows_come_and_go(paged: Server, tmp_path: Path) -> None:
    """240 users listed by Title in pages of 25 while, between pages, new users are created on both sides
    of the position and users are deleted behind and ahead of it: every user present throughout is
    collected exactly once, none twice, none deleted before its page, and the order holds."""
    s = paged
    users = [_user(s, n, f"T{n % 60:02d}") for n in range(240)]  # ties on Title: the key breaks them
    users.sort(key=lambda u: (u["Title"], u["Id"]))
    title_of = {u["Id"]: u["Title"] for u in users}
    deleted_early: set[str] = set()
    added: dict[str, str] = {}

    def between(page: int) -> None:
        # One user sorting before every other (before the position) and one after it, each time.
        added[_user(s, 1000 + 2 * page, "A")["Id"]] = "A"
        added[_user(s, 1001 + 2 * page, "Z")["Id"]] = "Z"
        listed_first = users[-1 - page]  # T59, T58...: first in descending order, mostly seen already
        listed_last = users[page]  # T00, T01...: last in descending order, not seen yet
        for victim in (listed_first, listed_last):
            if victim["Id"] not in seen:
                deleted_early.add(victim["Id"])
            s.call("DELETE", f"/odata/v2/Users({victim['Id']})", status=204)

    seen: list[str] = []
    pages = 0
    for body in flow_pages(s, "/odata/v2/Users", {"$orderby": "Title desc", "$filter": "Title ne 'x'"}, between):
        pages += 1
        seen += [u["Id"] for u in body["value"]]
        assert len(body["value"]) <= 25
    assert pages >= 10
    assert len(seen) == len(set(seen)), "a row was listed twice"
    stayed = set(title_of) - deleted_early
    assert stayed <= set(seen), "a row present throughout was missed"
    assert not deleted_early & set(seen), "a row deleted before its page was listed"
    titles = [title_of[i] for i in seen if i in title_of]
    assert titles == sorted(titles, reverse=True)
    # Descending, "Z" sorts before the position (never reached), "A" after it (always reached).
    assert {a for a in added if a in seen} == {a for a in added if added[a] == "A"}


def test_deep_links_cost_no_more_than_the_first(paged: Server) -> None:
    """Following links to the end of all users reads each page by seeking, not by counting past earlier
    rows: the last link carries a $skiptoken and no $skip, and `$skip` itself still answers."""
    s = paged
    links = []
    for body in flow_pages(s, "/odata/v2/Users", {"$filter": "IsDeleted eq false or IsDeleted eq true"}):
        if "@odata.nextLink" in body:
            links.append(body["@odata.nextLink"])
    assert links and all("$skiptoken=" in link and "$skip=" not in link for link in links)
    skipped = s.call("GET", "/odata/v2/Users", params={"$skip": "30", "$top": "5"})
    assert len(skipped["value"]) == 5
