"""The data model `$metadata` describes, derived from what serves the lists (one adapter, `describe`).

Interim: until the entity definitions of storage.odata exist, the model is read from the three places the
lists are served from today: storage.readmodel.ENTITY_SETS (entity sets, their properties and navigations),
storage.query.ENTITIES (which properties are GUIDs) and the connector document's response schemas (the type,
format and `x-nullable` of every property, and the shape of the values `$expand` computes).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from storage import query, readmodel
from storage.odata import csdl

NAMESPACE = "Coursewire"
CONTAINER = "Container"
# Keys of the values `$expand` computes (contained entities), in order of preference: the first
# non-nullable one of these the value has.
CONTAINED_KEYS = ("Id", "CourseId", "Url")


class _Builder:
    """Collects complex and contained entity types while the entity sets are described."""

    def __init__(self, definitions: Mapping[str, Any]) -> None:
        self.definitions = definitions
        self.complex_types: dict[str, csdl.ComplexType] = {}
        self.contained: dict[str, csdl.EntityType] = {}

    def definition(self, schema: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        ref = schema["$ref"]
        name = ref.rsplit("/", 1)[-1]
        return name, self.definitions[name]

    def property(self, owner: str, name: str, schema: Mapping[str, Any], guids: frozenset[str]) -> csdl.Property:
        """One structural property of the type `owner` from its response schema; nested objects become complex types."""
        nullable = bool(schema.get("x-nullable", False))
        if schema.get("type") == "array":
            items = schema["items"]
            if items.get("type") == "object":
                complex_name = self.complex(owner, _singular(name), items, guids, name)
                return csdl.Property(name, complex_name, nullable, collection=True)
            return csdl.Property(name, _primitive(items, name in guids), nullable, collection=True)
        if schema.get("type") == "object":
            return csdl.Property(name, self.complex(owner, name, schema, guids, name), nullable)
        return csdl.Property(name, _primitive(schema, name in guids), nullable)

    def complex(self, owner: str, name: str, schema: Mapping[str, Any], guids: frozenset[str], path: str) -> str:
        type_name = name if name.startswith(owner) else owner + name
        nested = frozenset(g.split("/", 1)[1] for g in guids if g.startswith(path + "/"))
        properties = tuple(self.property(type_name, p, s, nested) for p, s in schema["properties"].items())
        self.complex_types[type_name] = csdl.ComplexType(type_name, properties)
        return type_name

    def entity_type(
        self, type_name: str, definition: Mapping[str, Any], names: list[str], guids: frozenset[str], key: str
    ) -> csdl.EntityType:
        schemas = definition["properties"]
        missing = [n for n in names if n not in schemas]
        if missing:
            raise csdl.ModelError(f"{type_name}: the document's schema lacks {', '.join(missing)}")
        properties = tuple(self.property(type_name, n, schemas[n], guids) for n in names)
        properties = tuple(
            csdl.Property(p.name, p.type, False, p.collection) if p.name == key else p for p in properties
        )
        return csdl.EntityType(type_name, (key,), properties)

    def contained_type(self, schema: Mapping[str, Any], guids: frozenset[str]) -> str:
        """The entity type of a value `$expand` computes (DueDate, LearningModules, ...): its definition's name."""
        name, definition = self.definition(schema)
        if name not in self.contained:
            properties = definition["properties"]
            key = next(k for k in CONTAINED_KEYS if k in properties and not properties[k].get("x-nullable"))
            names = [n for n in properties if "@" not in n]
            self.contained[name] = self.entity_type(name, definition, names, guids, key)
        return name


def _primitive(schema: Mapping[str, Any], guid: bool) -> str:
    kind, form = schema.get("type"), schema.get("format")
    if guid:
        return "Edm.Guid"
    if kind == "integer":
        return "Edm.Int64" if form == "int64" else "Edm.Int32"
    if kind == "number":
        return "Edm.Double"
    if kind == "boolean":
        return "Edm.Boolean"
    if kind == "string":
        return "Edm.DateTimeOffset" if form == "date-time" else "Edm.String"
    raise csdl.ModelError(f"no EDM type for the schema {dict(schema)}")


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") and not name.endswith("ss") else name


def _guids(entity_map: query.EntityMap | None) -> frozenset[str]:
    if entity_map is None:
        return frozenset()
    names = {name for name, f in entity_map.fields.items() if f.type == "guid"}
    for collection_name, collection in entity_map.collections.items():
        names |= {f"{collection_name}/{n}" for n, f in collection.fields.items() if f.type == "guid"}
    return frozenset(names)


def _listed(paths: Mapping[str, Any]) -> frozenset[str]:
    """Entity sets a client may read whole: those with `GET /odata/v2/<Set>` in the document."""
    prefix = "/odata/v2/"
    return frozenset(p[len(prefix) :] for p, item in paths.items() if p.startswith(prefix) and "get" in item)


@cache
def describe() -> csdl.Model:
    """The checked model of every entity set the lists and `$expand` reach; raises csdl.ModelError if they disagree.

    Entity types are the document's definitions named as the sets' singular (Courses -> Course); every
    property the read model returns is declared with the document's type and `x-nullable`, GUIDs where the
    `$filter` map says so; `Id` is the key. Navigations to entity sets are bound to them; values that
    `$expand` computes are contained entities when they are objects, structural properties otherwise.
    """
    from connector.app import load_spec  # the app wires this module in: import it when first asked

    spec = load_spec()
    builder = _Builder(spec["definitions"])
    listed = _listed(spec["paths"])
    entity_types: list[csdl.EntityType] = []
    entity_sets: list[csdl.EntitySet] = []
    type_of = {name: _singular(name) for name in readmodel.ENTITY_SETS}
    for set_name, es in readmodel.ENTITY_SETS.items():
        type_name = type_of[set_name]
        definition = spec["definitions"][type_name]
        guids = _guids(query.ENTITIES.get(set_name)) | {"Id"}  # every entity set's key is a GUID
        names = sorted(es.properties, key=list(definition["properties"]).index)
        navigations: list[csdl.NavigationProperty] = []
        bindings: dict[str, str] = {}
        for nav_name, nav in es.navigations.items():
            if nav.target is not None:
                navigations.append(csdl.NavigationProperty(nav_name, type_of[nav.target], nav.many))
                bindings[nav_name] = nav.target
                continue
            schema = definition["properties"][nav_name]
            if "$ref" in schema or "$ref" in schema.get("items", {}):
                nested = frozenset(g.split("/", 1)[1] for g in guids if g.startswith(nav_name + "/"))
                target = builder.contained_type(schema.get("items", schema), nested)
                navigations.append(csdl.NavigationProperty(nav_name, target, nav.many, contained=True))
            else:
                names.append(nav_name)  # a computed primitive such as ProvisioningProgress
        entity_type = builder.entity_type(type_name, definition, names, guids, "Id")
        entity_types.append(csdl.EntityType(type_name, ("Id",), entity_type.properties, tuple(navigations)))
        entity_sets.append(csdl.EntitySet(set_name, type_name, bindings, set_name in listed))
    return csdl.Model(
        NAMESPACE,
        CONTAINER,
        (*entity_types, *builder.contained.values()),
        tuple(builder.complex_types.values()),
        tuple(entity_sets),
    ).check()
