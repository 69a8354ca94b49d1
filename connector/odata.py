"""OData query options at the HTTP edge: parsing and checking them, page windows and nextLinks.

`$filter` text is only carried here; `storage.odata.compiler.compile_filter` parses and checks it, and
`$skiptoken` is carried to `storage.odata.paging.decode_token`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import quote

from storage.errors import Invalid

OrderBy = tuple[tuple[str, bool], ...]  # (property path, descending)

MAX_INT_OPTION = 2**31 - 1
MAX_EXPAND_DEPTH = 4
OPTIONS = ("$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$count", "$skiptoken")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ORDER_ITEM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)(?:\s+(asc|desc))?", re.IGNORECASE)
_INT = re.compile(r"\+?[0-9]+")


@dataclass(frozen=True)
class ExpandItem:
    """One `$expand` item: a navigation and its nested options, as in `Courses($select=Id;$expand=Tags)`."""

    name: str
    select: tuple[str, ...] | None = None
    expand: tuple[ExpandItem, ...] = ()
    filter: str | None = None
    orderby: OrderBy = ()
    top: int | None = None


@dataclass(frozen=True)
class QueryOptions:
    """The checked query options of one request; absent or empty options take their defaults."""

    filter: str | None = None
    orderby: OrderBy = ()
    select: tuple[str, ...] | None = None
    expand: tuple[ExpandItem, ...] = ()
    top: int | None = None
    skip: int = 0
    count: bool = False
    skiptoken: str | None = None


def _listing(names: frozenset[str] | set[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


# --- single options -----------------------------------------------------------------------------------


def parse_select(text: str, allowed: frozenset[str] | None, target: str = "$select") -> tuple[str, ...] | None:
    """`Id, Title` or `*` as a tuple of names (None when empty); raises Invalid for unknown names.

    `allowed` None skips the name check (the shape is not known here).
    """
    if not text.strip():
        return None
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if name != "*" and not _NAME.fullmatch(name):
            raise Invalid(f"{target} item {name!r} is not a property name; write names separated by commas", target)
        if allowed is not None and name != "*" and name not in allowed:
            raise Invalid(f"{target} names unknown property {name!r}; selectable: {_listing(allowed)}", target)
        if name not in names:
            names.append(name)
    return tuple(names)


def parse_orderby(text: str, allowed: frozenset[str] | None, target: str = "$orderby") -> OrderBy:
    """`Title desc, CreatedAt` as ((name, descending), ...); raises Invalid for bad syntax or unknown names.

    Only the first segment of a path is checked against `allowed`; `storage.odata.compiler.compile_orderby`
    checks the whole path against what can be sorted.
    """
    if not text.strip():
        return ()
    items: list[tuple[str, bool]] = []
    for raw in text.split(","):
        match = _ORDER_ITEM.fullmatch(raw.strip())
        if match is None:
            raise Invalid(
                f"{target} item {raw.strip()!r} is not valid; write a property name optionally followed by"
                " asc or desc, e.g. `Title desc, CreatedAt`",
                target,
            )
        path, direction = match.group(1), (match.group(2) or "asc").lower()
        if allowed is not None and path.split("/")[0] not in allowed:
            raise Invalid(f"{target} names unknown property {path!r}; properties: {_listing(allowed)}", target)
        items.append((path, direction == "desc"))
    return tuple(items)


def parse_int(value: str | int | bool | None, target: str) -> int | None:
    """A non-negative integer option (`$top`, `$skip`), None when absent or empty; else raises Invalid."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Invalid(f"{target} must be a non-negative integer, not {value}", target)
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if not text:
            return None
        if not _INT.fullmatch(text):
            raise Invalid(f"{target} must be a non-negative integer, not {text[:40]!r}", target)
        number = int(text)
    if not 0 <= number <= MAX_INT_OPTION:
        raise Invalid(f"{target} must be between 0 and {MAX_INT_OPTION}", target)
    return number


def parse_bool(value: str | int | bool | None, target: str) -> bool:
    """`true`/`false` (any case) or a bool; absent or empty is false; raises Invalid otherwise."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("", "false"):
        return False
    if text == "true":
        return True
    raise Invalid(f"{target} must be true or false, not {str(value)[:40]!r}", target)


# --- $expand ------------------------------------------------------------------------------------------


class _Reader:
    """A cursor over `$expand` text for the recursive-descent parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> Invalid:
        return Invalid(f"$expand: {message} at position {self.pos + 1}", "$expand")

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def eat(self, char: str) -> bool:
        self.skip_spaces()
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def name(self, what: str) -> str:
        self.skip_spaces()
        match = _NAME.match(self.text, self.pos)
        if match is None:
            found = self.peek()
            raise self.error(f"expected {what}, found {found!r}" if found else f"expected {what}, found the end")
        self.pos = match.end()
        return match.group(0)

    def value(self) -> str:
        """Raw option text up to `;` or the closing `)`, skipping over quoted strings and parentheses."""
        start, depth, quoted = self.pos, 0, False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if quoted:
                quoted = char != "'"  # a doubled '' closes and reopens, which this handles
            elif char == "'":
                quoted = True
            elif char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    break
                depth -= 1
            elif char == ";" and depth == 0:
                break
            self.pos += 1
        if quoted:
            raise self.error("unclosed string")
        return self.text[start : self.pos]


Allowed = Mapping[str, frozenset[str] | None]  # navigation -> names its target has; None: not known here


def _expand_list(reader: _Reader, allowed: Allowed | None, depth: int) -> tuple[ExpandItem, ...]:
    if depth > MAX_EXPAND_DEPTH:
        raise reader.error(f"nested deeper than {MAX_EXPAND_DEPTH} levels")
    items: list[ExpandItem] = []
    while True:
        reader.skip_spaces()
        if reader.peek() == "*":
            raise reader.error("`*` is not supported; name the navigations to expand")
        name = reader.name("a navigation name")
        if allowed is not None and name not in allowed:
            raise Invalid(
                f"$expand names {name!r}, which cannot be expanded; expandable: {_listing(set(allowed))}",
                "$expand",
            )
        if any(item.name == name for item in items):
            raise Invalid(f"$expand names {name!r} twice", "$expand")
        inner = None if allowed is None else allowed[name]
        items.append(_expand_options(reader, name, inner, depth) if reader.eat("(") else ExpandItem(name))
        if not reader.eat(","):
            return tuple(items)


def _expand_options(reader: _Reader, name: str, inner: frozenset[str] | None, depth: int) -> ExpandItem:
    """The `(...)` after a navigation.

    `inner` names what the navigation's target has: empty for a computed value, None when unknown.
    """
    checked = inner or None
    item = ExpandItem(name)
    seen: set[str] = set()
    while True:
        reader.eat("$")  # `$select` and `select` both appear in the wild (OData 4.01 makes `$` optional)
        option = "$" + reader.name("an option such as $select").lower()
        if option in seen:
            raise reader.error(f"{option} given twice inside {name}(...)")
        seen.add(option)
        if not reader.eat("="):
            raise reader.error(f"expected = after {option}")
        reader.skip_spaces()
        label = f"{option} inside {name}(...)"
        try:
            if option == "$expand":
                if inner is not None and not inner:
                    raise Invalid(f"$expand: {name} is a value and cannot be expanded further", "$expand")
                # One level down we know the target's names but not which are navigations.
                nested = {n: None for n in checked} if checked is not None else None
                item = replace(item, expand=_expand_list(reader, nested, depth + 1))
            elif option == "$select":
                item = replace(item, select=parse_select(reader.value(), checked, label))
            elif option == "$orderby":
                item = replace(item, orderby=parse_orderby(reader.value(), checked, label))
            elif option == "$filter":
                item = replace(item, filter=reader.value().strip() or None)
            elif option == "$top":
                item = replace(item, top=parse_int(reader.value(), label))
            else:
                raise Invalid(
                    f"{option} is not supported inside {name}(...);" " use $select, $expand, $filter, $orderby or $top"
                )
        except Invalid as exc:
            if exc.target == "$expand":
                raise
            raise Invalid(f"$expand: {exc.message}", "$expand") from None
        if reader.eat(")"):
            return item
        if not reader.eat(";"):
            raise reader.error(f"expected ; or ) in {name}(...)")


def parse_expand(text: str, expandable: Mapping[str, frozenset[str]]) -> tuple[ExpandItem, ...]:
    """`DueDate,Courses($select=Id;$expand=SharepointWeb)` as ExpandItems; raises Invalid (target `$expand`).

    `expandable` maps each navigation to the names its target has. Names are checked one level down;
    an empty set marks a computed value (like `SharepointWeb`) whose members are not checked.
    """
    if not text.strip():
        return ()
    reader = _Reader(text)
    items = _expand_list(reader, dict(expandable), 0)
    reader.skip_spaces()
    if reader.pos != len(text):
        raise reader.error(f"unexpected {reader.peek()!r}; separate items with commas and options with ;")
    return items


# --- all options -------------------------------------------------------------------------------------


def _text(raw: Mapping[str, str | int | bool | None], option: str) -> str:
    value = raw.get(option)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"{option} must be text", option)
    return value


def parse_options(
    raw: Mapping[str, str | int | bool | None],
    *,
    selectable: frozenset[str],
    expandable: Mapping[str, frozenset[str]],
) -> QueryOptions:
    """Parse and check the `$`-options of a request against one entity set.

    `selectable` names its properties and navigations; `expandable` maps each navigation to the names
    its target has. Returns QueryOptions; raises Invalid with `target` set to the option at fault.
    """
    for key in raw:
        if key.startswith("$") and key not in OPTIONS:
            raise Invalid(f"query option {key} is not supported; supported: {', '.join(OPTIONS)}", key)
    filter_text = _text(raw, "$filter").strip()
    orderable = selectable | frozenset(expandable)
    return QueryOptions(
        filter=filter_text or None,
        orderby=parse_orderby(_text(raw, "$orderby"), orderable),
        select=parse_select(_text(raw, "$select"), selectable),
        expand=parse_expand(_text(raw, "$expand"), expandable),
        top=parse_int(raw.get("$top"), "$top"),
        skip=parse_int(raw.get("$skip"), "$skip") or 0,
        count=parse_bool(raw.get("$count"), "$count"),
        skiptoken=_text(raw, "$skiptoken").strip() or None,
    )


# --- paging -------------------------------------------------------------------------------------------


def page_window(top: int | None, skip: int, page_size: int, max_page_size: int) -> tuple[int, int]:
    """The (limit, offset) of the page to read.

    Without `$top`, pages hold `page_size` rows; with `$top`, the page holds `$top` rows but never
    more than `max_page_size` (the rest follows through a nextLink).
    """
    limit = min(page_size, max_page_size) if top is None else min(top, max_page_size)
    return limit, skip


def next_link(
    base_url: str,
    raw_query: Mapping[str, str],
    *,
    skip: int | None = None,
    top_remaining: int | None,
    skiptoken: str | None = None,
) -> str:
    """The `@odata.nextLink` URL: the same query resuming after this page, with `$top` set to what is left.

    With `skiptoken` the next page starts after the page's last row (`$skip` and an older `$skiptoken`
    are dropped); otherwise `$skip` moves on to `skip`. Other options keep their order and values;
    everything is percent-encoded (spaces as %20).
    """
    query = {key: value for key, value in raw_query.items() if key not in ("$skip", "$top", "$skiptoken")}
    if top_remaining is not None:
        query["$top"] = str(top_remaining)
    if skiptoken is not None:
        query["$skiptoken"] = skiptoken
    elif skip is not None:
        query["$skip"] = str(skip)
    encoded = "&".join(f"{quote(str(k), safe='$')}={quote(_query_text(v), safe=_SAFE)}" for k, v in query.items())
    return f"{base_url}{'&' if '?' in base_url else '?'}{encoded}"


# Characters that keep OData URLs readable and mean nothing special inside a query value.
_SAFE = "$,()'/:@"


def _query_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
