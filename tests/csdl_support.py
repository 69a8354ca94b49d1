"""Reading CSDL XML as a client would: OASIS schema validation, a parsed view, context URLs and EDM values.

Everything here works on the XML text itself, not on storage.odata.csdl's description, so the tests that use
it check the document that clients get.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lxml import etree

SCHEMAS = Path(__file__).resolve().parent / "data" / "odata-csdl"
# The hashes tests/data/odata-csdl/README.md states: the schemas are the TC's, unchanged.
SCHEMA_SHA256 = {
    "edm.xsd": "a2e01a415137b5e84d442f8f35cb5d2e054b9fe5e6d18dab18c76bab8fea8d86",
    "edmx.xsd": "bb8dd3e090955cc7653e361eec8f48b02c095979992839ebe878a3e49dcbd316",
}
# The documents are the server's own $metadata and the vendored schemas; entities and network stay off anyway.
PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
NS = {"edmx": "http://docs.oasis-open.org/odata/ns/edmx", "edm": "http://docs.oasis-open.org/odata/ns/edm"}


@cache
def oasis_schema() -> etree.XMLSchema:
    """The OASIS EDMX schema (importing the EDM schema), after checking both files are the published ones."""
    for name, digest in SCHEMA_SHA256.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, f"{name} was changed"
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "edmx.xsd"), PARSER))  # noqa: S320 (see PARSER)


def xml(document: bytes) -> etree._Element:
    """The parsed document (PARSER: no entities, no network)."""
    return etree.fromstring(document, PARSER)  # noqa: S320 (see PARSER)


def schema_errors(document: bytes) -> list[str]:
    """The OASIS schema's complaints about a CSDL XML document ([] when it is valid)."""
    schema = oasis_schema()
    if schema.validate(xml(document)):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


@dataclass
class Structured:
    """An entity or complex type as the document declares it."""

    name: str
    key: tuple[str, ...] = ()
    properties: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (Type, Nullable)
    navigations: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (Type, ContainsTarget)


@dataclass
class Document:
    """A parsed CSDL document: qualified type names, entity sets with their type and bindings."""

    namespace: str
    types: dict[str, Structured]
    entity_sets: dict[str, tuple[str, dict[str, str], bool]]  # name -> (EntityType, bindings, listed)

    def type_of_set(self, name: str) -> Structured:
        return self.types[self.entity_sets[name][0]]


def parse(document: bytes) -> Document:
    """Read types, keys, properties, navigations and entity sets out of CSDL XML (one schema, no aliases)."""
    root = xml(document)
    (schema,) = root.findall("edmx:DataServices/edm:Schema", NS)
    namespace = schema.get("Namespace")
    types: dict[str, Structured] = {}
    for element in (*schema.findall("edm:EntityType", NS), *schema.findall("edm:ComplexType", NS)):
        structured = Structured(
            name=element.get("Name"),
            key=tuple(ref.get("Name") for ref in element.findall("edm:Key/edm:PropertyRef", NS)),
        )
        for p in element.findall("edm:Property", NS):
            structured.properties[p.get("Name")] = (p.get("Type"), p.get("Nullable", "true") == "true")
        for n in element.findall("edm:NavigationProperty", NS):
            structured.navigations[n.get("Name")] = (n.get("Type"), n.get("ContainsTarget", "false") == "true")
        types[f"{namespace}.{structured.name}"] = structured
    sets = {}
    for s in schema.findall("edm:EntityContainer/edm:EntitySet", NS):
        bindings = {b.get("Path"): b.get("Target") for b in s.findall("edm:NavigationPropertyBinding", NS)}
        sets[s.get("Name")] = (s.get("EntityType"), bindings, s.get("IncludeInServiceDocument", "true") == "true")
    return Document(namespace, types, sets)


def element_type(type_name: str) -> tuple[str, bool]:
    """`Collection(X)` -> (X, True); `X` -> (X, False)."""
    match = re.fullmatch(r"Collection\((.+)\)", type_name)
    return (match[1], True) if match else (type_name, False)


# --- context URLs (OData 4.0 Protocol section 10) ---------------------------------------------------------

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\((.*)\))?$")


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` outside parentheses and quotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _check_select_list(doc: Document, structured: Structured, items: str, where: str) -> None:
    """A context URL's select list: properties, `*`, and expanded navigations with their own list `Nav(...)`."""
    for raw in _split_top(items, ","):
        item = raw.strip()
        if item in ("*", ""):
            continue
        match = _SEGMENT.match(item)
        assert match, f"{where}: {item!r} is no select item"
        name = match[1]
        if name in structured.properties and match[2] is None:
            continue
        assert name in structured.navigations, f"{where}: {structured.name} has no member {name}"
        target, _ = element_type(structured.navigations[name][0])
        _check_select_list(doc, doc.types[target], match[3] or "", where)


def resolve_context(doc: Document, url: str, metadata_url: str) -> str:
    """What an `@odata.context` URL names: `Coursewire.Course` (or `Collection(...)`); AssertionError if unresolved.

    Forms read (OData 4.0 Protocol 10.1-10.10, 10.15): `#Set`, `#Set/$entity`, `#Set(select-list)`,
    `#Set(select-list)/$entity`, paths from an entity through navigations `#Set(key)/Nav[/Nav...][/$entity]`,
    whose target is contained or bound, and a property of one entity at the end of such a path `#Set(key)/Prop`.
    """
    base, _, fragment = url.partition("#")
    assert base == metadata_url, f"{url}: the context is not this service's $metadata ({metadata_url})"
    fragment = unquote(fragment)
    entity = fragment.endswith("/$entity")
    if entity:
        fragment = fragment[: -len("/$entity")]
    segments = _split_top(fragment, "/")
    match = _SEGMENT.match(segments[0])
    assert match and match[1] in doc.entity_sets, f"{url}: {segments[0]!r} is no entity set of $metadata"
    set_name = match[1]
    structured = doc.type_of_set(set_name)
    type_name, many = doc.entity_sets[set_name][0], True
    if len(segments) == 1:
        if match[2] is not None:
            _check_select_list(doc, structured, match[3], url)
        return type_name if entity else f"Collection({type_name})"
    assert match[2] is not None, f"{url}: a path below {set_name} starts at one entity, Set(key)"
    many = False  # Set(key) is one entity
    bound: str | None = set_name
    for position, segment in enumerate(segments[1:], start=2):
        seg = _SEGMENT.match(segment)
        if seg and seg[2] is None and seg[1] in structured.properties and position == len(segments):
            # A property of one entity (10.15): its type, never /$entity.
            assert not many, f"{url}: {seg[1]} of a collection"
            assert not entity, f"{url}: /$entity after the property {seg[1]}"
            return structured.properties[seg[1]][0]
        assert seg and seg[1] in structured.navigations, f"{url}: {structured.name} has no navigation {segment}"
        nav_type, contained = structured.navigations[seg[1]]
        type_name, many = element_type(nav_type)
        if not contained:
            assert bound is not None, f"{url}: {seg[1]} leaves the entity sets"
            bindings = doc.entity_sets[bound][1]
            assert seg[1] in bindings, f"{url}: entity set {bound} binds no {seg[1]}"
            bound = bindings[seg[1]]
        else:
            bound = None
        structured = doc.types[type_name]
        if seg[2] is not None and position < len(segments):  # a key into a collection on the way
            assert many, f"{url}: {seg[1]} is one entity, it takes no key"
            many = False
        elif seg[2] is not None:  # the last segment's select list
            _check_select_list(doc, structured, seg[3], url)
    assert entity != many, f"{url}: /$entity {'on a collection' if many else 'missing for one entity'}"
    return type_name if entity else f"Collection({type_name})"


# --- EDM values in JSON (OData JSON Format 4.0 section 7.1, ABNF of OData URL conventions) -------------

_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_DATE = r"-?[0-9]{4,}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,12})?)?"
_DATETIMEOFFSET = re.compile(_DATE + "T" + _TIME + r"(Z|[+-][0-9]{2}:[0-9]{2})")


def value_fits(doc: Document, type_name: str, value: Any) -> str | None:
    """None when a JSON `value` is a valid value of the declared type (recursively); else why it is not."""
    element, many = element_type(type_name)
    if many:
        if not isinstance(value, list):
            return f"{type_name} needs an array, got {value!r}"
        return next((why for v in value if (why := value_fits(doc, element, v))), None)
    if value is None:
        return None  # nullability is judged by the caller, which knows the property
    checks = {
        "Edm.String": lambda v: isinstance(v, str),
        "Edm.Guid": lambda v: isinstance(v, str) and _GUID.fullmatch(v) is not None,
        "Edm.Boolean": lambda v: isinstance(v, bool),
        "Edm.Int32": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
        "Edm.Int64": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,
        "Edm.Double": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "Edm.Decimal": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "Edm.Date": lambda v: isinstance(v, str) and re.fullmatch(_DATE, v) is not None,
        "Edm.DateTimeOffset": lambda v: isinstance(v, str) and _DATETIMEOFFSET.fullmatch(v) is not None,
    }
    if element in checks:
        return None if checks[element](value) else f"{value!r} is not an {element}"
    structured = doc.types.get(element)
    if structured is None:
        return f"{element} is not declared"
    if not isinstance(value, dict):
        return f"{element} needs an object, got {value!r}"
    return entity_fits(doc, structured, value)


def entity_fits(doc: Document, structured: Structured, entity: dict[str, Any]) -> str | None:
    """None when every member of a JSON object is declared with a type its value fits; else the first misfit.

    Annotations (`@odata.context`, `Nav@odata.context`) are skipped; expanded navigations are checked as
    their target type; non-nullable properties must not be null.
    """
    for name, value in entity.items():
        if "@" in name:
            continue
        if name in structured.properties:
            type_name, nullable = structured.properties[name]
            if value is None and not nullable:
                return f"{structured.name}.{name} is null but declared Nullable=false"
        elif name in structured.navigations:
            type_name = structured.navigations[name][0]
        else:
            return f"{structured.name}.{name} is not declared in $metadata"
        why = value_fits(doc, type_name, value)
        if why:
            return f"{structured.name}.{name}: {why}"
    return None
