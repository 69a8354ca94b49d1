"""One person, one login: names that identify something compare by one key (NFC, full case folding) and
refuse invisible characters, for users and everywhere else a name or Url is unique or looked up."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from support import Api, build_world, error

from storage import catalogs, courses, lookups, names, users
from storage.db import Database
from storage.errors import Conflict, Invalid
from storage.migrations import migrations
from storage.models import CLI

JOSE_NFC = unicodedata.normalize("NFC", "jos\u00e9@x.example")
JOSE_NFD = unicodedata.normalize("NFD", JOSE_NFC)
GUID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
OTHER_GUID = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"


def user_count(api: Api) -> int:
    return int(api.db.conn.execute("SELECT count(*) FROM users").fetchone()[0])


def create(api: Api, **body: Any) -> Any:
    return api.post("/odata/v2/Users", json=body)


def assert_conflict(response: Any, target: str, holder: str) -> None:
    assert response.status_code == 409, response.text
    err = error(response)
    assert err["target"] == target
    assert holder in err["message"]


def assert_refused(response: Any, target: str, code_point: str) -> None:
    assert response.status_code == 400, response.text
    err = error(response)
    assert err["target"] == target
    assert code_point in err["message"]


# --- the examples ------------------------------------------------------------------------


def test_composed_and_decomposed_jose_are_one_login(api: Api) -> None:
    """`josé` typed on a Mac (decomposed) and on Windows (composed) is one person, not two users."""
    first = api.ok("POST", "/odata/v2/Users", json={"LoginName": JOSE_NFC})
    assert_conflict(create(api, LoginName=JOSE_NFD), "LoginName", first["Id"])
    assert_conflict(create(api, LoginName=JOSE_NFD.upper()), "LoginName", first["Id"])
    assert user_count(api) == 1


def test_a_login_followed_by_a_zero_width_space_is_refused(api: Api) -> None:
    """A name that looks like another but hides a zero-width space is a 400 saying which character, and
    creates nothing."""
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "ann@x.example"})
    response = create(api, LoginName="ann@x.example\u200b")
    assert_refused(response, "LoginName", "U+200B")
    assert "ZERO WIDTH SPACE" in error(response)["message"]
    assert "character 14" in error(response)["message"]
    assert user_count(api) == 1


def test_a_variation_selector_or_braille_blank_after_a_name_is_refused(api: Api) -> None:
    """The second round's examples: a login or e-mail followed by U+FE0F or U+2800, and tag names `Safety`
    followed by U+FE0F, U+2800 or U+E0100, look like the name without them; each is a 400 naming the
    code point (directly and through a course body), and nothing is created."""
    world = build_world(api)  # ann@x.example is a user, with that e-mail
    users_before = user_count(api)
    for char in ("\ufe0f", "\u2800"):
        code = f"U+{ord(char):04X}"
        assert_refused(create(api, LoginName=f"ann@x.example{char}"), "LoginName", code)
        assert_refused(create(api, LoginName="ann2", Email=f"ann@x.example{char}"), "Email", code)
    assert user_count(api) == users_before

    catalog_id, course_path = world.catalog["Id"], f"/odata/v2/Courses({world.course['Id']})"
    api.ok("POST", "/odata/v2/CourseTags", json={"CourseCatalogId": catalog_id, "Name": "Safety"})
    tags_before = api.db.conn.execute("SELECT count(*) FROM tags").fetchone()[0]
    for char in ("\ufe0f", "\u2800", "\U000e0100"):
        code = f"U+{ord(char):04X}"
        for kind in ("CourseTags", "CourseCategories"):
            refused = api.post(f"/odata/v2/{kind}", json={"CourseCatalogId": catalog_id, "Name": f"Safety{char}"})
            assert_refused(refused, "Name", code)
        assert_refused(api.patch(course_path, json={"Tags": [{"TagName": f"Safety{char}"}]}), "Tags[0].TagName", code)
        assert_refused(
            api.patch(course_path, json={"Categories": [{"Name": f"Safety{char}"}]}), "Categories[0].Name", code
        )
    assert api.db.conn.execute("SELECT count(*) FROM tags").fetchone()[0] == tags_before


# --- the kind, beyond the examples -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\x00", "U+0000"),
        ("\u200c", "U+200C"),  # zero-width non-joiner
        ("\u200d", "U+200D"),  # zero-width joiner
        ("\u2060", "U+2060"),  # word joiner
        ("\ufeff", "U+FEFF"),  # byte order mark
        ("\u202e", "U+202E"),  # right-to-left override
        ("\u2066", "U+2066"),  # left-to-right isolate
        ("\u00ad", "U+00AD"),  # soft hyphen
        ("\x1b", "U+001B"),  # escape
        ("\ufdd0", "U+FDD0"),  # noncharacter
        ("\U0010ffff", "U+10FFFF"),  # noncharacter
        ("\u3164", "U+3164"),  # Hangul filler: a letter that draws nothing
        # Default_Ignorable_Code_Point beyond the format characters, and symbols that draw a blank
        ("\ufe0f", "U+FE0F"),  # variation selector-16
        ("\ufe00", "U+FE00"),  # variation selector-1
        ("\U000e0100", "U+E0100"),  # variation selector-17
        ("\u034f", "U+034F"),  # combining grapheme joiner
        ("\u180b", "U+180B"),  # Mongolian free variation selector one
        ("\u180f", "U+180F"),  # Mongolian free variation selector four
        ("\u115f", "U+115F"),  # Hangul choseong filler
        ("\u1160", "U+1160"),  # Hangul jungseong filler
        ("\uffa0", "U+FFA0"),  # halfwidth Hangul filler
        ("\u17b4", "U+17B4"),  # Khmer vowel inherent aq
        ("\U000e0041", "U+E0041"),  # tag latin capital letter A
        ("\u2800", "U+2800"),  # Braille pattern blank
        ("\U0001d159", "U+1D159"),  # musical symbol null notehead
    ],
)
def test_invisible_and_control_characters_are_refused_in_logins(api: Api, char: str, name: str) -> None:
    """Controls, format characters (zero-width and joiners, bidi, BOM, soft hyphen), noncharacters, the rest
    of Unicode's default-ignorable characters (variation selectors, fillers, tags) and symbols that draw a
    blank in a login name are a 400 naming the code point, whether at the end or inside."""
    for login in (f"eve{char}@x.example", f"eve@x.example{char}"):
        assert_refused(create(api, LoginName=login), "LoginName", name)
    assert user_count(api) == 0


@pytest.mark.parametrize(
    "space",
    ["\u00a0", "\u3000", "\u2009", "\u202f", "\u2007", "\u205f", "\u1680"],
    ids=["NBSP", "ideographic", "thin", "narrow NBSP", "figure", "math", "ogham"],
)
def test_non_ascii_spaces_are_trimmed_at_the_ends_and_refused_inside(api: Api, space: str) -> None:
    """A no-break, ideographic or other non-ASCII space around a name is dropped like an ordinary blank, so
    the stored name never holds one; inside a name it would pass for an ordinary space, so it is a 400
    asking for one. Ordinary spaces inside a name stay."""
    code = f"U+{ord(space):04X}"
    kim = api.ok("POST", "/odata/v2/Users", json={"LoginName": f"{space}kim@x.example{space}"})
    assert kim["LoginName"] == "kim@x.example"
    assert_conflict(create(api, LoginName=f"KIM@x.example{space}"), "LoginName", kim["Id"])
    refused = create(api, LoginName=f"kim{space}lee@x.example")
    assert_refused(refused, "LoginName", code)
    assert "ordinary space" in error(refused)["message"]

    catalog = api.ok("POST", "/odata/v2/CourseCatalogs", json={"Title": "Academy", "AdminLogins": []})
    tag = api.ok("POST", "/odata/v2/CourseTags", json={"CourseCatalogId": catalog["Id"], "Name": "Health and safety"})
    padded = api.post(
        "/odata/v2/CourseTags", json={"CourseCatalogId": catalog["Id"], "Name": f"{space}health AND safety{space}"}
    )
    assert_conflict(padded, "Name", tag["Id"])
    inside = api.post(
        "/odata/v2/CourseTags", json={"CourseCatalogId": catalog["Id"], "Name": f"Health{space}and safety"}
    )
    assert_refused(inside, "Name", code)
    assert "character 7" in error(inside)["message"]


def test_a_lone_surrogate_is_a_400_not_a_500(api: Api) -> None:
    """JSON may carry a lone surrogate escape; it is refused as text, never left to fail in the database
    (the edge may refuse the body first; storage refuses the string whoever calls it)."""
    response = api.post(
        "/odata/v2/Users",
        content=b'{"LoginName": "eve\\ud800@x.example"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "U+D800" in error(response)["message"] or "surrogate" in error(response)["message"]
    with pytest.raises(Invalid) as refused:
        users.create(api.db, CLI, {"LoginName": "eve\ud800@x.example"})
    assert refused.value.target == "LoginName" and "U+D800" in refused.value.message
    assert user_count(api) == 0


def test_whitespace_around_a_login_is_trimmed_and_the_display_form_is_nfc(api: Api) -> None:
    """Leading and trailing blanks are dropped as before; the login is kept as given, composed (NFC)."""
    created = api.ok("POST", "/odata/v2/Users", json={"LoginName": f"  {JOSE_NFD.title()}\t"})
    assert created["LoginName"] == unicodedata.normalize("NFC", JOSE_NFD.title())


def test_full_case_folding_makes_strasse_and_strasse_with_eszett_one_login(api: Api) -> None:
    """`Straße` and `STRASSE` are the same name under full case folding (ß folds to ss)."""
    first = api.ok("POST", "/odata/v2/Users", json={"LoginName": "stra\u00dfe@x.example"})
    assert_conflict(create(api, LoginName="STRASSE@X.EXAMPLE"), "LoginName", first["Id"])


def test_every_lookup_by_login_name_uses_the_same_key(api: Api) -> None:
    """`JOSÉ@x` (decomposed, upper case) finds `josé@x` wherever a login name names a user: manager,
    catalog and course people, session instructors, enrollments."""
    world = build_world(api)
    jose = api.ok("POST", "/odata/v2/Users", json={"LoginName": JOSE_NFC})
    shouted = unicodedata.normalize("NFD", JOSE_NFC.upper())
    assert shouted != JOSE_NFC.upper()

    report = api.ok("POST", "/odata/v2/Users", json={"LoginName": "rep@x.example", "ManagerLoginName": shouted})
    assert report["ManagerId"] == jose["Id"]
    catalog = api.ok("POST", "/odata/v2/CourseCatalogs", json={"Title": "Ops", "AdminLogins": [shouted]})
    admins = api.db.conn.execute("SELECT user_id FROM catalog_admins WHERE catalog_id = ?", (catalog["Id"],))
    assert [r[0] for r in admins] == [jose["Id"]]
    course_id = world.course["Id"]
    api.ok(
        "PATCH",
        f"/odata/v2/Courses({course_id})",
        json={"AdminLogins": [shouted], "TeacherLogins": [shouted, JOSE_NFC], "TrainerLogins": [shouted]},
    )
    people = api.db.conn.execute(
        "SELECT role, user_id FROM course_people WHERE course_id = ? ORDER BY role", (course_id,)
    ).fetchall()
    assert [tuple(p) for p in people] == [("Admin", jose["Id"]), ("Teacher", jose["Id"]), ("Trainer", jose["Id"])]
    api.ok("PATCH", f"/odata/v2/CourseSessions({world.session['Id']})", json={"InstructorLogins": [shouted]})
    enrolled = api.ok("POST", f"/odata/v2/Courses({course_id})/Enroll", json={"userLoginName": shouted})
    assert enrolled["UserId"] == jose["Id"]


def test_email_is_unique_among_live_users_by_the_same_key(api: Api) -> None:
    """Two live users cannot share an e-mail address that differs only in case or Unicode form; the 409
    names the holder. Empty or absent e-mails never collide, and a deleted user's address is free."""
    kim = api.ok("POST", "/odata/v2/Users", json={"LoginName": "kim", "Email": "Kim.J\u00f6rg@X.example"})
    taken = create(api, LoginName="kim2", Email=unicodedata.normalize("NFD", "kim.j\u00f6rg@x.EXAMPLE"))
    assert_conflict(taken, "Email", kim["Id"])
    for n, email in enumerate(["", "", None, None]):
        body: dict[str, Any] = {"LoginName": f"blank{n}"}
        if email is not None:
            body["Email"] = email
        api.ok("POST", "/odata/v2/Users", json=body)
    api.ok("DELETE", f"/odata/v2/Users({kim['Id']})", status=204)
    api.ok("POST", "/odata/v2/Users", json={"LoginName": "kim3", "Email": "KIM.J\u00d6RG@x.example"})


def test_email_with_invisible_characters_is_refused(api: Api) -> None:
    """An e-mail address hiding a zero-width or bidi character is refused like a login name."""
    assert_refused(create(api, LoginName="z", Email="z\u200b@x.example"), "Email", "U+200B")
    assert_refused(create(api, LoginName="z", Email="z@x.example\u202e"), "Email", "U+202E")
    assert user_count(api) == 0


def test_directory_object_id_is_a_guid_unique_among_live_users(api: Api) -> None:
    """DirectoryObjectId is how LMS365-User-Id names a user: a well-formed GUID, held by one live user."""
    bad = create(api, LoginName="a", DirectoryObjectId="aad-123")
    assert bad.status_code == 400 and error(bad)["target"] == "DirectoryObjectId"
    first = api.ok("POST", "/odata/v2/Users", json={"LoginName": "a", "DirectoryObjectId": GUID.upper()})
    assert first["DirectoryObjectId"] == GUID
    assert_conflict(create(api, LoginName="b", DirectoryObjectId=GUID), "DirectoryObjectId", first["Id"])
    # Another user's Id is taken too: LMS365-User-Id would name both.
    assert_conflict(create(api, LoginName="b", DirectoryObjectId=first["Id"]), "DirectoryObjectId", first["Id"])
    second = api.ok("POST", "/odata/v2/Users", json={"LoginName": "b", "DirectoryObjectId": OTHER_GUID})
    patched = api.patch(f"/odata/v2/Users({second['Id']})", json={"DirectoryObjectId": GUID})
    assert_conflict(patched, "DirectoryObjectId", first["Id"])
    assert api.ok("GET", "/odata/v2/Users", user=GUID, params={"$filter": f"Id eq {first['Id']}"})["value"]


def test_patch_follows_the_rules_of_post(api: Api) -> None:
    """Renaming a user into another's login or e-mail is a 409, into an invisible character a 400; a
    user may change the case or form of their own name."""
    jose = api.ok("POST", "/odata/v2/Users", json={"LoginName": JOSE_NFC, "Email": "jose@x.example"})
    ann = api.ok("POST", "/odata/v2/Users", json={"LoginName": "ann@x.example", "Email": "ann@x.example"})
    path = f"/odata/v2/Users({ann['Id']})"
    assert_conflict(api.patch(path, json={"LoginName": JOSE_NFD.upper()}), "LoginName", jose["Id"])
    assert_conflict(api.patch(path, json={"Email": "JOSE@x.example"}), "Email", jose["Id"])
    assert_refused(api.patch(path, json={"LoginName": "ann@x.example\u200b"}), "LoginName", "U+200B")
    assert_refused(api.patch(path, json={"Email": "\u2066ann@x.example"}), "Email", "U+2066")
    assert_refused(
        api.patch(path, json={"ManagerLoginName": "jos\u00e9\u200d@x.example"}), "ManagerLoginName", "U+200D"
    )
    again = api.ok("GET", path)
    assert (again["LoginName"], again["Email"]) == ("ann@x.example", "ann@x.example")
    renamed = api.ok("PATCH", f"/odata/v2/Users({jose['Id']})", json={"LoginName": JOSE_NFD.upper()})
    assert renamed["LoginName"] == unicodedata.normalize("NFC", JOSE_NFD.upper())
    api.ok("PATCH", path, json={"Email": None})
    api.ok("PATCH", f"/odata/v2/Users({jose['Id']})", json={"Email": "ANN@x.example"})


def test_custom_field_titles_name_one_field_by_the_same_key(api: Api) -> None:
    """`Straße` and `STRASSE` are one custom field: the same FieldId, and not twice in one user."""
    a = api.ok(
        "POST",
        "/odata/v2/Users",
        json={"LoginName": "a", "UserFieldValues": [{"FieldTitle": "Stra\u00dfe", "Value": "1"}]},
    )
    b = api.ok(
        "POST", "/odata/v2/Users", json={"LoginName": "b", "UserFieldValues": [{"FieldTitle": "STRASSE", "Value": "2"}]}
    )
    assert a["UserFieldValues"][0]["FieldId"] == b["UserFieldValues"][0]["FieldId"]
    assert users.field_id("Employee number") == users.field_id("EMPLOYEE NUMBER")  # ASCII ids are unchanged
    twice = create(
        api,
        LoginName="c",
        UserFieldValues=[{"FieldTitle": "Stra\u00dfe", "Value": "1"}, {"FieldTitle": "strasse", "Value": "2"}],
    )
    assert twice.status_code == 400 and error(twice)["target"] == "UserFieldValues[1].FieldTitle"
    hidden = create(api, LoginName="c", UserFieldValues=[{"FieldTitle": "Code\u200b", "Value": "1"}])
    assert_refused(hidden, "UserFieldValues[0].FieldTitle", "U+200B")


def test_tags_and_categories_are_unique_per_catalog_by_the_same_key(api: Api) -> None:
    """`Straße`/`STRASSE` cannot be two tags (or categories) of one catalog, `Sales\\u200b` is refused,
    and a course naming a tag in another case or form gets the existing one."""
    world = build_world(api)
    catalog_id = world.catalog["Id"]
    for kind in ("CourseTags", "CourseCategories"):
        first = api.ok("POST", f"/odata/v2/{kind}", json={"CourseCatalogId": catalog_id, "Name": "Stra\u00dfe"})
        again = api.post(f"/odata/v2/{kind}", json={"CourseCatalogId": catalog_id, "Name": "STRASSE"})
        assert_conflict(again, "Name", first["Id"])
        api.ok("POST", f"/odata/v2/{kind}", json={"CourseCatalogId": catalog_id, "Name": "Sales"})
        hidden = api.post(f"/odata/v2/{kind}", json={"CourseCatalogId": catalog_id, "Name": "Sales\u200b"})
        assert_refused(hidden, "Name", "U+200B")
        decomposed = api.post(
            f"/odata/v2/{kind}", json={"CourseCatalogId": catalog_id, "Name": unicodedata.normalize("NFD", "Caf\u00e9")}
        )
        assert decomposed.status_code == 200
        composed = api.post(f"/odata/v2/{kind}", json={"CourseCatalogId": catalog_id, "Name": "CAF\u00c9"})
        assert_conflict(composed, "Name", decomposed.json()["Id"])
    tags = {t["Name"]: t["Id"] for t in api.ok("GET", "/odata/v2/CourseTags", params={"$top": "50"})["value"]}
    course_id = world.course["Id"]
    api.ok(
        "PATCH",
        f"/odata/v2/Courses({course_id})",
        json={"Tags": [{"TagName": "strasse"}], "Categories": [{"Name": "CAF\u00c9"}]},
    )
    linked = api.db.conn.execute("SELECT tag_id FROM course_tags WHERE course_id = ?", (course_id,)).fetchall()
    assert [r[0] for r in linked] == [tags["Stra\u00dfe"]]
    assert api.db.conn.execute("SELECT count(*) FROM tags").fetchone()[0] == len(tags)
    hidden = api.patch(f"/odata/v2/Courses({course_id})", json={"Tags": [{"TagName": "Sales\u2060"}]})
    assert_refused(hidden, "Tags[0].TagName", "U+2060")


def test_course_urls_are_unique_by_the_same_key(api: Api) -> None:
    """An absolute course Url in another Unicode form or case is the Url already taken; one hiding an
    invisible character is refused."""
    world = build_world(api)
    body = {
        "CourseCatalogId": world.catalog["Id"],
        "CourseType": "ELearning",
        "Title": "Caf\u00e9",
        "Description": "d",
        "Culture": "en-US",
        "UICulture": "en-US",
    }
    url = "https://contoso.sharepoint.com/sites/caf\u00e9"
    first = api.ok("POST", "/odata/v2/Courses", json={**body, "Url": url})
    queued = api.post("/odata/v2/Courses", json={**body, "Url": unicodedata.normalize("NFD", url.upper())})
    assert queued.status_code == 409 and error(queued)["target"] == "Url"
    api.provision()
    reserved = api.post("/odata/v2/Courses", json={**body, "Url": unicodedata.normalize("NFD", url)})
    assert reserved.status_code == 409 and error(reserved)["target"] == "Url"
    assert_refused(api.post("/odata/v2/Courses", json={**body, "Url": url + "\u200b"}), "Url", "U+200B")
    api.ok("DELETE", f"/odata/v2/Courses({first['Id']})", status=204)
    api.ok("POST", "/odata/v2/Courses", json={**body, "Url": url.upper()})


def test_names_stored_before_the_wider_refusal_keep_their_keys(api: Api) -> None:
    """Refusing more characters in new names re-keys nothing: a tag and a login stored earlier with a
    variation selector keep the key migration 0006 gave them, the tag can still be linked by Id, and the
    user can still be edited and renamed to a clean name."""
    world = build_world(api)
    catalog_id = world.catalog["Id"]
    t0 = "2030-01-01T00:00:00.000Z"
    with api.db.write() as conn:
        conn.execute(
            "INSERT INTO tags (id, catalog_id, name, name_key) VALUES ('t-vs', ?, ?, ?)",
            (catalog_id, "Safety\ufe0f", names.stored_key("Safety\ufe0f")),
        )
        conn.execute(
            "INSERT INTO users (id, login_name, login_key, field_values, created_at, modified_at)"
            " VALUES ('u-vs', ?, ?, '[]', ?, ?)",
            ("bob\ufe0f@x.example", names.stored_key("bob\ufe0f@x.example"), t0, t0),
        )
    assert names.key("Safety\ufe0f") == "safety\ufe0f"  # the key keeps what the name holds, as before
    api.ok("PATCH", f"/odata/v2/Courses({world.course['Id']})", json={"Tags": [{"Id": "t-vs"}]})
    linked = api.db.conn.execute("SELECT tag_id FROM course_tags WHERE course_id = ?", (world.course["Id"],))
    assert [r[0] for r in linked] == ["t-vs"]
    api.ok("PATCH", "/odata/v2/Users(u-vs)", json={"Title": "Bob"})
    assert api.db.conn.execute("SELECT login_key FROM users WHERE id = 'u-vs'").fetchone()[0] == "bob\ufe0f@x.example"
    renamed = api.ok("PATCH", "/odata/v2/Users(u-vs)", json={"LoginName": "robert@x.example"})
    assert renamed["LoginName"] == "robert@x.example"


# --- indexes ---------------------------------------------------------------------------------------


def plan(db: Database, sql: str, params: tuple[Any, ...]) -> str:
    return " | ".join(str(r["detail"]) for r in db.conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_name_checks_and_lookups_use_indexes(db: Database) -> None:
    """At 100,000 users (bench/data_scale.py), creating a user and resolving a login name stay index
    lookups, never scans; so do the tag, category and course Url checks."""
    queries = [
        *lookups.INDEXED_QUERIES,
        *users.INDEXED_QUERIES,
        *catalogs.BY_NAME.values(),
        courses.URL_RESERVED,
        courses.URL_REQUESTED,
    ]
    for sql in queries:
        detail = plan(db, sql, tuple("x" for _ in range(sql.count("?"))))
        assert "SCAN" not in detail, (sql, detail)
        assert "USING INDEX" in detail or "USING COVERING INDEX" in detail or "PRIMARY KEY" in detail, (sql, detail)


# --- upgrading a database that holds names which collide under the new key --------------------------


def test_upgrade_keeps_colliding_rows_and_refuses_to_guess_between_them(tmp_path: Path) -> None:
    """A database from before 0006 may hold live users, e-mails, directory ids and tags that are now one
    name: the migration keeps every row as it was, then nobody new may take such a name, a lookup by it
    is a 409 naming both holders, and renaming one of them settles it."""
    db = Database(tmp_path / "coursewire.db")
    migrations.apply(db.utils(), stop_before="0006_name_keys")
    t0 = "2030-01-01T00:00:00.000Z"
    fields = json.dumps([{"FieldId": "old", "FieldTitle": "Stra\u00dfe", "Value": "1"}])
    legacy = [  # rows as the code before 0006 wrote them
        ("u-nfc", JOSE_NFC, "same@x.example", GUID, fields),
        ("u-nfd", JOSE_NFD, "SAME@x.example", GUID, "[]"),
        ("u-zw", "ann@x.example\u200b", "", None, "[]"),
        ("u-ann", "ann@x.example", "", None, "[]"),
    ]
    with db.write() as conn:
        for uid, login, email, oid, values in legacy:
            conn.execute(
                "INSERT INTO users (id, login_name, email, directory_object_id, field_values, created_at,"
                " modified_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (uid, login, email, oid, values, t0, t0),
            )
        conn.execute("INSERT INTO catalogs (id, title, url, created_at) VALUES ('cat', 'C', 'http://x/c', ?)", (t0,))
        conn.execute("INSERT INTO tags (id, catalog_id, name) VALUES ('t-nfc', 'cat', ?)", ("Caf\u00e9",))
        conn.execute("INSERT INTO tags (id, catalog_id, name) VALUES ('t-nfd', 'cat', ?)", ("Cafe\u0301",))
    before = [tuple(r) for r in db.conn.execute("SELECT id, login_name, email, directory_object_id FROM users")]

    assert db.migrate()[0] == "0006_name_keys"

    after = [tuple(r) for r in db.conn.execute("SELECT id, login_name, email, directory_object_id FROM users")]
    assert after == before
    keys = dict(db.conn.execute("SELECT id, login_key FROM users").fetchall())
    assert keys["u-nfc"] == keys["u-nfd"] == JOSE_NFC
    assert keys["u-zw"] == "ann@x.example\u200b"  # an old name is kept and still found by what it is
    assert json.loads(db.conn.execute("SELECT field_values FROM users WHERE id = 'u-nfc'").fetchone()[0])[0][
        "FieldId"
    ] == users.field_id("STRASSE")

    with pytest.raises(Conflict) as ambiguous, db.read() as conn:
        lookups.user_by_login(conn, JOSE_NFC.upper(), "ManagerLoginName")
    assert "u-nfc" in ambiguous.value.message and "u-nfd" in ambiguous.value.message
    assert ambiguous.value.target == "ManagerLoginName"
    with pytest.raises(Invalid) as two_identities, db.read() as conn:
        lookups.user_by_reference(conn, GUID.upper())
    assert two_identities.value.target == "LMS365-User-Id"
    with db.read() as conn:
        assert lookups.user_by_login(conn, "ANN@x.example", "userLoginName")["id"] == "u-ann"
    with pytest.raises(Conflict):
        users.create(db, CLI, {"LoginName": JOSE_NFD.upper()})
    with pytest.raises(Conflict) as email_taken:
        users.create(db, CLI, {"LoginName": "new", "Email": "same@X.example"})
    assert email_taken.value.target == "Email"

    # Unrelated changes to a colliding user still go through; renaming one of the two settles it.
    users.update(db, CLI, "u-nfd", {"Title": "Jos\u00e9 (Mac)", "LoginName": JOSE_NFD})
    users.update(db, CLI, "u-nfd", {"LoginName": "jose.mac@x.example", "Email": "mac@x.example"})
    with db.read() as conn:
        assert lookups.user_by_login(conn, JOSE_NFD.upper(), "ManagerLoginName")["id"] == "u-nfc"

    with pytest.raises(Conflict) as tag, db.write() as conn:
        catalogs.resolve_tags(conn, CLI, db.clock(), "cat", [{"TagName": "CAF\u00c9"}])
    assert "t-nfc" in tag.value.message and "t-nfd" in tag.value.message
    db.close()
