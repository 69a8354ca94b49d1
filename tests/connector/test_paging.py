"""Paging of lists as OData clients use it: `$top=0` with `$count`, `@odata.nextLink`, `$skip`."""

from __future__ import annotations

from typing import Any

import pytest
from support import Api, build_world, error, relative


def _users(api: Api, n: int, department: str = "Ops") -> list[dict[str, Any]]:
    return [
        api.ok(
            "POST",
            "/odata/v2/Users",
            json={"LoginName": f"p{i:03d}@x.example", "Title": f"P {i:03d}", "Department": department},
        )
        for i in range(n)
    ]


def test_count_with_top_zero_answers_the_count_alone(api: Api) -> None:
    """`$count=true&$top=0` is the count with an empty value and no nextLink (it was a 400)."""
    _users(api, 7, "Sales")
    body = api.ok("GET", "/odata/v2/Users", params={"$count": "true", "$top": "0", "$filter": "Department eq 'Sales'"})
    assert body["@odata.count"] == 7
    assert body["value"] == []
    assert "@odata.nextLink" not in body


@pytest.mark.parametrize(
    "path",
    [f"/odata/v2/{name}" for name in ("Users", "Courses", "CourseCatalogs", "Enrollments", "CourseTags")],
)
def test_top_zero_alone_is_an_empty_page(api: Api, path: str) -> None:
    """`$top=0` without `$count` is an empty page, on every list, with nothing to follow."""
    build_world(api)
    body = api.ok("GET", path, params={"$top": "0"})
    assert body["value"] == []
    assert set(body) == {"@odata.context", "value"}


def test_top_zero_with_skip_and_count(api: Api) -> None:
    """`$skip` does not change the count, and `$top=0` still reads no rows."""
    _users(api, 3)
    body = api.ok("GET", "/odata/v2/Users", params={"$count": "true", "$top": "0", "$skip": "2"})
    assert (body["@odata.count"], body["value"]) == (3, [])


def test_nested_expand_top_zero_is_an_empty_collection(api: Api) -> None:
    """`$expand=Courses($top=0)` gives each catalog an empty Courses list, not an error or a null."""
    world = build_world(api)
    body = api.ok("GET", f"/odata/v2/CourseCatalogs({world.catalog['Id']})", params={"$expand": "Courses($top=0)"})
    assert body["Courses"] == []
    listed = api.ok("GET", "/odata/v2/CourseCatalogs", params={"$expand": "Courses($top=0)", "$count": "true"})
    assert [c["Courses"] for c in listed["value"]] == [[]]


def test_top_zero_through_http_request(api: Api) -> None:
    """Send an HTTP request passes `$top=0&$count=true` on like a direct call."""
    _users(api, 2)
    body = api.ok("POST", "/httprequest", json={"method": "GET", "uri": "Users?$top=0&$count=true"})
    assert (body["@odata.count"], body["value"]) == (2, [])


def test_negative_top_is_still_400(api: Api) -> None:
    """Below zero, `$top` is a 400 naming it."""
    response = api.get("/odata/v2/Users", params={"$top": "-1"})
    assert response.status_code == 400
    assert error(response)["target"] == "$top"


def test_skip_pages_still_work(api: Api) -> None:
    """`$skip` keeps its meaning: the rows after the first n of the order."""
    _users(api, 4)
    everyone = [u["LoginName"] for u in api.ok("GET", "/odata/v2/Users", params={"$orderby": "LoginName"})["value"]]
    skipped = api.ok("GET", "/odata/v2/Users", params={"$orderby": "LoginName", "$skip": "2", "$top": "2"})
    assert [u["LoginName"] for u in skipped["value"]] == everyone[2:4]


# --- @odata.nextLink with $skiptoken ------------------------------------------------------------------


def follow(api: Api, path: str, params: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """What a flow with pagination on does: follow @odata.nextLink until there is none; rows and links."""
    body = api.ok("GET", path, params=params or {})
    rows, links = list(body["value"]), []
    while "@odata.nextLink" in body:
        links.append(body["@odata.nextLink"])
        body = api.ok("GET", relative(body["@odata.nextLink"]))
        rows += body["value"]
    return rows, links


@pytest.mark.parametrize(
    "orderby",
    ["", "LoginName", "Department desc", "Department,Title desc", "Email desc,IsExternal", "ManagerLoginName"],
)
def test_next_links_resume_after_the_last_row(api: Api, orderby: str) -> None:
    """Links carry a $skiptoken (not $skip) and together list every row once, in the order of one big
    page, whatever the order and its ties, NULLs and case."""
    for i in range(13):
        body: dict[str, Any] = {"LoginName": f"k{i:02d}@x.example", "Title": f"K{i % 4}"}
        if i % 3:
            body["Department"] = ["sales", "Sales", "IT"][i % 3]
        if i % 5 == 0:
            body["Email"] = f"K{i}@x.example"
        api.ok("POST", "/odata/v2/Users", json=body)
    params = {"$orderby": orderby} if orderby else {}
    everyone = api.ok("GET", "/odata/v2/Users", params={**params, "$top": "1000"})["value"]
    rows, links = follow(api, "/odata/v2/Users", params)
    assert [r["Id"] for r in rows] == [r["Id"] for r in everyone]
    assert len(links) == 2  # 13 rows in pages of 5
    assert all("$skiptoken=" in link and "$skip=" not in link for link in links)
    if orderby:
        assert all(f"$orderby={orderby.replace(' ', '%20')}" in link for link in links)


def test_paging_with_top_skip_filter_and_count(api: Api) -> None:
    """$skip applies to the first page only (the link resumes after its last row), $filter and $count stay
    on every link, and $top up to the largest page is one page."""
    _users(api, 12, "Sales")
    for i in range(3):
        api.ok("POST", "/odata/v2/Users", json={"LoginName": f"o{i}@x.example"})
    params = {"$filter": "Department eq 'Sales'", "$orderby": "LoginName", "$skip": "2", "$count": "true"}
    body = api.ok("GET", "/odata/v2/Users", params=params)
    assert body["@odata.count"] == 12
    assert [u["LoginName"] for u in body["value"]] == [f"p{i:03d}@x.example" for i in range(2, 7)]
    rest = api.ok("GET", relative(body["@odata.nextLink"]))
    assert rest["@odata.count"] == 12
    assert [u["LoginName"] for u in rest["value"]] == [f"p{i:03d}@x.example" for i in range(7, 12)]
    assert "@odata.nextLink" not in rest
    eight = api.ok("GET", "/odata/v2/Users", params={**params, "$top": "8"})
    assert len(eight["value"]) == 8
    assert "@odata.nextLink" not in eight


def test_rows_inserted_and_deleted_between_pages(api: Api) -> None:
    """A row listed once is never listed again, and none that stays is missed, while others come and go."""
    made = _users(api, 12)
    first = api.ok("GET", "/odata/v2/Users", params={"$orderby": "Title desc"})
    seen = [u["Id"] for u in first["value"]]
    # A new row before the position, one after it, and a deleted row on each side.
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "zz@x.example", "Title": "Z"})
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "aa@x.example", "Title": "A"})
    gone_seen, gone_unseen = made[-1]["Id"], made[0]["Id"]
    api.ok("DELETE", f"/odata/v2/Users({gone_seen})", status=204)
    api.ok("DELETE", f"/odata/v2/Users({gone_unseen})", status=204)
    link: str | None = first["@odata.nextLink"]
    while link:
        body = api.ok("GET", relative(link))
        seen += [u["Id"] for u in body["value"]]
        link = body.get("@odata.nextLink")
    assert len(seen) == len(set(seen))
    titles = {u["Id"]: u["Title"] for u in made}
    assert {u["Id"] for u in made} - {gone_unseen} <= set(seen)
    assert gone_unseen not in seen
    assert [titles[i] for i in seen if i in titles] == sorted((titles[i] for i in seen if i in titles), reverse=True)


def test_nested_list_tokens_stay_with_their_parent(api: Api) -> None:
    """A course's sessions page with tokens too; a token of one course's list is refused on another's."""
    world = build_world(api)
    other = api.ok(
        "POST",
        "/odata/v2/Courses",
        json={
            **{k: world.course[k] for k in ("CourseCatalogId", "CourseType", "Culture", "UICulture")},
            "Title": "B",
            "Description": "B",
            "Url": "other",
        },
    )
    api.provision()
    for n in range(6):
        api.ok(
            "POST",
            f"/odata/v2/Courses({world.course['Id']})/CourseSessions",
            json={
                "Title": f"S{n}",
                "StartDate": f"2030-05-0{n + 1}T09:00:00Z",
                "EndDate": f"2030-05-0{n + 1}T10:00:00Z",
                "TimeZone": "UTC",
            },
        )
    path = f"/odata/v2/Courses({world.course['Id']})/CourseSessions"
    rows, links = follow(api, path)
    assert [s["Title"] for s in rows] == ["Morning", "S0", "S1", "S2", "S3", "S4", "S5"]
    token = links[0].split("$skiptoken=")[1]
    response = api.get(f"/odata/v2/Courses({other['Id']})/CourseSessions", params={"$skiptoken": token})
    assert response.status_code == 400
    assert error(response)["target"] == "$skiptoken"


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the signature altered
        lambda t: "e30." + t.split(".")[1],  # another payload (`{}`) under the old signature
        lambda t: "not a token",
        lambda t: "'; DROP TABLE users; --",
        lambda t: t.split(".")[0],  # no signature
        lambda t: "x" * 4097,
    ],
)
def test_tampered_or_malformed_tokens_are_400(api: Api, change: Any) -> None:
    """A token that is not exactly one the server issued is a 400 naming $skiptoken, never a 500."""
    _users(api, 6)
    token = api.ok("GET", "/odata/v2/Users")["@odata.nextLink"].split("$skiptoken=")[1]
    response = api.get("/odata/v2/Users", params={"$skiptoken": change(token)})
    assert response.status_code == 400, response.text
    body = error(response)
    assert body["target"] == "$skiptoken"
    assert "DROP" not in body["message"]


@pytest.mark.parametrize(
    "other",
    [{"$filter": "Department eq 'Sales'"}, {"$orderby": "Title"}, {"$filter": "Department eq 'ops'", "$orderby": ""}],
)
def test_token_only_works_with_its_own_filter_and_orderby(api: Api, other: dict[str, str]) -> None:
    """A token issued for one $filter/$orderby is refused with another (the rows after it would differ)."""
    _users(api, 6)
    issued = {"$filter": "Department eq 'Ops'", "$orderby": "LoginName"}
    link = api.ok("GET", "/odata/v2/Users", params=issued)["@odata.nextLink"]
    token = link.split("$skiptoken=")[1]
    assert api.get(relative(link)).status_code == 200
    response = api.get("/odata/v2/Users", params={**issued, **other, "$skiptoken": token})
    assert response.status_code == 400
    assert error(response)["target"] == "$skiptoken"
    assert "another $filter or $orderby" in error(response)["message"]
    elsewhere = api.get("/odata/v2/Courses", params={"$skiptoken": token})
    assert elsewhere.status_code == 400
