"""Courses through the served document: create and provision, details, lists, update, publish, delete."""

from __future__ import annotations

import pytest
from support import Api, build_world, error


def course_body(catalog_id: str, **extra):
    return {
        "CourseCatalogId": catalog_id,
        "CourseType": "ELearning",
        "Title": "Security",
        "Description": "Basics",
        "Culture": "en-US",
        "UICulture": "en-US",
        "Url": "security",
        **extra,
    }


def catalog(api: Api) -> dict:
    return api.ok("POST", "/odata/v2/CourseCatalogs", json={"Title": "Main"})


def progress(api: Api, course_id: str) -> str:
    rows = api.ok("GET", "/odata/v2/Courses/IncludeNotCreated", params={"$filter": f"Id eq '{course_id}'"})["value"]
    return rows[0]["ProvisioningProgress"]


def test_create_course_answers_at_once_and_provisions_in_the_background(api: Api) -> None:
    """CreateCourse returns Queued; the provisioner reserves the Url and creates the folder, then publishes."""
    cat = catalog(api)
    course = api.ok("POST", "/odata/v2/Courses", json=course_body(cat["Id"], Categories=[{"Name": "IT"}]))
    assert course["IsPublished"] is False
    assert course["ProvisioningProgress"] == "Queued"  # the answer itself says it, as the operation promises
    assert progress(api, course["Id"]) == "Queued"
    api.provision()
    assert progress(api, course["Id"]) == "Created"
    details = api.ok("GET", f"/odata/v2/Courses({course['Id']})")
    assert details["IsPublished"] is True
    assert details["SharepointWeb"]["Url"].endswith("/catalogs/main/security")
    assert [c["Name"] for c in details["Categories"]] == ["IT"]
    assert (api.settings.files_dir / "courses" / course["Id"]).is_dir()


def test_default_expand_of_get_course_info_matches_the_reference(api: Api) -> None:
    """Without $expand, GetCourseInfo expands what the certified connector's default asks for."""
    world = build_world(api)
    details = api.ok("GET", f"/odata/v2/Courses({world.course['Id']})")
    for nav in (
        "DueDate",
        "Publishing",
        "CertificateExpiry",
        "SharepointWeb",
        "Categories",
        "Tags",
        "CourseSessions",
        "ProvisioningProgress",
        "Trainers",
    ):
        assert nav in details, nav
    assert set(details["SharepointWeb"]) == {"Url"}  # SharepointWeb($select=Url)
    assert details["DueDate@odata.context"].endswith("/DueDate/$entity")
    assert [s["Id"] for s in details["CourseSessions"]] == [world.session["Id"]]


def test_url_conflicts_are_409_unless_auto_resolved(api: Api) -> None:
    """A taken Url is 409 naming Url; with AutoResolveUrlConflict the course gets a suffixed Url."""
    cat = catalog(api)
    api.ok("POST", "/odata/v2/Courses", json=course_body(cat["Id"]))
    api.provision()
    clash = api.post("/odata/v2/Courses", json=course_body(cat["Id"]))
    assert clash.status_code == 409
    assert error(clash)["target"] == "Url"
    second = api.ok("POST", "/odata/v2/Courses", json=course_body(cat["Id"], AutoResolveUrlConflict=True))
    api.provision()
    web = api.ok("GET", f"/odata/v2/Courses({second['Id']})", params={"$expand": "SharepointWeb"})["SharepointWeb"]
    assert web["Url"].endswith("/security-2")


def test_update_publish_unpublish_and_delete(api: Api) -> None:
    """PATCH changes fields; Unpublish/Publish flip IsPublished; DELETE hides the course and cancels learners."""
    world = build_world(api)
    cid = world.course["Id"]
    assert api.ok("PATCH", f"/odata/v2/Courses({cid})", json={"Title": "First aid 2"})["Title"] == "First aid 2"
    api.ok("POST", f"/odata/v2/Courses({cid})/Unpublish", 204)
    assert api.ok("GET", f"/odata/v2/Courses({cid})")["IsPublished"] is False
    api.ok("POST", f"/odata/v2/Courses({cid})/Publish", 204)
    enrollment = api.ok("POST", f"/odata/v2/Courses({cid})/Enroll", json={"userLoginName": "ann@x.example"})
    api.ok("DELETE", f"/odata/v2/Courses({cid})", 204)
    assert api.get(f"/odata/v2/Courses({cid})").status_code == 404
    cancelled = api.ok("GET", f"/odata/v2/Enrollments({enrollment['Id']})")
    assert (cancelled["EnrollmentStatusText"], cancelled["CancellationReason"]) == ("Cancelled", "Course deleted")
    assert api.ok("GET", "/odata/v2/Courses")["value"] == []


def test_course_catalog_expands_its_courses(api: Api) -> None:
    """GetCoursesFromCatalog lists the catalog's courses with SharepointWeb by default."""
    cat = catalog(api)
    api.ok("POST", "/odata/v2/Courses", json=course_body(cat["Id"]))
    body = api.ok("GET", f"/odata/v2/CourseCatalogs({cat['Id']})")
    assert [c["Title"] for c in body["Courses"]] == ["Security"]
    assert "SharepointWeb" in body["Courses"][0]
    listed = api.ok("GET", "/odata/v2/CourseCatalogs")["value"]
    assert [c["Id"] for c in listed] == [cat["Id"]]


def test_nested_expand_filters_orders_and_limits_each_parent(api: Api) -> None:
    """`Courses($filter=...;$orderby=...;$top=...;$select=...)` applies inside the catalog's courses."""
    cat = catalog(api)
    for title in ("Security", "Safety", "Sales", "Ethics"):
        api.ok("POST", "/odata/v2/Courses", json=course_body(cat["Id"], Title=title, Url=title.lower()))
    expand = "Courses($filter=startswith(Title,'S');$orderby=Title desc;$top=2;$select=Title)"
    body = api.ok("GET", f"/odata/v2/CourseCatalogs({cat['Id']})", params={"$expand": expand})
    assert body["Courses"] == [{"Title": "Security"}, {"Title": "Sales"}]
    deeper = api.ok("GET", "/odata/v2/CourseCatalogs", params={"$expand": "Courses($expand=Tags;$select=Id,Tags)"})
    assert all(set(c) == {"Id", "Tags"} for c in deeper["value"][0]["Courses"])


@pytest.mark.parametrize(
    ("expand", "says"),
    [
        ("Courses($expand=Title)", "no navigation 'Title'"),
        ("Courses($expand=Tags($select=Nope))", "unknown property 'Nope'"),
        ("Courses($filter=Nope eq 1)", "Nope"),
        ("Courses($expand=DueDate($top=1))", "only $select applies"),
        ("Courses($expand=CourseCatalog($top=1))", "is one entity"),
    ],
)
def test_bad_nested_expand_is_400_naming_expand(api: Api, expand: str, says: str) -> None:
    """Every level of a nested $expand is checked against the entity sets, not only the first."""
    cat = catalog(api)
    response = api.get(f"/odata/v2/CourseCatalogs({cat['Id']})", params={"$expand": expand})
    assert response.status_code == 400, response.text
    assert error(response)["target"] == "$expand"
    assert says in error(response)["message"]


def test_categories_and_tags(api: Api) -> None:
    """Categories (with parents) and tags are created per catalog and listed with $filter."""
    cat = catalog(api)
    parent = api.ok("POST", "/odata/v2/CourseCategories", json={"Name": "Safety", "CourseCatalogId": cat["Id"]})
    child = api.ok(
        "POST",
        "/odata/v2/CourseCategories",
        json={"Name": "Fire", "CourseCatalogId": cat["Id"], "ParentCategoryId": parent["Id"]},
    )
    assert child["ParentCategoryId"] == parent["Id"]
    dup = api.post("/odata/v2/CourseCategories", json={"Name": "safety", "CourseCatalogId": cat["Id"]})
    assert dup.status_code == 409
    api.ok("POST", "/odata/v2/CourseTags", json={"Name": "mandatory", "CourseCatalogId": cat["Id"]})
    found = api.ok("GET", "/odata/v2/CourseCategories", params={"$filter": "startswith(Name,'Fi')"})["value"]
    assert [c["Name"] for c in found] == ["Fire"]
    assert [t["Name"] for t in api.ok("GET", "/odata/v2/CourseTags")["value"]] == ["mandatory"]


def test_course_sessions_list_update_and_delete(api: Api) -> None:
    """Sessions are listed per course, rescheduled by PATCH (wall clock in their TimeZone) and deleted."""
    world = build_world(api)
    sid = world.session["Id"]
    listed = api.ok("GET", f"/odata/v2/Courses({world.course['Id']})/CourseSessions")["value"]
    assert [s["Id"] for s in listed] == [sid]
    moved = api.ok(
        "PATCH",
        f"/odata/v2/CourseSessions({sid})",
        json={
            "StartDate": "2030-07-01T09:00:00",
            "EndDate": "2030-07-01T12:00:00",
            "TimeZone": "W. Europe Standard Time",
        },
    )
    assert (moved["StartDate"], moved["TimeZone"]) == ("2030-07-01T07:00:00.000Z", "W. Europe Standard Time")
    api.ok("DELETE", f"/odata/v2/CourseSessions({sid})", 204)
    assert api.get(f"/odata/v2/CourseSessions({sid})").status_code == 404
