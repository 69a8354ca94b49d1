"""Every request acts as exactly one identity: the key, or the one user LMS365-User-Id names, whatever the
request carries inside; a Read Only key is never an administrator; forwarded headers count only from proxies."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import Api, World, basic, build_world, error

from connector.app import create_app
from connector.settings import Settings
from storage import apikeys


def _users(api: Api) -> int:
    return int(api.db.conn.execute("SELECT count(*) FROM users").fetchone()[0])


def _inner_create(api: Api, world: World, inner_headers: dict[str, str], outer_user: str | None) -> Any:
    body = json.dumps({"LoginName": f"mallory-{uuid.uuid4().hex[:8]}@x.example"})
    return api.post(
        "/httprequest",
        json={"method": "POST", "uri": "Users", "headers": inner_headers, "body": body},
        user=outer_user,
    )


def test_an_empty_inner_user_header_does_not_turn_a_learner_into_an_administrator(api: Api) -> None:
    """The issue's example: a learner's HttpRequest with an empty inner LMS365-User-Id is a 400, not a 200 as admin."""
    world = build_world(api)
    before = _users(api)
    response = _inner_create(api, world, {"LMS365-User-Id": ""}, world.uid("ann"))
    assert response.status_code == 400
    assert error(response)["target"] == "headers.LMS365-User-Id"
    assert _users(api) == before


@pytest.mark.parametrize("name", ["LMS365-User-Id", "lms365-user-id", "LMS365-USER-ID"])
def test_an_inner_user_header_naming_someone_else_is_refused(api: Api, name: str) -> None:
    """An inner LMS365-User-Id, in any case, naming another user (an administrator here) is a 400 naming it."""
    world = build_world(api)
    response = _inner_create(api, world, {name: world.uid("admin")}, world.uid("ann"))
    assert (response.status_code, error(response)["target"]) == (400, f"headers.{name}")
    # A key acting as itself cannot slip into a user either: the inner request would run as someone else.
    as_key = _inner_create(api, world, {name: world.uid("ann")}, None)
    assert (as_key.status_code, error(as_key)["target"]) == (400, f"headers.{name}")


def test_an_inner_user_header_naming_the_caller_is_accepted(api: Api) -> None:
    """Naming the acting user again (by Id or DirectoryObjectId) is allowed and changes nothing."""
    world = build_world(api)
    directory_id = "5f0e4c1a-1b2c-4d3e-8f90-a1b2c3d4e5f6"
    api.ok("PATCH", f"/odata/v2/Users({world.uid('ann')})", json={"DirectoryObjectId": directory_id})
    for ref in (world.uid("ann"), directory_id, directory_id.upper()):
        response = _inner_create(api, world, {"LMS365-User-Id": ref}, world.uid("ann"))
        assert response.status_code == 403, response.text  # ran as ann, a learner
    own = api.ok(
        "POST",
        "/httprequest",
        json={"method": "GET", "uri": "Enrollments", "headers": {"lms365-user-id": directory_id}},
        user=world.uid("ann"),
    )
    assert own["value"] == []


def test_an_inner_authorization_header_is_refused(api: Api, read_api: Api) -> None:
    """The inner request runs with the connection's credentials; another key in its headers is a 400."""
    world = build_world(api)
    response = read_api.post(
        "/httprequest",
        json={"method": "POST", "uri": "Users", "headers": basic(api.secret), "body": "{}"},
    )
    assert (response.status_code, error(response)["target"]) == (400, "headers.Authorization")
    assert world.users and _users(api) == len(world.users)


def test_inner_forwarded_headers_cannot_steer_links(api: Api) -> None:
    """X-Forwarded-Host inside the described headers is ignored: links keep the caller's host."""
    response = api.ok(
        "POST",
        "/v2/httprequest",
        json={"method": "GET", "uri": "odata/v2/Users", "headers": {"X-Forwarded-Host": "evil.example"}},
        headers={"X-Forwarded-Host": "lms.contoso.com", "X-Forwarded-Proto": "https"},
    )
    assert "evil.example" not in response["@odata.context"]


HEADER_NAMES = st.sampled_from(["LMS365-User-Id", "lms365-user-id", "Lms365-User-ID", "Authorization"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_nothing_inside_http_request_changes_who_acts(api: Api, data: st.DataObject) -> None:
    """Whatever inner headers a learner (or the key itself) sends, the inner request runs as the caller or is a 400."""
    world = getattr(test_nothing_inside_http_request_changes_who_acts, "world", None)
    if world is None or api.db.conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0:
        world = build_world(api)
        test_nothing_inside_http_request_changes_who_acts.world = world  # type: ignore[attr-defined]
    outer = data.draw(st.sampled_from([world.uid("ann"), world.uid("bob"), None]), label="outer")
    values = st.sampled_from(
        ["", " ", world.uid("admin"), world.uid("ann"), world.uid("admin").upper(), "nobody", "Basic x", "\t"]
    )
    inner = data.draw(st.dictionaries(HEADER_NAMES, values, max_size=3), label="inner")
    before = _users(api)
    response = _inner_create(api, world, inner, outer)
    names_someone_else = any(
        k.lower() == "authorization" or outer is None or v.strip().lower() != outer for k, v in inner.items()
    )
    if names_someone_else:
        assert response.status_code == 400, (inner, response.text)
        assert error(response)["target"].startswith("headers.")
    elif outer is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 403  # ran as the learner, who may not create users
    if response.status_code != 200:
        assert _users(api) == before


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_an_empty_user_header_is_a_400_on_reads_and_writes(api: Api, value: str) -> None:
    """An empty or blank LMS365-User-Id is never taken as 'no header' (which would act as the key)."""
    for method, path in (("GET", "/odata/v2/Enrollments"), ("GET", "/odata/v2/Users"), ("POST", "/odata/v2/Users")):
        response = api.request(method, path, headers={"LMS365-User-Id": value}, json={"LoginName": "e@x.example"})
        assert (response.status_code, error(response)["target"]) == (400, "LMS365-User-Id"), (method, path)


def test_an_unknown_user_is_a_400_on_reads_too(api: Api) -> None:
    """A GET naming nobody is refused instead of quietly acting as administrator."""
    for path in ("/odata/v2/Enrollments", "/odata/v2/Users", "/webhooks/deliveries", "/odata/v2/Courses"):
        response = api.get(path, user="7d1f0c44-0000-4000-8000-000000000000")
        assert (response.status_code, error(response)["target"]) == (400, "LMS365-User-Id"), path
    huge = api.get("/odata/v2/Users", user="x" * 5000)
    assert huge.status_code == 400 and len(huge.text) < 400


def test_the_user_header_counts_once(api: Api) -> None:
    """Two LMS365-User-Id headers are a 400: a request acts as one user."""
    world = build_world(api)
    response = api.client.get(
        "/odata/v2/Enrollments",
        headers=[
            *basic(api.secret).items(),
            ("LMS365-User-Id", world.uid("ann")),
            ("LMS365-User-Id", world.uid("admin")),
        ],
    )
    assert (response.status_code, error(response)["target"]) == (400, "LMS365-User-Id")


def test_a_read_only_key_is_never_an_administrator(api: Api, read_api: Api) -> None:
    """Read Only keys read the public lists, but not the delivery log, payloads or other keys' subscriptions."""
    world = build_world(api)
    hook = api.ok("POST", "/webhooks/subscribe/UserCreated", 201, json={"WebHookUri": "https://flow.example/cb"})
    api.ok("POST", "/odata/v2/Users", 200, json={"LoginName": "new@x.example"})
    assert read_api.ok("GET", "/odata/v2/Enrollments")["value"] is not None
    assert read_api.ok("GET", "/odata/v2/Users")["value"]
    for user in (None, world.uid("admin")):
        for path in ("/webhooks/deliveries", "/webhooks/deliveries(00000000-0000-4000-8000-000000000000)"):
            response = read_api.get(path, user=user)
            assert response.status_code == 403, (path, user, response.text)
            assert "Read Only" in error(response)["message"]  # the reason, not "only administrators may"
        assert read_api.ok("GET", "/webhooks/subscriptions", user=user)["value"] == []
        assert read_api.get(f"/webhooks/subscriptions({hook['Id']})", user=user).status_code == 403
    assert api.ok("GET", "/webhooks/subscriptions")["value"][0]["Id"] == hook["Id"]


def _ids(api: Api, user: str | None, **params: str) -> set[str]:
    body = api.ok("GET", "/odata/v2/Enrollments", user=user, params={"$top": "1000", **params})
    return {e["UserId"] for e in body["value"]}


def test_acting_as_a_learner_scopes_enrollment_reads(api: Api, read_api: Api) -> None:
    """Lists, counts, reads and expansions of enrollments show a learner their own, a manager their reports' too,
    course staff their course's; keys and administrators see all."""
    world = build_world(api, max_attendees="10")
    course, session = world.course["Id"], world.session["Id"]
    api.ok("POST", f"/odata/v2/Courses({course})/Publish", 204)
    enrolled = {}
    for name in ("ann", "bob", "cid", "dee"):
        enrolled[name] = api.ok(
            "POST",
            f"/odata/v2/Courses({course})/Enroll",
            json={"userLoginName": world.login(name), "courseSessionId": session},
        )
    everyone = {world.uid(n) for n in enrolled}
    assert _ids(api, None) == everyone
    assert _ids(read_api, None) == everyone
    assert _ids(api, world.uid("admin")) == everyone
    assert _ids(read_api, world.uid("ann")) == {world.uid("ann")}
    assert _ids(api, world.uid("ann")) == {world.uid("ann")}
    assert _ids(api, world.uid("boss")) == {world.uid("ann"), world.uid("bob")}
    assert _ids(api, world.uid("teacher")) == everyone
    counted = api.ok("GET", "/odata/v2/Enrollments", user=world.uid("cid"), params={"$count": "true"})
    assert counted["@odata.count"] == 1
    other = api.get(f"/odata/v2/Enrollments({enrolled['bob']['Id']})", user=world.uid("ann"))
    assert other.status_code == 404
    assert api.ok("GET", f"/odata/v2/Enrollments({enrolled['bob']['Id']})", user=world.uid("boss"))["Id"]
    expanded = api.ok(
        "GET", f"/odata/v2/CourseSessions({session})", user=world.uid("ann"), params={"$expand": "Registrations"}
    )
    assert {r["UserId"] for r in expanded["Registrations"]} == {world.uid("ann")}
    nested = api.ok(
        "GET",
        f"/odata/v2/Courses({course})",
        user=world.uid("dee"),
        params={"$expand": "CourseSessions($expand=Registrations)"},
    )
    assert {r["UserId"] for s in nested["CourseSessions"] for r in s["Registrations"]} == {world.uid("dee")}
    full = api.ok("GET", f"/odata/v2/CourseSessions({session})", params={"$expand": "Registrations"})
    assert {r["UserId"] for r in full["Registrations"]} == everyone


def test_a_learner_cannot_subscribe_to_triggers_or_touch_the_flows_ones(api: Api) -> None:
    """Notifications carry every learner's data, so subscribing needs an actor who reads everything; a learner
    acting through the flows' key can neither read nor end the subscriptions of that key."""
    world = build_world(api)
    flows = api.ok("POST", "/webhooks/subscribe/UserCreated", 201, json={"WebHookUri": "https://flow.example/f"})
    ann = world.uid("ann")
    assert api.ok("GET", "/webhooks/subscriptions", user=ann)["value"] == []
    assert api.get(f"/webhooks/subscriptions({flows['Id']})", user=ann).status_code == 403
    assert api.delete(f"/webhooks/subscriptions({flows['Id']})", user=ann).status_code == 403
    assert api.ok("GET", f"/webhooks/subscriptions({flows['Id']})")["Status"] == "active"
    response = api.post(
        "/webhooks/subscribe/CourseEnrollment", json={"WebHookUri": "https://flow.example/x"}, user=world.uid("ann")
    )
    assert response.status_code == 403
    assert (
        api.post(
            "/webhooks/subscribe/CourseEnrollment",
            json={"WebHookUri": "https://flow.example/x"},
            user=world.uid("admin"),
        ).status_code
        == 201
    )


def _client(app: Any, peer: str) -> Any:
    return app.test_client(client=(peer, 40000))


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [("127.0.0.1", True), ("::1", True), ("10.0.0.7", False), ("203.0.113.9", False), ("testclient", False)],
)
def test_forwarded_headers_count_only_from_trusted_proxies(app: Any, api: Api, peer: str, trusted: bool) -> None:
    """X-Forwarded-Proto/Host steer Location only when the peer is in COURSEWIRE_TRUSTED_PROXIES (default loopback)."""
    with _client(app, peer) as client:
        response = client.post(
            "/webhooks/subscribe/UserDeleted",
            json={"WebHookUri": "https://flow.example/cb"},
            headers={**basic(api.secret), "X-Forwarded-Proto": "https", "X-Forwarded-Host": "lms.contoso.com"},
        )
    location = response.headers["Location"]
    expected = "https://lms.contoso.com/" if trusted else "http://testserver/"
    assert location.startswith(expected), location


def test_trusted_proxies_and_public_url_are_settings(settings: Settings, db: Any) -> None:
    """Naming a proxy trusts it; COURSEWIRE_PUBLIC_URL wins over any header."""
    secret = apikeys.create(db, "k", "full").secret
    headers = {**basic(secret), "X-Forwarded-Proto": "https", "X-Forwarded-Host": "lms.contoso.com"}
    proxied = Settings.from_env(
        {"COURSEWIRE_TRUSTED_PROXIES": "10.0.0.0/8", "COURSEWIRE_DATA_DIR": str(settings.data_dir)}
    )
    with create_app(replace(settings, trusted_proxies=proxied.trusted_proxies), db=db).test_client(
        client=("10.1.2.3", 1)
    ) as c:
        assert c.get("/odata/v2/Users", headers=headers).json()["@odata.context"].startswith("https://lms.contoso.com/")
    with create_app(replace(settings, trusted_proxies=()), db=db).test_client(client=("127.0.0.1", 1)) as c:
        assert c.get("/odata/v2/Users", headers=headers).json()["@odata.context"].startswith("http://testserver/")
    public = replace(settings, public_url="https://lms.fabrikam.com")
    with create_app(public, db=db).test_client(client=("127.0.0.1", 1)) as c:
        assert (
            c.get("/odata/v2/Users", headers=headers).json()["@odata.context"].startswith("https://lms.fabrikam.com/")
        )


@pytest.mark.parametrize("host", ["evil.example/catalogs", "a b", "x" * 300, "lms.contoso.com:99999999", "[::1"])
def test_a_host_header_that_is_no_host_is_refused(api: Api, host: str) -> None:
    """Links, and a catalog's stored Url, are built from Host: one that is no host[:port] is a 400 before any write."""
    response = api.post("/odata/v2/CourseCatalogs", json={"Title": "Academy"}, headers={"Host": host})
    assert (response.status_code, error(response)["target"]) == (400, "Host")
    assert api.ok("GET", "/odata/v2/CourseCatalogs")["value"] == []
    assert api.post("/odata/v2/CourseCatalogs", json={"Title": "Academy"}, headers={"Host": "lms.contoso.com:8443"})


def test_the_public_url_setting_is_checked() -> None:
    """COURSEWIRE_PUBLIC_URL must be an http(s) base URL of at most 1,024 characters; a trailing slash is dropped."""
    from connector.settings import SettingsError

    assert Settings.from_env({"COURSEWIRE_PUBLIC_URL": "https://lms.contoso.com/lms/"}).public_url == (
        "https://lms.contoso.com/lms"
    )
    for bad in ("lms.contoso.com", "ftp://x.example", "https://x.example/?a=1", "https://x.example/" + "p" * 1100):
        with pytest.raises(SettingsError, match="COURSEWIRE_PUBLIC_URL"):
            Settings.from_env({"COURSEWIRE_PUBLIC_URL": bad})


def test_a_trusted_proxys_forwarded_headers_must_be_what_they_claim(app: Any, api: Api) -> None:
    """A review's finding: from a trusted proxy, `X-Forwarded-Proto: javascript:...` and a markup X-Forwarded-Host
    ended up in a catalog's stored Url; now they are 400s before any write, and of a list the last value (the one
    the nearest proxy added) counts."""
    with _client(app, "127.0.0.1") as client:
        for name, value in (
            ("X-Forwarded-Proto", "javascript:alert(document.domain)//"),
            ("X-Forwarded-Host", 'x"><img src=x onerror=alert(1)>'),
            ("X-Forwarded-Host", "lms.contoso.com, " + "h" * 300),
        ):
            response = client.post(
                "/odata/v2/CourseCatalogs", json={"Title": "Proxied"}, headers={**basic(api.secret), name: value}
            )
            assert (response.status_code, error(response)["target"]) == (400, name), (name, value)
        assert api.ok("GET", "/odata/v2/CourseCatalogs")["value"] == []
        appended = client.post(
            "/odata/v2/CourseCatalogs",
            json={"Title": "Proxied"},
            headers={
                **basic(api.secret),
                "X-Forwarded-Host": "evil.example, lms.contoso.com",
                "X-Forwarded-Proto": "HTTPS",
            },
        )
        assert appended.json()["Url"].startswith("https://lms.contoso.com/catalogs/"), appended.text


def test_writes_tell_nothing_about_enrollments_a_user_may_not_read(api: Api) -> None:
    """A review's finding: Approve on another learner's enrollment answered 409 "the enrollment is Waitlisted", and
    a hidden enrollment's 404 differed from a missing one's. Now every bound action on an enrollment outside the
    caller's read scope is the same 404 as for an id that does not exist."""
    world = build_world(api, max_attendees="10")
    course, session = world.course["Id"], world.session["Id"]
    bobs = api.ok(
        "POST",
        f"/odata/v2/Courses({course})/Enroll",
        json={"userLoginName": world.login("bob"), "courseSessionId": session},
    )["Id"]
    missing = "0b9b3a4e-8d7f-4c2a-9e1d-5f6a7b8c9d0e"
    ann = world.uid("ann")
    for action in ("Approve", "Reject", "Cancel", "Start", "Complete", "Retake"):
        hidden = api.post(f"/odata/v2/Enrollments({bobs})/{action}", user=ann, json={})
        absent = api.post(f"/odata/v2/Enrollments({missing})/{action}", user=ann, json={})
        assert hidden.status_code == absent.status_code == 404, (action, hidden.text)
        assert error(hidden)["message"].replace(bobs, missing) == error(absent)["message"], action
    read_hidden = api.get(f"/odata/v2/Enrollments({bobs})", user=ann)
    read_absent = api.get(f"/odata/v2/Enrollments({missing})", user=ann)
    assert error(read_hidden)["message"].replace(bobs, missing) == error(read_absent)["message"]
    assert api.ok("GET", f"/odata/v2/Enrollments({bobs})")["EnrollmentStatus"] == 1  # untouched
