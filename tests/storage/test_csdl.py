"""storage.odata.csdl writes a neutral model description as CSDL XML that the OASIS schema and OData clients accept."""

from __future__ import annotations

import dataclasses

import pytest
import rich.console
from csdl_support import parse, resolve_context, schema_errors, xml
from odata.metadata import MetaData

from storage.odata.csdl import (
    ComplexType,
    EntitySet,
    EntityType,
    Model,
    ModelError,
    NavigationProperty,
    Property,
    metadata_xml,
    service_document,
)

META = "http://lms.example/odata/v2/$metadata"


def small_model() -> Model:
    """Catalogs of courses; a course has a Room value, contained due-date settings, tags and a parent catalog."""
    return Model(
        namespace="Shop",
        container="Container",
        complex_types=(
            ComplexType("Room", (Property("Title", "Edm.String"), Property("Source", "Edm.String", nullable=False))),
        ),
        entity_types=(
            EntityType(
                "Catalog",
                ("Id",),
                (Property("Id", "Edm.Guid", nullable=False), Property("Title", "Edm.String", nullable=False)),
                (NavigationProperty("Courses", "Course", collection=True),),
            ),
            EntityType(
                "Course",
                ("Id",),
                (
                    Property("Id", "Edm.Guid", nullable=False),
                    Property("CEU", "Edm.Int32", nullable=False),
                    Property("DecimalCEU", "Edm.Double", nullable=False),
                    Property("CreatedAt", "Edm.DateTimeOffset", nullable=False),
                    Property("LongDescription", "Edm.String"),
                    Property("Room", "Room"),
                    Property("Roles", "Edm.String", collection=True),
                    Property("Rooms", "Room", collection=True),
                ),
                (
                    NavigationProperty("Catalog", "Catalog", nullable=False),
                    NavigationProperty("Tags", "Tag", collection=True),
                    NavigationProperty("DueDate", "DueDate", contained=True),
                ),
            ),
            EntityType("Tag", ("Id",), (Property("Id", "Edm.Guid", nullable=False), Property("Name", "Edm.String"))),
            EntityType("DueDate", ("CourseId",), (Property("CourseId", "Edm.Guid", nullable=False),)),
        ),
        entity_sets=(
            EntitySet("Catalogs", "Catalog", {"Courses": "Courses"}),
            EntitySet("Courses", "Course", {"Catalog": "Catalogs", "Tags": "Tags"}),
            EntitySet("Tags", "Tag", listed=False),
        ),
    )


def test_the_document_is_valid_against_the_oasis_schema() -> None:
    """The written document passes the OASIS EDMX/EDM XML schemas."""
    assert schema_errors(metadata_xml(small_model())) == []


def test_the_schema_check_can_fail() -> None:
    """The OASIS schema check rejects a document with a misplaced element, so the test above means something."""
    broken = metadata_xml(small_model()).replace(b"<Key>", b"<Keys>").replace(b"</Key>", b"</Keys>")
    assert schema_errors(broken)


def test_types_keys_and_nullability_are_as_described() -> None:
    """Keys, EDM types, Nullable, collections, containment, bindings and the service-document flag all show."""
    doc = parse(metadata_xml(small_model()))
    course = doc.types["Shop.Course"]
    assert course.key == ("Id",)
    assert course.properties["Id"] == ("Edm.Guid", False)
    assert course.properties["LongDescription"] == ("Edm.String", True)
    assert course.properties["Room"] == ("Shop.Room", True)
    # Items of a collection are never null; the attribute speaks of them.
    assert course.properties["Roles"] == ("Collection(Edm.String)", False)
    assert course.properties["Rooms"] == ("Collection(Shop.Room)", False)
    assert course.navigations == {
        "Catalog": ("Shop.Catalog", False),
        "Tags": ("Collection(Shop.Tag)", False),
        "DueDate": ("Shop.DueDate", True),
    }
    assert doc.types["Shop.Room"].properties["Source"] == ("Edm.String", False)
    assert doc.entity_sets["Courses"] == ("Shop.Course", {"Catalog": "Catalogs", "Tags": "Tags"}, True)
    assert doc.entity_sets["Tags"] == ("Shop.Tag", {}, False)


def test_nullable_is_never_written_on_collection_navigations() -> None:
    """CSDL forbids Nullable on collection-valued navigations; a single-valued one carries it when false."""
    root = xml(metadata_xml(small_model()))
    navs = {n.get("Name"): n.attrib for n in root.iter("{http://docs.oasis-open.org/odata/ns/edm}NavigationProperty")}
    assert "Nullable" not in navs["Tags"]
    assert navs["Catalog"]["Nullable"] == "false"
    assert "Nullable" not in navs["DueDate"]


def test_context_urls_resolve_against_the_document() -> None:
    """Sets, single entities, select lists with expansions and paths through bound or contained navigations resolve."""
    doc = parse(metadata_xml(small_model()))
    assert resolve_context(doc, f"{META}#Courses", META) == "Collection(Shop.Course)"
    assert resolve_context(doc, f"{META}#Courses/$entity", META) == "Shop.Course"
    assert resolve_context(doc, f"{META}#Courses(Id,Tags(Name),DueDate())", META) == "Collection(Shop.Course)"
    assert resolve_context(doc, f"{META}#Catalogs(1)/Courses(2)/DueDate/$entity", META) == "Shop.DueDate"
    assert resolve_context(doc, f"{META}#Courses(1)/Tags", META) == "Collection(Shop.Tag)"
    assert resolve_context(doc, f"{META}#Courses(1)/LongDescription", META) == "Edm.String"
    assert resolve_context(doc, f"{META}#Catalogs(1)/Courses(2)/Room", META) == "Shop.Room"
    for wrong in (
        "#Lessons",  # no such set
        "#Courses/DueDate/$entity",  # a path below a set starts at one entity
        "#Courses(1)/Tags/$entity",  # a collection
        "#Tags(1)/Catalog/$entity",  # no such navigation
        "#Courses(Id,Nope)",  # no such property
        "#Courses(1)/LongDescription/$entity",  # a property is no entity
        "#Catalogs(1)/Courses/Room",  # a property of a collection
    ):
        with pytest.raises(AssertionError):
            resolve_context(doc, META + wrong, META)


def test_an_odata_client_reflects_the_document() -> None:
    """python-odata, which builds its entity classes from $metadata, finds the sets, keys and navigations."""
    document = xml(metadata_xml(small_model()))
    reader = MetaData.__new__(MetaData)
    reader.console = rich.console.Console(quiet=True)
    reader.quiet = True
    schemas, sets, _, _ = reader.parse_document(document)
    assert sorted(sets) == ["Catalogs", "Courses", "Tags"]
    course = sets["Courses"]["schema"]
    assert [p["name"] for p in course["properties"] if p["is_primary_key"]] == ["Id"]
    assert {n["name"]: n["type"] for n in course["navigation_properties"]} == {
        "Catalog": "Shop.Catalog",
        "Tags": "Collection(Shop.Tag)",
        "DueDate": "Shop.DueDate",
    }


def test_the_service_document_lists_the_listed_sets() -> None:
    """The service document names the sets a client may read whole, relative to the service root."""
    assert service_document(small_model(), META) == {
        "@odata.context": META,
        "value": [
            {"name": "Catalogs", "kind": "EntitySet", "url": "Catalogs"},
            {"name": "Courses", "kind": "EntitySet", "url": "Courses"},
        ],
    }


def _with_course(model: Model, **changes: object) -> Model:
    types = tuple(dataclasses.replace(t, **changes) if t.name == "Course" else t for t in model.entity_types)
    return dataclasses.replace(model, entity_types=types)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: _with_course(m, key=("Nope",)), "key Nope is not one of its properties"),
        (lambda m: _with_course(m, key=("LongDescription",)), "key LongDescription must be a non-nullable"),
        (lambda m: _with_course(m, key=("CEU", "Roles")), "key Roles must be a non-nullable"),
        (lambda m: _with_course(m, key=()), "Course has no key"),
        (
            lambda m: _with_course(m, properties=(Property("Id", "Edm.Guid", nullable=False), Property("X", "Money"))),
            "Course.X: Money is neither an EDM primitive nor a complex type",
        ),
        (
            lambda m: _with_course(m, navigations=(NavigationProperty("Lessons", "Lesson", collection=True),)),
            "Course.Lessons: target Lesson is not an entity type",
        ),
        (
            lambda m: _with_course(m, navigations=(NavigationProperty("Id", "Tag"),)),
            "two of member of Course are called Id",
        ),
        (
            lambda m: dataclasses.replace(m, entity_sets=(*m.entity_sets, EntitySet("Tags", "Tag"))),
            "two of entity set are called Tags",
        ),
        (
            lambda m: dataclasses.replace(m, entity_sets=(EntitySet("Courses", "Course", {"Tags": "Catalogs"}),)),
            "binding Tags names no entity set Catalogs",
        ),
        (
            lambda m: dataclasses.replace(
                m, entity_sets=(EntitySet("Courses", "Course", {"Tags": "Courses"}), EntitySet("Tags", "Tag"))
            ),
            "binding Tags -> Courses holds Course, not Tag",
        ),
        (
            lambda m: dataclasses.replace(m, entity_sets=(EntitySet("Courses", "Course", {"DueDate": "Courses"}),)),
            "DueDate is not a navigation that needs a binding",
        ),
        (
            lambda m: dataclasses.replace(m, entity_sets=(EntitySet("Lessons", "Lesson"),)),
            "entity set Lessons: Lesson is not an entity type",
        ),
    ],
)
def test_an_inconsistent_model_is_refused(change, message: str) -> None:  # type: ignore[no-untyped-def]
    """A description with a missing, nullable or wrong key, an unknown type, target or binding is refused by name."""
    with pytest.raises(ModelError, match=message):
        metadata_xml(change(small_model()))
