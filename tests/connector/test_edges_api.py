"""Errors, users, HttpRequest, FileUpload and trigger subscriptions through the served document."""

from __future__ import annotations

import pytest
from support import Api, build_world, error

from storage import events
from webhooks.registry import EVENTS


def event_count(api: Api) -> int:
    return len(events.latest(api.db, limit=100_000))


def test_unknown_paths_and_methods(api: Api) -> None:
    """Unknown paths are 404 and known paths with another method 405, both in the OData shape."""
    assert error(api.get("/odata/v2/Nope"))["code"] == "NotFound"
    assert api.post("/odata/v2/Nope", json={}).status_code == 404
    wrong = api.request("PUT", "/odata/v2/Users")
    assert wrong.status_code == 405
    assert error(wrong)["code"] == "MethodNotAllowed"


def test_invalid_body_names_the_field_and_writes_nothing(api: Api) -> None:
    """A body missing a required property is 400 naming it, with no event written."""
    before = event_count(api)
    response = api.post("/odata/v2/Users", json={"Email": "no-login@x.example"})
    assert response.status_code == 400
    assert error(response)["target"] == "LoginName"
    assert "problem" not in response.headers["content-type"]
    assert event_count(api) == before


def test_bad_filter_is_400_naming_filter(api: Api) -> None:
    """A $filter on an unknown property is 400 with target $filter, and SQL is never run from it."""
    response = api.get("/odata/v2/Users", params={"$filter": "Password eq 'x'; DROP TABLE users"})
    assert response.status_code == 400
    assert error(response)["target"] == "$filter"
    assert api.get("/odata/v2/Users").status_code == 200


@pytest.mark.parametrize(
    ("params", "reason"),
    [({"$top": "abc"}, "'abc' is not of type 'integer'"), ({"$top": "-1"}, "-1 is less than the minimum of 0")],
)
def test_bad_query_parameter_is_400_naming_it(api: Api, params: dict[str, str], reason: str) -> None:
    """A query parameter of the wrong type or range is 400 naming the parameter, not its whole schema."""
    response = api.get("/odata/v2/Users", params=params)
    assert response.status_code == 400
    body = error(response)
    assert body["target"] == "$top"
    assert body["message"] == f"query parameter '$top': {reason}"


def test_wrong_content_type_is_415(api: Api) -> None:
    """A JSON operation sent form data answers 415 in the OData shape."""
    response = api.post("/odata/v2/Users", content=b"LoginName=x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert error(response)["code"] == "UnsupportedMediaType"


def test_bodies_that_are_not_utf8_json_are_400(api: Api) -> None:
    """Bytes that are not UTF-8 and unpaired surrogate escapes are refused before any handler runs."""
    before = event_count(api)
    for body in (b"\xfb\x10K", b'{"LoginName": "\\ud800x@x.example"}'):
        response = api.post("/odata/v2/Users", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, body
        assert error(response)["code"] == "BadRequest"
    assert event_count(api) == before
    paired = api.post(
        "/odata/v2/Users",
        content=b'{"LoginName": "\\ud83d\\ude00@x.example"}',
        headers={"Content-Type": "application/json"},
    )
    assert paired.status_code == 200
    assert paired.json()["LoginName"] == "\U0001f600@x.example"


def test_control_characters_in_the_path_are_400(api: Api) -> None:
    """A percent-encoded newline in an id is bad input, not a server error."""
    response = api.post("/odata/v2/Enrollments(%0Ap)/Start")
    assert response.status_code == 400
    assert "control character" in error(response)["message"]


def test_users_create_filter_update_delete(api: Api) -> None:
    """Users can be created with custom fields, found by Email (case-insensitively), updated and deleted."""
    boss = api.ok("POST", "/odata/v2/Users", json={"LoginName": "boss@x.example"})
    user = api.ok(
        "POST",
        "/odata/v2/Users",
        json={
            "LoginName": "kim@x.example",
            "Email": "Kim@X.example",
            "Title": "Kim",
            "ManagerLoginName": "boss@x.example",
            "UserFieldValues": [{"FieldTitle": "Employee number", "Value": "42"}],
        },
    )
    assert user["ManagerId"] == boss["Id"]
    assert user["UserFieldValues"][0]["Value"] == "42"
    found = api.ok("GET", "/odata/v2/Users", params={"$filter": "Email eq 'kim@x.example'"})["value"]
    assert [u["Id"] for u in found] == [user["Id"]]
    assert api.ok("PATCH", f"/odata/v2/Users({user['Id']})", json={"City": "Aarhus"})["City"] == "Aarhus"
    assert api.post("/odata/v2/Users", json={"LoginName": "KIM@x.example"}).status_code == 409
    api.ok("DELETE", f"/odata/v2/Users({user['Id']})", 204)
    assert api.ok("GET", f"/odata/v2/Users({user['Id']})")["IsDeleted"] is True
    assert api.ok("GET", "/odata/v2/Users", params={"$filter": "Email eq 'kim@x.example'"})["value"] == []


def test_http_request_runs_inside_with_the_callers_identity(api: Api) -> None:
    """HttpRequest (relative to /odata/v2/) and HttpRequest_v2 (relative to /) proxy in-process."""
    world = build_world(api)
    inner = api.ok("POST", "/httprequest", json={"method": "GET", "uri": f"Courses({world.course['Id']})"})
    assert inner["Title"] == "First aid"
    users = api.ok("POST", "/v2/httprequest", json={"method": "GET", "uri": "odata/v2/Users?$top=1&$select=Id"})
    assert list(users["value"][0]) == ["Id"]
    v2 = api.post("/v2/httprequest", json={"method": "GET", "uri": "odata/v2/Nope"})
    assert v2.status_code == 404
    assert error(v2)["code"] == "NotFound"
    created = api.post(
        "/httprequest",
        json={"method": "POST", "uri": "Users", "body": '{"LoginName": "z@x.example"}'},
        user=world.uid("ann"),
    )
    assert created.status_code == 403  # the learner named by LMS365-User-Id may not create users


def test_http_request_never_leaves_the_server(api: Api) -> None:
    """Absolute and escaping uris are 400 naming uri."""
    for uri in ("https://example.com/odata/v2/Users", "//example.com/x", "../../etc/passwd", "../v2/httprequest"):
        response = api.post("/httprequest", json={"method": "GET", "uri": uri})
        assert response.status_code == 400, uri
        assert error(response)["target"] == "uri"
    bad_header = api.post("/httprequest", json={"method": "GET", "uri": "Users", "headers": {"X-Name": "a\r\nb"}})
    assert (bad_header.status_code, error(bad_header)["target"]) == (400, "headers.X-Name")
    bad_name = api.post("/httprequest", json={"method": "GET", "uri": "Users", "headers": {"Bad Name": "x"}})
    assert (bad_name.status_code, error(bad_name)["target"]) == (400, "headers")


def test_file_upload_stores_under_the_data_directory(api: Api) -> None:
    """FileUpload saves the file at the relative path; escaping paths are 400, oversize 413."""
    body = api.ok("POST", "/certificates/abc123/upload", files={"File": ("cert.pdf", b"%PDF-1.7", "application/pdf")})
    assert (body["Path"], body["Size"]) == ("certificates/abc123/upload/cert.pdf", 8)
    assert (api.settings.files_dir / body["Path"]).read_bytes() == b"%PDF-1.7"
    escaping = api.post("/certificates/..%2F..%2Fetc/upload", files={"File": ("x.txt", b"x")})
    assert escaping.status_code in (400, 404)
    big = api.post("/big/upload", files={"File": ("big.bin", b"x" * (api.settings.max_upload_bytes + 1))})
    assert big.status_code == 413
    assert not (api.settings.files_dir / "big").exists()
    untyped = api.post("/plain/upload", content=b"raw bytes")
    assert (untyped.status_code, error(untyped)["code"]) == (415, "UnsupportedMediaType")
    no_boundary = api.post("/plain/upload", content=b"raw", headers={"Content-Type": "multipart/form-data"})
    assert no_boundary.status_code == 400
    malformed = api.post(
        "/plain/upload", content=b"--b\r\n--b--\r\n", headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert (malformed.status_code, error(malformed)["code"]) == (400, "BadRequest")


def test_trigger_subscription_lifecycle(api: Api) -> None:
    """Subscribe answers 201 with a Location; the same callback again 200; DELETE 204 then 404."""
    hook = {"WebHookUri": "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/run?sig=s"}
    created = api.post("/webhooks/subscribe/CourseEnrollment", json=hook)
    assert created.status_code == 201
    location = created.headers["Location"]
    assert location.startswith("http://testserver/webhooks/subscriptions(")
    again = api.post("/webhooks/subscribe/CourseEnrollment", json=hook)
    assert (again.status_code, again.headers["Location"]) == (200, location)
    path = location.replace("http://testserver", "")
    assert api.ok("GET", path)["Event"] == "CourseEnrollment"
    api.ok("DELETE", path, 204)
    assert api.delete(path).status_code == 404
    bad = api.post("/webhooks/subscribe/UserCreated", json={"WebHookUri": "not a url"})
    assert (bad.status_code, error(bad)["target"]) == (400, "WebHookUri")


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_trigger_can_be_subscribed_and_unsubscribed(api: Api, event: str) -> None:
    """Each of the reference's trigger operations answers 201 with a Location that DELETE ends."""
    hook = {"WebHookUri": f"https://flow.example/workflows/{event}/run?sig=s"}
    created = api.post(f"/webhooks/subscribe/{event}", json=hook)
    assert created.status_code == 201, created.text
    assert created.json()["Event"] == event
    api.ok("DELETE", created.headers["Location"].replace("http://testserver", ""), 204)


def test_ordering_by_a_constant_property_is_not_a_500(api: Api) -> None:
    """$orderby=IsPartOfTrainingPlan (always false here) lists enrollments; it answered 500 ("ORDER BY term out of
    range") when the property's SQL was the bare literal 0."""
    assert api.ok("GET", "/odata/v2/Enrollments", params={"$orderby": "IsPartOfTrainingPlan desc"})["value"] == []
