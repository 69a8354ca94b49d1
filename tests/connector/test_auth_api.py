"""Basic auth with API keys, Read Only vs Full Control, LMS365-User-Id, and throttling across processes."""

from __future__ import annotations

from dataclasses import replace

from support import Api, basic, build_world, error

from connector.app import create_app
from connector.settings import RateLimit
from storage import apikeys


def test_missing_credentials_are_401_with_a_basic_challenge(client) -> None:
    """Without Authorization the answer is 401, the OData error shape and a Basic challenge."""
    response = client.get("/odata/v2/Users")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "api" in error(response)["message"]


def test_username_must_be_api_and_key_must_be_live(api: Api, client) -> None:
    """The username is always `api`; unknown and revoked keys are refused."""
    assert client.get("/odata/v2/Users", headers=basic(api.secret, "admin")).status_code == 401
    assert client.get("/odata/v2/Users", headers=basic("cw_not-a-key")).status_code == 401
    created = apikeys.create(api.db, "temp", "full")
    assert client.get("/odata/v2/Users", headers=basic(created.secret)).status_code == 200
    apikeys.revoke(api.db, created.key.id)
    assert client.get("/odata/v2/Users", headers=basic(created.secret)).status_code == 401


def test_keys_are_stored_only_as_hashes(api: Api) -> None:
    """The database never holds a key's secret."""
    created = apikeys.create(api.db, "hashed", "read")
    dump = "\n".join(api.db.conn.iterdump())
    assert created.secret not in dump


def test_read_only_keys_read_but_never_write(api: Api, read_api: Api) -> None:
    """A Read Only key may GET but any write is 403, also when wrapped in HttpRequest."""
    assert read_api.get("/odata/v2/Users").status_code == 200
    response = read_api.post("/odata/v2/Users", json={"LoginName": "x@y.example"})
    assert response.status_code == 403
    assert "Read Only" in error(response)["message"]
    wrapped = read_api.post("/httprequest", json={"method": "POST", "uri": "Users", "body": '{"LoginName": "x@y.z"}'})
    assert wrapped.status_code == 403
    assert api.ok("GET", "/odata/v2/Users", params={"$filter": "LoginName eq 'x@y.z'"})["value"] == []


def test_unknown_on_behalf_user_is_a_clear_400(api: Api) -> None:
    """An LMS365-User-Id naming nobody is 400 and names the header."""
    response = api.post("/odata/v2/Users", json={"LoginName": "n@x.example"}, user="nobody")
    assert response.status_code == 400
    assert error(response)["target"] == "LMS365-User-Id"


def test_directory_object_id_also_names_the_acting_user(api: Api) -> None:
    """LMS365-User-Id may be the user's DirectoryObjectId; a learner then may not create users."""
    api.ok(
        "POST",
        "/odata/v2/Users",
        json={"LoginName": "l@x.example", "DirectoryObjectId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301"},
    )
    response = api.post(
        "/odata/v2/Users", json={"LoginName": "m@x.example"}, user="3F2504E0-4F89-41D3-9A0C-0305E82C3301"
    )
    assert response.status_code == 403


def test_every_write_records_who_did_it(api: Api) -> None:
    """The event of a write carries the acting key and user."""
    world = build_world(api)
    api.ok("POST", f"/odata/v2/Courses({world.course['Id']})/Publish", 204)
    api.ok(
        "POST",
        f"/odata/v2/Courses({world.course['Id']})/Enroll",
        json={"userLoginName": "ann@x.example"},
        user=world.uid("ann"),
    )
    from storage import events

    created = events.latest(api.db, limit=1, types=["EnrollmentCreated"])[0]
    assert created.actor["kind"] == "user"
    assert created.actor["user_id"] == world.uid("ann")
    assert created.actor["api_key_id"]


def test_throttling_answers_429_with_retry_after_across_processes(settings, db) -> None:
    """The per-key limit is shared by every server process (two apps on one data dir) and says when to retry."""
    limited = replace(settings, rate_limit=RateLimit(3, 60))
    secret = apikeys.create(db, "busy", "full").secret
    other = apikeys.create(db, "calm", "full").secret
    first, second = create_app(limited, db=db), create_app(limited, db=db)
    with first.test_client() as a, second.test_client() as b:
        assert [c.get("/odata/v2/Users", headers=basic(secret)).status_code for c in (a, b, a)] == [200, 200, 200]
        refused = b.get("/odata/v2/Users", headers=basic(secret))
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        assert 59 <= retry_after <= 60  # the first of the 3 calls leaves the 60 s window then
        assert error(refused)["code"] == "TooManyRequests"
        assert f"accepted in {retry_after} s" in error(refused)["message"]
        assert a.get("/odata/v2/Users", headers=basic(other)).status_code == 200


def test_the_throttling_window_runs_on_the_one_clock(settings, db, clock) -> None:
    """The limiter read the wall clock while everything else read the database's: moving the injected clock
    past the window frees it (it stayed refused for a real minute before)."""
    limited = replace(settings, rate_limit=RateLimit(2, 60))
    secret = apikeys.create(db, "busy", "full").secret
    with create_app(limited, db=db).test_client() as client:
        assert [client.get("/odata/v2/Users", headers=basic(secret)).status_code for _ in range(3)] == [200, 200, 429]
        clock.advance(seconds=59)
        refused = client.get("/odata/v2/Users", headers=basic(secret))
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        clock.advance(seconds=1)
        assert client.get("/odata/v2/Users", headers=basic(secret)).status_code == 200
