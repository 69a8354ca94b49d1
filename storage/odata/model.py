"""The definition types: one `EntitySet` per entity set, from which the read model, the `$filter`/`$orderby`
map and `$metadata` are derived.

A definition says what a client sees (names, EDM types, nullability, keys, navigations) and where each value
comes from (an SQL expression over the set's table, or a batch loader), so the two can never drift apart.
SQL here is code, never request text: `{t}` stands for the table alias the expression is used under, and
each `?` takes a value of the `ReadContext` (the clock, the base URL) named in `context`, in order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from storage.db import iso
from storage.models import Actor

# EDM primitive types (OData CSDL 4.0 §4.4) as the document's JSON Schema types show them.
STRING = "Edm.String"
GUID = "Edm.Guid"
INT32 = "Edm.Int32"
INT64 = "Edm.Int64"
DOUBLE = "Edm.Double"
BOOLEAN = "Edm.Boolean"
DATETIME = "Edm.DateTimeOffset"
PRIMITIVES = frozenset({STRING, GUID, INT32, INT64, DOUBLE, BOOLEAN, DATETIME})


@dataclass(frozen=True)
class ReadContext:
    """What a read depends on besides the database: one clock, the public base URL of links, and who reads.

    `now` is the injected clock's time (storage.db.Database.clock), used for every "now" (IsEnded...).
    `base_url` is COURSEWIRE_PUBLIC_URL or the trusted request host (`https://lms.example/lms`); links
    (`Url`) are built from it when read, never stored with it. None where no request is behind the read
    (an event's snapshot): reading a link then raises rather than inventing a host.
    `reader` is the actor a request acts as: `$filter` conditions over rows that belong to an enrollment
    (`Registrations/any(...)`) see only the rows it may read (storage.access.enrollment_scope). None where no
    request is behind the read (an event's snapshot, a test of the compiler): every row counts.
    """

    now: datetime
    base_url: str | None = None
    reader: Actor | None = None

    def value(self, name: str) -> object:
        """The SQL parameter for a context name a definition uses: `now` (ISO UTC, as stored) or
        `base_url` (no slash at the end). Raises LookupError for a base URL this read does not have."""
        if name == "now":
            return iso(self.now)
        if name == "base_url":
            if self.base_url is None:
                raise LookupError("this read has no base URL for its links; pass one in the ReadContext")
            return self.base_url.rstrip("/")
        raise LookupError(name)


BatchLoad = Callable[[sqlite3.Connection, Sequence[str], "ReadContext | None"], Mapping[str, Any]]


@dataclass(frozen=True)
class Coded:
    """A text property stored as a code: `sql` is the code column, `codes` maps each text to its codes.

    `$filter` compares the codes (so indexes on the code column apply); reading, ordering and string
    functions use the Property's own `sql`, which gives the text.
    """

    sql: str
    codes: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class Property:
    """A structural property of an entity or complex type.

    Metadata: `name`, `type` (an EDM primitive name such as `Edm.String`, or the name of a `ComplexType`),
    `nullable`, `collection` (a list of `type`), `expand_only` (present only when `$expand` names it, like
    a course's `DueDate`; `context_link` adds `<Name>@odata.context` then, as LMS365 does).

    Storage: `sql` is the expression giving the value (JSON text for complex and collection values),
    `context` the ReadContext names its `?` marks take, `joins` the names of the entity set's `joins` it
    needs. `load` replaces `sql` for values read in a batch of their own. `members` gives, for a complex
    value, the SQL of its members that `$filter` may name (`Room/Title`), and `items` with `exists` make a
    collection usable in `any`/`all`: `exists` holds `{t}` and `{cond}`, `items` are the item members over
    the alias `exists` gives them. A property without `sql` (only `load`) cannot be filtered or sorted on.
    """

    name: str
    type: str
    nullable: bool = False
    collection: bool = False
    expand_only: bool = False
    context_link: bool = False
    sql: str | None = None
    context: tuple[str, ...] = ()
    joins: tuple[str, ...] = ()
    coded: Coded | None = None
    load: BatchLoad | None = None
    members: tuple[Property, ...] = ()
    exists: str | None = None
    items: tuple[Property, ...] = ()


@dataclass(frozen=True)
class ComplexType:
    """A structured value without a key (CSDL ComplexType): `Room`, `SessionDay`, `SharepointWeb`..."""

    name: str
    properties: tuple[Property, ...]

    def property(self, name: str) -> Property:
        """The member named `name`; KeyError if there is none."""
        for prop in self.properties:
            if prop.name == name:
                return prop
        raise KeyError(name)


@dataclass(frozen=True)
class Link:
    """How a navigation finds its targets; all SQL is code.

    kind `column`: the parent row's `column` holds the target's key (to-one; a join for `$filter`).
    kind `children`: the target rows whose `column` holds the parent's key.
    kind `through`: a link table `table` with `parent` and `child` columns.
    `where` is an extra condition over the target alias `{c}` (and the link table alias `{l}`), `order`
    the order of a collection's items over `{c}` (the target's key is always added last).
    """

    kind: Literal["column", "children", "through"]
    column: str = ""
    table: str = ""
    parent: str = ""
    child: str = ""
    where: str = ""
    order: str = ""


@dataclass(frozen=True)
class Navigation:
    """A navigation property: `target` names an entity set, `many` says whether it is a collection.

    `nullable` applies to single-valued ones (an enrollment's `CourseSession` may be absent);
    `context_link` emits `<Name>@odata.context` when expanded; `link` says how targets are found.
    """

    name: str
    target: str
    many: bool
    link: Link
    nullable: bool = False
    context_link: bool = False


@dataclass(frozen=True)
class EntitySet:
    """One entity set and its entity type.

    Metadata: `name` (`Courses`, as in URLs and `@odata.context`), `type_name` (`Course`), `key`
    (property names), `properties`, `navigations`, `listed` (false for sets reached only by `$expand`).

    Storage: `table` (also the alias of its rows: `courses.id`), `joins` (name -> JOIN clause over
    `{t}`, added only when a property or filter needs it), `default_order` (over NOT NULL columns of
    `{t}`; the key follows), `live` (SQL true for a row that is not soft-deleted: lists show only those
    unless `$filter` names `soft_delete_property`, and always when that is None), and `parent` (the
    column holding the key of the entity a nested list hangs under: `Courses({id})/CourseSessions`).
    """

    name: str
    type_name: str
    key: tuple[str, ...]
    properties: tuple[Property, ...]
    navigations: tuple[Navigation, ...] = ()
    listed: bool = True
    table: str = ""
    joins: Mapping[str, str] = field(default_factory=dict)
    default_order: str = ""
    live: str | None = None
    soft_delete_property: str | None = None
    parent: str | None = None

    def property(self, name: str) -> Property:
        """The property named `name`; KeyError if there is none."""
        for prop in self.properties:
            if prop.name == name:
                return prop
        raise KeyError(name)

    def navigation(self, name: str) -> Navigation:
        """The navigation named `name`; KeyError if there is none."""
        for nav in self.navigations:
            if nav.name == name:
                return nav
        raise KeyError(name)


@dataclass(frozen=True)
class Model:
    """Every entity set and complex type, in a stable order (the order of `$metadata`)."""

    entity_sets: tuple[EntitySet, ...]
    complex_types: tuple[ComplexType, ...]

    def entity_set(self, name: str) -> EntitySet:
        """The entity set named `name` (`Courses`); KeyError if there is none."""
        for entity_set in self.entity_sets:
            if entity_set.name == name:
                return entity_set
        raise KeyError(name)

    def complex_type(self, name: str) -> ComplexType:
        """The complex type named `name` (`Room`); KeyError if there is none."""
        for complex_type in self.complex_types:
            if complex_type.name == name:
                return complex_type
        raise KeyError(name)
