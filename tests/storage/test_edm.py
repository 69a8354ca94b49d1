"""storage.odata.edm derives the $metadata description from the entity definitions by its stated rules."""

from __future__ import annotations

import pytest
from csdl_support import parse, schema_errors

from storage.odata import MODEL, csdl
from storage.odata.edm import describe
from storage.odata.model import (
    BOOLEAN,
    GUID,
    STRING,
    ComplexType,
    EntitySet,
    Link,
    Model,
    Navigation,
    Property,
)

DUE = ComplexType("Due", (Property("Note", STRING, nullable=True), Property("CourseId", GUID)))
ROOM = ComplexType("Room", (Property("Title", STRING),))


def definitions(*, course_extra: tuple[Property, ...] = (), due: ComplexType = DUE) -> Model:
    course = EntitySet(
        "Courses",
        "Course",
        ("Id",),
        (
            Property("Id", GUID),
            Property("Room", ROOM.name, nullable=True),
            Property("Due", due.name, expand_only=True, context_link=True),
            Property("Progress", STRING, expand_only=True, context_link=True),
            *course_extra,
        ),
        (Navigation("Tags", "Tags", True, Link("through")), Navigation("Catalog", "Catalogs", False, Link("column"))),
    )
    tag = EntitySet("Tags", "Tag", ("Id",), (Property("Id", GUID), Property("Hidden", BOOLEAN)), listed=False)
    lesson = EntitySet("Lessons", "Lesson", ("Id",), (Property("Id", GUID),), parent="course_id")
    catalog = EntitySet("Catalogs", "Catalog", ("Id",), (Property("Id", GUID),))
    return Model((course, tag, catalog, lesson), (due, ROOM))


def test_computed_objects_become_contained_navigations_keyed_by_their_first_required_id() -> None:
    """An expand_only object is a contained navigation to an entity type keyed by its first required Guid or
    String; an expand_only plain value stays a property; navigations are bound to their target sets."""
    model = describe(definitions())
    course = model.entity_type("Course")
    assert [p.name for p in course.properties] == ["Id", "Room", "Progress"]
    assert course.navigation("Due") == csdl.NavigationProperty("Due", "Due", contained=True)
    assert course.navigation("Catalog") == csdl.NavigationProperty("Catalog", "Catalog", nullable=False)
    assert course.navigation("Tags") == csdl.NavigationProperty("Tags", "Tag", collection=True, nullable=False)
    assert model.entity_type("Due").key == ("CourseId",)
    assert [c.name for c in model.complex_types] == ["Room"]
    assert model.entity_set("Courses").bindings == {"Tags": "Tags", "Catalog": "Catalogs"}
    assert not model.entity_set("Tags").listed
    assert not model.entity_set("Lessons").listed  # listed only under its parent: Courses(<id>)/Lessons
    assert model.entity_set("Catalogs").listed


def test_a_computed_object_without_a_key_is_refused() -> None:
    """Without a required Guid or String member there is nothing to key the contained entity by."""
    keyless = ComplexType("Due", (Property("Note", STRING, nullable=True), Property("Days", "Edm.Int32")))
    with pytest.raises(csdl.ModelError, match="Due is computed by \\$expand but has no non-nullable"):
        describe(definitions(due=keyless))


def test_a_type_computed_by_expand_and_also_a_plain_value_is_refused() -> None:
    """A complex type cannot be both a contained entity and a plain complex value."""
    with pytest.raises(csdl.ModelError, match="Courses.Other: Due is a value \\$expand computes elsewhere"):
        describe(definitions(course_extra=(Property("Other", DUE.name),)))


def test_every_definition_is_in_the_description_of_the_model() -> None:
    """Each entity set, key, property and navigation of storage.odata.MODEL is described, with its type."""
    model = describe(MODEL)
    doc = parse(csdl.metadata_xml(model))
    assert schema_errors(csdl.metadata_xml(model)) == []
    for es in MODEL.entity_sets:
        declared = doc.type_of_set(es.name)
        assert declared.key == es.key
        assert doc.entity_sets[es.name][2] == (es.listed and es.parent is None), es.name
        for p in es.properties:
            if p.name in declared.properties:
                name = p.type if p.type.startswith("Edm.") else f"Coursewire.{p.type}"
                assert declared.properties[p.name] == (
                    f"Collection({name})" if p.collection else name,
                    p.nullable or p.expand_only,
                )
            else:
                assert p.expand_only and declared.navigations[p.name] == (
                    f"Collection(Coursewire.{p.type})" if p.collection else f"Coursewire.{p.type}",
                    True,
                )
        for n in es.navigations:
            target = f"Coursewire.{MODEL.entity_set(n.target).type_name}"
            assert declared.navigations[n.name] == (f"Collection({target})" if n.many else target, False)
            assert doc.entity_sets[es.name][1][n.name] == n.target
