"""The service's data model as OData CSDL: a neutral description, its checks, and the XML and service documents.

The description says what OData clients (Excel and Power BI "OData feed", python-odata, ODataLib) need to
read the entity sets: entity types with their key, properties (name, EDM type, nullable), navigation
properties (target type, collection or not, contained or not), complex types, and entity sets with their
navigation bindings. `metadata_xml` writes it as OData CSDL XML 4.0 (OASIS, "OData Common Schema Definition
Language (CSDL) XML Representation Version 4.01", which also defines 4.0 documents); `service_document`
writes the service document of OData JSON Format 4.0 section 5. Nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

EDMX = "http://docs.oasis-open.org/odata/ns/edmx"
EDM = "http://docs.oasis-open.org/odata/ns/edm"
VERSION = "4.0"

# The primitive types the API's values take (OData CSDL XML 4.01 section 4.4). Values follow OData JSON
# Format 4.0 section 7.1: strings for Edm.Guid, Edm.Date and Edm.DateTimeOffset, numbers for the rest.
PRIMITIVES = frozenset(
    {
        "Edm.Boolean",
        "Edm.Date",
        "Edm.DateTimeOffset",
        "Edm.Decimal",
        "Edm.Double",
        "Edm.Guid",
        "Edm.Int32",
        "Edm.Int64",
        "Edm.String",
    }
)
# Key properties must be of these (CSDL XML 4.01 section 8.2: a key property is a non-nullable primitive).
KEY_TYPES = frozenset({"Edm.Guid", "Edm.String", "Edm.Int32", "Edm.Int64"})


class ModelError(ValueError):
    """The description is inconsistent (an unknown type, a key that is not a property, ...); the message says where."""


@dataclass(frozen=True)
class Property:
    """A structural property: `type` is an EDM primitive (`Edm.String`) or the name of a complex type.

    `collection` makes it `Collection(type)`; its items are never null, and `nullable` then says whether
    the property may be absent. Properties a response leaves out when they have no value are nullable.
    """

    name: str
    type: str
    nullable: bool = True
    collection: bool = False


@dataclass(frozen=True)
class NavigationProperty:
    """A navigation to entity type `target` (one entity, or a collection when `collection`).

    `contained` entities exist only inside their parent (CSDL `ContainsTarget`): they belong to no entity
    set and their context URL is the parent's path plus the navigation (`Courses(1)/DueDate/$entity`).
    """

    name: str
    target: str
    collection: bool = False
    nullable: bool = True
    contained: bool = False


@dataclass(frozen=True)
class ComplexType:
    """A structured value without identity (a session's `Room`, a user's field values)."""

    name: str
    properties: tuple[Property, ...]


@dataclass(frozen=True)
class EntityType:
    """A type with a key; `key` names its key properties, in order."""

    name: str
    key: tuple[str, ...]
    properties: tuple[Property, ...]
    navigations: tuple[NavigationProperty, ...] = ()

    def property(self, name: str) -> Property | None:
        """The structural property called `name`, or None."""
        return next((p for p in self.properties if p.name == name), None)

    def navigation(self, name: str) -> NavigationProperty | None:
        """The navigation property called `name`, or None."""
        return next((n for n in self.navigations if n.name == name), None)


@dataclass(frozen=True)
class EntitySet:
    """An entity set of the container: `bindings` maps a navigation name to the entity set its entities are in.

    `listed` puts it in the service document: sets that cannot be read as a whole (`GET /odata/v2/<name>`
    answers 404) stay out, though context URLs and bindings still name them.
    """

    name: str
    entity_type: str
    bindings: Mapping[str, str] = field(default_factory=dict)
    listed: bool = True


@dataclass(frozen=True)
class Model:
    """Everything `$metadata` describes; `check()` raises ModelError unless it is consistent."""

    namespace: str
    container: str
    entity_types: tuple[EntityType, ...]
    complex_types: tuple[ComplexType, ...] = ()
    entity_sets: tuple[EntitySet, ...] = ()

    def entity_type(self, name: str) -> EntityType:
        """The entity type called `name` (simple or qualified); raises KeyError."""
        simple = self._simple(name)
        for entity_type in self.entity_types:
            if entity_type.name == simple:
                return entity_type
        raise KeyError(name)

    def complex_type(self, name: str) -> ComplexType:
        """The complex type called `name` (simple or qualified); raises KeyError."""
        simple = self._simple(name)
        for complex_type in self.complex_types:
            if complex_type.name == simple:
                return complex_type
        raise KeyError(name)

    def entity_set(self, name: str) -> EntitySet:
        """The entity set called `name`; raises KeyError."""
        for entity_set in self.entity_sets:
            if entity_set.name == name:
                return entity_set
        raise KeyError(name)

    def qualified(self, name: str) -> str:
        """`Course` -> `Coursewire.Course`; EDM primitives stay as they are."""
        return name if name in PRIMITIVES or name.startswith(self.namespace + ".") else f"{self.namespace}.{name}"

    def _simple(self, name: str) -> str:
        prefix = self.namespace + "."
        return name[len(prefix) :] if name.startswith(prefix) else name

    def check(self) -> Model:
        """Return the model itself if it is consistent; else raise ModelError naming the first fault."""
        _unique("type", [t.name for t in self.entity_types] + [t.name for t in self.complex_types])
        _unique("entity set", [s.name for s in self.entity_sets])
        for complex_type in self.complex_types:
            self._check_properties(complex_type.name, complex_type.properties)
        for entity_type in self.entity_types:
            self._check_entity_type(entity_type)
        for entity_set in self.entity_sets:
            self._check_entity_set(entity_set)
        return self

    def _check_properties(self, owner: str, properties: tuple[Property, ...]) -> None:
        _unique(f"property of {owner}", [p.name for p in properties])
        for p in properties:
            if p.type in PRIMITIVES:
                continue
            try:
                self.complex_type(p.type)
            except KeyError:
                raise ModelError(f"{owner}.{p.name}: {p.type} is neither an EDM primitive nor a complex type") from None

    def _check_entity_type(self, entity_type: EntityType) -> None:
        name = entity_type.name
        self._check_properties(name, entity_type.properties)
        members = [p.name for p in entity_type.properties] + [n.name for n in entity_type.navigations]
        _unique(f"member of {name}", members)
        if not entity_type.key:
            raise ModelError(f"{name} has no key")
        for key in entity_type.key:
            prop = entity_type.property(key)
            if prop is None:
                raise ModelError(f"{name}: key {key} is not one of its properties")
            if prop.nullable or prop.collection or prop.type not in KEY_TYPES:
                raise ModelError(f"{name}: key {key} must be a non-nullable {' or '.join(sorted(KEY_TYPES))}")
        for nav in entity_type.navigations:
            try:
                self.entity_type(nav.target)
            except KeyError:
                raise ModelError(f"{name}.{nav.name}: target {nav.target} is not an entity type") from None

    def _check_entity_set(self, entity_set: EntitySet) -> None:
        try:
            entity_type = self.entity_type(entity_set.entity_type)
        except KeyError:
            raise ModelError(f"entity set {entity_set.name}: {entity_set.entity_type} is not an entity type") from None
        for path, target in entity_set.bindings.items():
            nav = entity_type.navigation(path)
            if nav is None or nav.contained:
                raise ModelError(f"entity set {entity_set.name}: {path} is not a navigation that needs a binding")
            try:
                target_set = self.entity_set(target)
            except KeyError:
                raise ModelError(f"entity set {entity_set.name}: binding {path} names no entity set {target}") from None
            if self._simple(target_set.entity_type) != self._simple(nav.target):
                raise ModelError(
                    f"entity set {entity_set.name}: binding {path} -> {target} holds {target_set.entity_type},"
                    f" not {nav.target}"
                )


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ModelError(f"two of {what} are called {name}")
        seen.add(name)


# --- documents --------------------------------------------------------------------------------------


def metadata_xml(model: Model) -> bytes:
    """The CSDL XML document (UTF-8) of a checked model; raises ModelError if the model is inconsistent.

    Shape as in CSDL XML 4.01 sections 3-13: `edmx:Edmx` (Version 4.0) > `edmx:DataServices` > one
    `Schema` with the complex types, the entity types and the entity container. Attributes at their default
    (`Nullable="true"`, `ContainsTarget="false"`, `IncludeInServiceDocument="true"`) are left out.
    """
    model.check()
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f"<edmx:Edmx Version={quoteattr(VERSION)} xmlns:edmx={quoteattr(EDMX)}>",
        "  <edmx:DataServices>",
        f"    <Schema Namespace={quoteattr(model.namespace)} xmlns={quoteattr(EDM)}>",
    ]
    for complex_type in model.complex_types:
        lines.append(f"      <ComplexType{_attrs(Name=complex_type.name)}>")
        lines.extend(_property(model, p) for p in complex_type.properties)
        lines.append("      </ComplexType>")
    for entity_type in model.entity_types:
        lines.append(f"      <EntityType{_attrs(Name=entity_type.name)}>")
        lines.append("        <Key>")
        lines.extend(f"          <PropertyRef{_attrs(Name=k)} />" for k in entity_type.key)
        lines.append("        </Key>")
        lines.extend(_property(model, p) for p in entity_type.properties)
        lines.extend(_navigation(model, n) for n in entity_type.navigations)
        lines.append("      </EntityType>")
    lines.append(f"      <EntityContainer{_attrs(Name=model.container)}>")
    for entity_set in model.entity_sets:
        attrs = _attrs(
            Name=entity_set.name,
            EntityType=model.qualified(entity_set.entity_type),
            IncludeInServiceDocument=None if entity_set.listed else "false",
        )
        if not entity_set.bindings:
            lines.append(f"        <EntitySet{attrs} />")
            continue
        lines.append(f"        <EntitySet{attrs}>")
        lines.extend(
            f"          <NavigationPropertyBinding{_attrs(Path=path, Target=target)} />"
            for path, target in entity_set.bindings.items()
        )
        lines.append("        </EntitySet>")
    lines += ["      </EntityContainer>", "    </Schema>", "  </edmx:DataServices>", "</edmx:Edmx>", ""]
    return "\n".join(lines).encode("utf-8")


def service_document(model: Model, metadata_url: str) -> dict[str, Any]:
    """The service document (OData JSON Format 4.0 section 5): the listed entity sets, relative to the service root.

    `metadata_url` is the absolute URL of `$metadata`; it becomes the document's `@odata.context`.
    """
    return {
        "@odata.context": metadata_url,
        "value": [{"name": s.name, "kind": "EntitySet", "url": s.name} for s in model.entity_sets if s.listed],
    }


def _type_name(model: Model, name: str, collection: bool) -> str:
    qualified = model.qualified(name)
    return f"Collection({qualified})" if collection else qualified


def _property(model: Model, p: Property) -> str:
    # Nullable on a collection speaks of its items (CSDL XML 4.01 section 7.2.1): they are never null.
    nullable = "false" if p.collection or not p.nullable else None
    return f"        <Property{_attrs(Name=p.name, Type=_type_name(model, p.type, p.collection), Nullable=nullable)} />"


def _navigation(model: Model, n: NavigationProperty) -> str:
    attrs = _attrs(
        Name=n.name,
        Type=_type_name(model, n.target, n.collection),
        # Nullable is not allowed on a collection-valued navigation (CSDL XML 4.01 section 8.1.2).
        Nullable=None if n.collection or n.nullable else "false",
        ContainsTarget="true" if n.contained else None,
    )
    return f"        <NavigationProperty{attrs} />"


def _attrs(**values: str | None) -> str:
    return "".join(f" {name}={quoteattr(value)}" for name, value in values.items() if value is not None)
