"""The operations of the connector document as the edge matches them: a regex per path, the methods it accepts,
which parameters hold ids (rewritten to their stored form) and which are numbers (written in ASCII digits)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_plus

from starlette.types import Scope

from connector.errors import HttpError
from storage import ids

CATCH_ALL = "/{FileUploadUrl}"
# A query parameter typed integer or number: ASCII digits only, as in the document's examples (no other scripts'
# digits, no `_`, no blanks); a sign, and for a number a fraction, as int() and float() read them.
NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class Route:
    """One path of the document (except the upload catch-all): its regex, the methods it accepts, the regex
    groups of its path parameters that hold ids, and, per method, the query parameters that hold ids (both
    `format: uuid` in the document)."""

    pattern: re.Pattern[str]
    methods: frozenset[str]
    key_groups: tuple[str, ...] = ()
    id_queries: dict[str, frozenset[str]] = field(default_factory=dict)
    # Per method, the query parameters the document types integer or number.
    number_queries: dict[str, frozenset[str]] = field(default_factory=dict)


def _parameters(item: dict[str, Any], method: str, shared: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The parameters of an operation and of its path item: inline ones, and with `shared` (the document's
    `parameters`) the `#/parameters/...` ones it `$ref`s too."""
    operation = item.get(method)
    listed = list(item.get("parameters") or []) + list(
        operation.get("parameters") or [] if isinstance(operation, dict) else []
    )
    found = []
    for p in listed:
        if isinstance(p, dict) and "$ref" in p:
            p = (
                (shared or {}).get(str(p["$ref"]).rsplit("/", 1)[-1])
                if str(p["$ref"]).startswith("#/parameters/")
                else None
            )
        if isinstance(p, dict):
            found.append(p)
    return found


def compile_routes(paths: dict[str, Any], shared: dict[str, Any] | None = None) -> list[Route]:
    """A Route for every spec path except the upload catch-all; `shared` is the document's `parameters`, which
    `$ref`ed parameters (such as $top and $skip) are read from."""
    routes = []
    for template, item in paths.items():
        if template == CATCH_ALL:
            continue
        methods = frozenset(m.upper() for m in item if m in ("get", "put", "post", "patch", "delete", "head"))
        ids_in_path = {
            str(p.get("name"))
            for m in methods
            for p in _parameters(item, m.lower())
            if p.get("in") == "path" and p.get("format") == "uuid"
        }
        groups: list[str] = []
        pattern = ""
        for index, part in enumerate(re.split(r"(\{[^}]+\})", template)):
            if part.startswith("{"):
                group = f"p{index}"
                pattern += f"(?P<{group}>[^/]+)"
                if part[1:-1] in ids_in_path:
                    groups.append(group)
            else:
                pattern += re.escape(part)
        number_queries = {
            m: frozenset(
                str(p.get("name"))
                for p in _parameters(item, m.lower(), shared)
                if p.get("in") == "query" and p.get("type") in ("integer", "number")
            )
            for m in methods
        }
        id_queries = {
            m: frozenset(
                str(p.get("name"))
                for p in _parameters(item, m.lower())
                if p.get("in") == "query" and p.get("format") == "uuid"
            )
            for m in methods
        }
        routes.append(
            Route(
                re.compile(f"^{pattern}$"),
                methods,
                tuple(groups),
                {m: q for m, q in id_queries.items() if q},
                {m: q for m, q in number_queries.items() if q},
            )
        )
    return routes


def canonical_ids(scope: Scope, route: Route, method: str) -> None:
    """Rewrite the ids of the request's path and query into their stored form (storage.ids), so every layer
    after the edge (routing, validation, handlers, the links built from the path) sees one spelling:
    `Courses('{66220A70-...}')` is routed as `Courses(66220a70-...)`. Other keys and parameters are left as sent."""
    path = scope["path"]
    match = route.pattern.match(path)
    if match is not None and route.key_groups:
        rewritten = path
        for group in sorted(route.key_groups, key=match.start, reverse=True):
            key = ids.canonical_key(match.group(group))
            if key != match.group(group):
                rewritten = rewritten[: match.start(group)] + key + rewritten[match.end(group) :]
        if rewritten != path:
            scope["path"] = rewritten
            scope["raw_path"] = quote(rewritten, safe="/()',;=!*@:+$&~").encode("ascii")
    names = route.id_queries.get(method)
    query = scope.get("query_string", b"")
    if names and query:
        pairs = query.decode("latin-1").split("&")
        for i, pair in enumerate(pairs):
            name, sep, value = pair.partition("=")
            if sep and unquote_plus(name) in names:
                stored = ids.canonical(unquote_plus(value))
                if stored != unquote_plus(value):
                    pairs[i] = f"{name}={stored}"
        scope["query_string"] = "&".join(pairs).encode("latin-1")


def checked_numbers(scope: Scope, route: Route, method: str) -> None:
    """Refuse (400 naming the parameter) a query parameter typed integer or number whose value reads as a number
    but is not written in ASCII digits: connexion converts them with int() and float(), which also read other
    scripts' digits (an Arabic-Indic one as 1), `1_000` and padding blanks."""
    names = route.number_queries.get(method)
    query = scope.get("query_string", b"")
    if not names or not query:
        return
    for pair in query.decode("latin-1").split("&"):
        name, _, value = (unquote_plus(part) for part in pair.partition("="))
        if name in names and value and not NUMBER.fullmatch(value) and _converts(value):
            raise HttpError(400, f"{name} must be a number written with the digits 0-9, not {value[:40]!r}", name)


def _converts(value: str) -> bool:
    """Whether float() (and so connexion) would read `value` as a number; other text is connexion's to refuse."""
    try:
        float(value)
    except ValueError:
        return False
    return True
