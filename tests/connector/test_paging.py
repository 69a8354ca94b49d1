"""Paging of lists as OData clients use it: `$top=0` with `$count`, `@odata.nextLink`, `$skip`."""

from __future__ import annotations

from typing import Any

import pytest
from support import Api, build_world, error


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
