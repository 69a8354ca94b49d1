"""What a course body may do beyond its course: naming an existing tag or category is editing the course,
creating a catalog-wide one is a catalog admin's; and every URL a client sends is an absolute http(s) URL
without credentials (or, for a course Url, a path below its catalog)."""

from __future__ import annotations

import json
import string
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support import Api, World, build_world, error

from storage import catalogs, names
from storage.db import Database
from storage.errors import Invalid
from storage.models import CLI

ANN = "ann@x.example"  # course admin of the Safety course (not a catalog admin)
DEE = "dee@x.example"  # catalog admin of the Safety catalog


@dataclass
class Org:
    """build_world's organisation plus a Safety catalog (dee its admin) holding a course ann administers."""

    world: World
    catalog: dict[str, Any]
    course: dict[str, Any]
    tag: dict[str, Any]
    category: dict[str, Any]

    def as_user(self, name: str) -> str:
        return self.world.uid(name)


def course_body(catalog_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "CourseCatalogId": catalog_id,
        "CourseType": "ELearning",
        "Title": "Safety 101",
        "Description": "Basics",
        "Culture": "en-US",
        "UICulture": "en-US",
        "Url": "safety-101",
        **extra,
    }


@pytest.fixture
def org(api: Api) -> Org:
    world = build_world(api)
    catalog = api.ok("POST", "/odata/v2/CourseCatalogs", json={"Title": "Safety", "AdminLogins": [DEE]})
    tag = api.ok("POST", "/odata/v2/CourseTags", json={"CourseCatalogId": catalog["Id"], "Name": "Stra\u00dfe"})
    category = api.ok(
        "POST", "/odata/v2/CourseCategories", json={"CourseCatalogId": catalog["Id"], "Name": "Caf\u00e9"}
    )
    course = api.ok("POST", "/odata/v2/Courses", json=course_body(catalog["Id"], AdminLogins=[ANN]))
    api.provision()
    return Org(world, catalog, course, tag, category)


def counts(api: Api) -> tuple[int, int]:
    """(tags, categories) in the database."""
    conn = api.db.conn
    return conn.execute("SELECT count(*) FROM tags").fetchone()[0], conn.execute(
        "SELECT count(*) FROM categories"
    ).fetchone()[0]


def linked(api: Api, course_id: str) -> tuple[list[str], list[str]]:
    """(tag ids, category ids) of a course."""
    conn = api.db.conn
    tags = [
        r[0] for r in conn.execute("SELECT tag_id FROM course_tags WHERE course_id = ? ORDER BY rowid", (course_id,))
    ]
    cats = [
        r[0]
        for r in conn.execute(
            "SELECT category_id FROM course_categories WHERE course_id = ? ORDER BY rowid", (course_id,)
        )
    ]
    return tags, cats


def assert_forbidden(response: Any, target: str, name: str) -> None:
    assert response.status_code == 403, response.text
    err = error(response)
    assert err["target"] == target, err
    assert name in err["message"] and "catalog admins and administrators" in err["message"], err


# --- course bodies cannot create catalog-wide tags and categories ------------------------------------


def test_a_course_admin_cannot_create_tags_or_categories_through_her_course(api: Api, org: Org) -> None:
    """The issue's example: a course admin who may not POST CourseTags cannot create a tag or category by
    naming it in a PATCH of her course either; the 403 names the field, and nothing changes."""
    ann = org.as_user("ann")
    direct = api.post("/odata/v2/CourseTags", user=ann, json={"CourseCatalogId": org.catalog["Id"], "Name": "Direct"})
    assert direct.status_code == 403, direct.text
    before, path = counts(api), f"/odata/v2/Courses({org.course['Id']})"

    both = api.patch(
        path,
        user=ann,
        json={"Title": "Renamed", "Tags": [{"TagName": "Round2ViaCourse"}], "Categories": [{"Name": "Round2Cat"}]},
    )
    assert both.status_code == 403, both.text
    assert_forbidden(
        api.patch(path, user=ann, json={"Tags": [{"TagName": "Round2ViaCourse"}]}), "Tags[0].TagName", "Round2ViaCourse"
    )
    assert_forbidden(api.patch(path, user=ann, json={"Tags": [{"Name": "ByName"}]}), "Tags[0].Name", "ByName")
    assert_forbidden(
        api.patch(path, user=ann, json={"Categories": [{"Id": org.category["Id"]}, {"Name": "Round2Cat"}]}),
        "Categories[1].Name",
        "Round2Cat",
    )
    assert_forbidden(
        api.patch(path, user=ann, json={"Categories": [{"Name": "Fresh", "IsNew": True}]}),
        "Categories[0].Name",
        "Fresh",
    )
    assert counts(api) == before
    after = api.ok("GET", path)
    assert after["Title"] == "Safety 101"
    assert linked(api, org.course["Id"]) == ([], [])


def test_the_same_refusal_holds_through_send_an_http_request(api: Api, org: Org) -> None:
    """HttpRequest runs the inner PATCH as the outer caller, so it cannot create a tag the caller may not."""
    before = counts(api)
    wrapped = api.post(
        "/v2/httprequest",
        user=org.as_user("ann"),
        json={
            "method": "PATCH",
            "uri": f"odata/v2/Courses({org.course['Id']})",
            "body": json.dumps({"Tags": [{"TagName": "ViaProxy"}]}),
        },
    )
    assert wrapped.status_code == 403, wrapped.text
    assert counts(api) == before


def test_a_course_admin_may_name_existing_tags_and_categories_by_key_or_id(api: Api, org: Org) -> None:
    """Naming a tag or category the catalog has, in any case or Unicode form or by Id, is editing the course:
    the course admin's PATCH links the existing ones and creates nothing."""
    before, path = counts(api), f"/odata/v2/Courses({org.course['Id']})"
    api.ok(
        "PATCH",
        path,
        user=org.as_user("ann"),
        json={
            "Tags": [{"TagName": "STRASSE"}, {"Id": org.tag["Id"]}],
            "Categories": [{"Name": unicodedata.normalize("NFD", "CAF\u00c9")}, {"Name": "caf\u00e9", "IsNew": True}],
        },
    )
    assert counts(api) == before
    assert linked(api, org.course["Id"]) == ([org.tag["Id"]], [org.category["Id"]])


@pytest.mark.parametrize("who", ["catalog admin", "administrator", "key"])
def test_catalog_admins_and_administrators_may_create_them_through_a_course(api: Api, org: Org, who: str) -> None:
    """Whoever may create tags and categories directly may still do it by naming new ones in a course body."""
    user = {"catalog admin": org.as_user("dee"), "administrator": org.as_user("admin"), "key": None}[who]
    tags, cats = counts(api)
    api.ok(
        "PATCH",
        f"/odata/v2/Courses({org.course['Id']})",
        user=user,
        json={"Tags": [{"TagName": "Round2ViaCourse"}], "Categories": [{"Name": "Round2Cat"}]},
    )
    assert counts(api) == (tags + 1, cats + 1)
    names = {t["Name"] for t in api.ok("GET", "/odata/v2/CourseTags", params={"$top": "50"})["value"]}
    assert "Round2ViaCourse" in names


def test_create_course_by_a_catalog_admin_creates_new_tags_and_categories_as_before(api: Api, org: Org) -> None:
    """CreateCourse already needs a catalog admin, so the tags and categories it names are created as before."""
    tags, cats = counts(api)
    created = api.ok(
        "POST",
        "/odata/v2/Courses",
        user=org.as_user("dee"),
        json=course_body(
            org.catalog["Id"],
            Url="safety-102",
            Tags=[{"TagName": "New tag"}, {"TagName": "strasse"}],
            Categories=[{"Name": "New cat"}],
        ),
    )
    assert counts(api) == (tags + 1, cats + 1)
    assert org.tag["Id"] in linked(api, created["Id"])[0]
    refused = api.post(
        "/odata/v2/Courses", user=org.as_user("ann"), json=course_body(org.catalog["Id"], Url="safety-103")
    )
    assert refused.status_code == 403, refused.text


def test_storage_holds_tag_and_category_names_to_the_documents_limit(db: Database) -> None:
    """Callers other than the API (the CLI, the demo) get the document's 100 characters for a tag or
    category name too, so no longer name reaches the (catalog, name) index."""
    catalog = catalogs.create_catalog(db, CLI, {"Title": "Academy"}, "http://x.example")
    longest = "\U0001f4da" * catalogs.MAX_NAME
    assert catalogs.create_tag(db, CLI, {"CourseCatalogId": catalog["Id"], "Name": longest})["Name"] == longest
    with pytest.raises(Invalid) as tag:
        catalogs.create_tag(db, CLI, {"CourseCatalogId": catalog["Id"], "Name": longest + "x"})
    assert tag.value.target == "Name"
    with pytest.raises(Invalid) as category:
        catalogs.create_category(db, CLI, {"CourseCatalogId": catalog["Id"], "Name": "c" * 101})
    assert category.value.target == "Name"
    with pytest.raises(Invalid) as named, db.write() as conn:
        catalogs.resolve_tags(conn, CLI, db.clock(), catalog["Id"], [{"TagName": "t" * 101}])
    assert named.value.target == "Tags[0].TagName"


# --- URLs a client sends ------------------------------------------------------------------------------

GOOD_URLS = [
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_N2Q%40thread.v2/0?context=%7b%22Tid%22%3a%22x%22%7d",
    "http://meet.example:8080/room/1?pwd=abc#start",
    "HTTPS://Zoom.example/j/123",
    "https://[2001:db8::1]/room",
    "https://b\u00fccher.example/r\u00e4ume/1",
]
# (URL, what the message must mention)
BAD_URLS = [
    ("javascript:alert(document.cookie)", "http"),
    ("JaVaScRiPt:alert(1)", "http"),
    ("data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "http"),
    ("vbscript:msgbox(1)", "http"),
    ("file:///etc/passwd", "http"),
    ("ftp://files.example/x", "http"),
    ("//evil.example/x", "absolute"),
    ("/relative/path", "absolute"),
    ("meet.example/room", "absolute"),
    ("https:evil.example", "host"),
    ("https:///path", "host"),
    ("https://", "host"),
    ("https://user:secret@meet.example/room", "credentials"),
    ("https://user@meet.example/room", "credentials"),
    ("https://meet.example@evil.example/", "credentials"),
    ("https://meet.example:99999/", "port"),
    ("https://[::1/", "host"),
    ("https://meet.example/a b", "U+0020"),
    ("https://meet.example\\@evil.example/", "U+005C"),
    ("https://meet.example/\u200b", "U+200B"),
    ("https://meet.example/\tx", "U+0009"),
    ("java\nscript:alert(1)", "U+000A"),
]


def session_path(world: World) -> str:
    return f"/odata/v2/CourseSessions({world.session['Id']})"


def new_session(api: Api, world: World, **extra: Any) -> Any:
    return api.post(
        f"/odata/v2/Courses({world.course['Id']})/CourseSessions",
        json={
            "Title": "Online",
            "StartDate": "2030-05-01T09:00:00Z",
            "EndDate": "2030-05-01T10:00:00Z",
            "TimeZone": "UTC",
            **extra,
        },
    )


def stored_meeting_urls(api: Api) -> list[str | None]:
    return [r[0] for r in api.db.conn.execute("SELECT meeting_url FROM course_sessions ORDER BY rowid")]


def assert_refused_url(response: Any, target: str, mention: str) -> None:
    assert response.status_code == 400, response.text
    err = error(response)
    assert err["target"] == target, err
    assert mention in err["message"], err


def test_a_session_meeting_url_must_be_http_or_https(api: Api) -> None:
    """The issue's example: `javascript:` and `data:` meeting URLs (which a canvas app would open) are a
    400 naming MeetingUrl, on create and on update, and nothing is stored."""
    world = build_world(api)
    before = stored_meeting_urls(api)
    for url in ("javascript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>"):
        assert_refused_url(new_session(api, world, MeetingUrl=url), "MeetingUrl", "http")
        assert_refused_url(api.patch(session_path(world), json={"MeetingUrl": url}), "MeetingUrl", "http")
    assert stored_meeting_urls(api) == before


@pytest.mark.parametrize(("url", "mention"), BAD_URLS)
def test_every_url_property_refuses_what_is_not_an_absolute_http_url(api: Api, url: str, mention: str) -> None:
    """MeetingUrl and ImageUrl, on create and update, refuse other schemes, relative and host-less URLs,
    credentials, bad ports, and characters a URL may not hold, with a 400 naming the field."""
    world = build_world(api)
    catalog_id = world.catalog["Id"]
    course_path = f"/odata/v2/Courses({world.course['Id']})"
    calls = [
        ("MeetingUrl", lambda: new_session(api, world, MeetingUrl=url)),
        ("MeetingUrl", lambda: api.patch(session_path(world), json={"MeetingUrl": url})),
        ("ImageUrl", lambda: api.post("/odata/v2/Courses", json=course_body(catalog_id, Url="img", ImageUrl=url))),
        ("ImageUrl", lambda: api.patch(course_path, json={"ImageUrl": url})),
    ]
    for target, call in calls:
        assert_refused_url(call(), target, mention)
    assert stored_meeting_urls(api) == [None]
    assert [r[0] for r in api.db.conn.execute("SELECT image_url FROM courses")] == [None]


def test_ordinary_meeting_and_image_urls_are_kept_and_empty_means_none(api: Api) -> None:
    """Real meeting links (Teams, with encoded JSON; a port, query and fragment; an IPv6 host; a Unicode
    host and path) are accepted as given, blanks around them trimmed; empty or null clears the field (then left
    out of the response)."""
    world = build_world(api)
    course_path = f"/odata/v2/Courses({world.course['Id']})"
    for url in GOOD_URLS:
        session = new_session(api, world, MeetingUrl=f"  {url} ")
        assert session.status_code == 200, session.text
        assert session.json()["MeetingUrl"] == url
        assert api.ok("PATCH", session_path(world), json={"MeetingUrl": url})["MeetingUrl"] == url
        assert api.ok("PATCH", course_path, json={"ImageUrl": url})["ImageUrl"] == url
    for empty in ("", None):
        assert "MeetingUrl" not in api.ok("PATCH", session_path(world), json={"MeetingUrl": empty})
        assert "ImageUrl" not in api.ok("PATCH", course_path, json={"ImageUrl": empty})


def test_a_course_url_is_a_path_or_an_absolute_http_url_without_credentials(api: Api) -> None:
    """A course Url is a path below the catalog (as LMS365's is) or an absolute http(s) URL; other schemes,
    credentials and characters a URL may not hold are a 400 naming Url."""
    world = build_world(api)
    catalog_id = world.catalog["Id"]
    slug = api.ok("POST", "/odata/v2/Courses", json=course_body(catalog_id, Url="safety-101/intro"))
    assert slug["Url"] == f"{world.catalog['Url']}/safety-101/intro"
    absolute = api.ok(
        "POST", "/odata/v2/Courses", json=course_body(catalog_id, Url="https://contoso.example/sites/s1/")
    )
    assert absolute["Url"] == "https://contoso.example/sites/s1"
    for url, mention in [
        ("javascript:alert(1)", "http"),
        ("data:text/html,x", "http"),
        ("https://user:secret@contoso.example/sites/s2", "credentials"),
        ("https://admin@contoso.example/sites/s2", "credentials"),
        ("https://contoso.example\\@evil.example/", "U+005C"),
        ("https://contoso.example:0x50/", "port"),
        ("https:contoso.example/sites/s2", "host"),
        ("../escape", "path segment"),
    ]:
        assert_refused_url(api.post("/odata/v2/Courses", json=course_body(catalog_id, Url=url)), "Url", mention)


# Pieces URLs are made of, the ones parsers disagree about among them, and anything else.
URL_PARTS = st.one_of(
    st.sampled_from(["http://", "https://", "HTTPS://", "javascript:", "data:", "//", "https:", "ftp://"]),
    st.sampled_from([*"ab0:/@\\.%[]#?=&-_ ~!$'()*+,;<>\"{}|^`", "\u200b", "\u00e9", "\u00a0", "\ufe0f"]),
    st.sampled_from(["meet.example", "user:pw@", "[::1]", ":8080", ":99999", "%40", "%2F"]),
    st.characters(),
)
RFC3986 = set(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")


@settings(max_examples=1000, deadline=None)
@given(url=st.lists(URL_PARTS, max_size=8).map("".join))
@example(url="https://meet.example/r\u00e4ume?pwd=a%20b#x")
@example(url="https://meet.example\\@evil.example/")
@example(url="https://meet.example%40evil.example@x/")
def test_a_url_is_either_a_safe_http_url_or_a_400_naming_the_field(url: str) -> None:
    """Whatever a client sends as a URL, storage either refuses it with Invalid naming the field (never
    another error, so never a 500) or keeps an http(s) URL with a host, no credentials, no character that
    parsers read differently, and nothing invisible."""
    try:
        kept = names.web_url(url, "MeetingUrl")
    except Invalid as refused:
        assert refused.target == "MeetingUrl"
        return
    if kept is None:
        assert not url.strip()
        return
    parts = urlsplit(kept)
    assert parts.scheme.lower() in ("http", "https")
    assert parts.hostname
    assert "@" not in parts.netloc
    assert all(c in RFC3986 for c in kept if c < "\x80")
    assert names.refused(kept) is None
