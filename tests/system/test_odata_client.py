"""An OData client that reads `$metadata` (python-odata) and a feed reader like Power Query's work against a real
`coursewire serve` with Basic auth: entity sets listed, queried with $filter, $top, $orderby, $expand, paged."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
import requests
from csdl_support import Document, element_type, entity_fits, parse, resolve_context, schema_errors
from odata import ODataService
from requests.auth import HTTPBasicAuth
from serving import Server, start

pytestmark = pytest.mark.system

PAGE_SIZE = 2  # small pages, so every list of the demo data takes several @odata.nextLink hops


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`coursewire serve --demo` (one process) with pages of two rows."""
    data = tmp_path_factory.mktemp("odata-client") / "data"
    yield from start(data, "--workers", "1", "--demo", env={"COURSEWIRE_PAGE_SIZE": str(PAGE_SIZE)})


@pytest.fixture(scope="module")
def service(demo: Server) -> ODataService:
    """python-odata's service, its entity classes built from the server's $metadata."""
    username, key = demo.session.auth  # type: ignore[misc]
    return ODataService(
        f"{demo.base}/odata/v2/", auth=HTTPBasicAuth(username, key), reflect_entities=True, quiet_progress=True
    )


@pytest.fixture(scope="module")
def doc(demo: Server) -> Document:
    response = demo.session.get(f"{demo.base}/odata/v2/$metadata", timeout=30)
    assert response.status_code == 200
    return parse(response.content)


def test_the_client_reflects_every_entity_set(demo: Server, service: ODataService, doc: Document) -> None:
    """python-odata finds every entity set of $metadata, including those the service document lists."""
    listed = {item["name"] for item in demo.call("GET", "/odata/v2/")["value"]}
    assert listed == {
        "Courses",
        "CourseCatalogs",
        "CourseCategories",
        "CourseTags",
        "Users",
        "Enrollments",
        "CalendarConnections",
    }
    assert set(service.entities) == set(doc.entity_sets)
    assert listed <= set(service.entities)
    assert schema_errors(demo.session.get(f"{demo.base}/odata/v2/$metadata", timeout=30).content) == []


def test_metadata_needs_basic_auth(demo: Server) -> None:
    """Without credentials the documents answer 401 with the Basic challenge Power Query answers to."""
    for path in ("/odata/v2/$metadata", "/odata/v2/"):
        response = requests.get(demo.base + path, timeout=30)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="coursewire"'


def test_the_client_pages_through_whole_sets(demo: Server, service: ODataService) -> None:
    """Iterating a query follows @odata.nextLink to the end: the client gets every row, each once."""
    for name in ("Users", "Courses", "Enrollments"):
        entity = service.entities[name]
        rows = service.query(entity).all()
        expected = demo.call("GET", f"/odata/v2/{name}", params={"$count": "true", "$top": "0"})["@odata.count"]
        assert expected > PAGE_SIZE, name  # more than one page, or the test shows nothing
        assert len(rows) == expected, name
        assert len({row.Id for row in rows}) == expected, name


def test_the_client_filters_orders_and_limits(service: ODataService) -> None:
    """$filter on strings, booleans and GUIDs, $orderby and $top, as python-odata writes them, answer typed rows."""
    users = service.entities["Users"]
    sales = service.query(users).filter(users.Department == "Sales").order_by(users.LoginName.desc()).all()
    assert [u.LoginName for u in sales] == ["raj.learner@contoso.example", "pia.learner@contoso.example"]
    assert all(isinstance(u.CreatedAt, datetime.datetime) and u.IsDeleted is False for u in sales)
    first = service.query(users).order_by(users.LoginName.asc()).limit(PAGE_SIZE).all()
    assert [u.LoginName for u in first] == ["admin@contoso.example", "ivan.instructor@contoso.example"]

    courses = service.entities["Courses"]
    all_courses = service.query(courses).all()
    one = all_courses[0]
    by_key = service.query(courses).get(one.Id)  # $filter=Id eq <guid>, the GUID unquoted
    assert (by_key.Id, by_key.Title) == (one.Id, one.Title)
    elearning = service.query(courses).filter(courses.CourseType == "ELearning").all()
    assert elearning
    assert {c.Id for c in elearning} < {c.Id for c in all_courses}

    enrollments = service.entities["Enrollments"]
    rows = service.query(enrollments).filter(enrollments.CourseId == one.Id).all()
    assert all(e.CourseId == one.Id for e in rows)


def test_the_client_expands_bound_and_contained_navigations(service: ODataService) -> None:
    """$expand of a bound navigation (Tags) and a contained one (DueDate) answers rows the client reads."""
    courses = service.entities["Courses"]
    rows = service.query(courses).expand(courses.Tags, courses.DueDate).limit(PAGE_SIZE).all()
    assert len(rows) == PAGE_SIZE
    for row in rows:
        # Expanded rows become the client's entity objects, read from what the request brought.
        assert row.DueDate.CourseId == row.Id
        assert isinstance(row.DueDate.IsEnabled, bool)
        assert all(tag.CourseCatalogId == row.CourseCatalogId for tag in row.Tags)
    assert any(row.Tags for row in service.query(courses).expand(courses.Tags).all())


def test_a_feed_reader_reads_every_listed_set(demo: Server, doc: Document) -> None:
    """As Power Query's OData.Feed does: the service document, then each set page by page; every entity fits
    its type in $metadata and every @odata.context resolves against it."""
    metadata_url = f"{demo.base}/odata/v2/$metadata"
    faults: list[str] = []
    for item in demo.call("GET", "/odata/v2/")["value"]:
        url: str | None = f"{demo.base}/odata/v2/{item['url']}"
        pages = 0
        while url:
            response = demo.session.get(url, timeout=30)
            assert response.status_code == 200, response.text
            page = response.json()
            declared = resolve_context(doc, page["@odata.context"], metadata_url)
            assert declared == f"Collection({doc.entity_sets[item['name']][0]})"
            structured = doc.types[element_type(declared)[0]]
            faults += [f"{item['name']}: {why}" for e in page["value"] if (why := entity_fits(doc, structured, e))]
            url, pages = page.get("@odata.nextLink"), pages + 1
        assert pages >= 1
    assert faults == [], "\n".join(faults)
