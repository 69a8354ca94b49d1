"""Request validators: connexion's, hardened against bodies that would otherwise crash them, and faster.

connexion decodes JSON bodies without handling bytes that are not UTF-8, lets unpaired surrogate
escapes (`"\\ud800"`) through into strings that SQLite and every encoder refuse, parses multipart
bodies without checking for a boundary, and never closes the spooled files of the parts it parsed.
Each of those is a 400 here, or a closed file, instead of a 500 or a leak. connexion also copies
each parameter's definition and builds a JSON Schema validator for it on every request; here each
parameter's validator is built once.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import json
import re
from collections.abc import Iterable, MutableMapping
from typing import Any

from connexion.exceptions import BadRequestProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.utils import is_null, is_nullable
from connexion.validators import VALIDATOR_MAP, JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from jsonschema.exceptions import best_match
from starlette.types import Receive, Scope

from connector import bodies
from connector.bodies import FORMAT_CHECKER, suggestion
from connector.multipart import MultiPartBodyValidator
from storage import ids
from storage.errors import excerpt
from storage.timeutil import windows_ids_for

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# JSON bodies nest at most this deep (objects and arrays) and hold at most this many values (array items and
# object members, nested ones included); past either, a 400 before the body is parsed. No operation's body
# comes near: the largest (RecordAttendance, CreateCourse with every list full) hold a few thousand.
MAX_DEPTH = 64
MAX_VALUES = 10_000
# Bodies larger than this are parsed and validated on a worker thread, so a big body never holds the
# event loop (and with it every other request of the process) for the milliseconds it takes.
OFFLOAD_BYTES = 32 * 1024


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def pointer(path: Iterable[str | int]) -> str:
    """A location inside a body as targets name it: `Days[0].StartDate`, `Room.Title`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# A JSON string (RFC 8259 §7), unrolled so the scan stays linear.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_PLAIN_STRING = re.compile(rb'"[^"]*"')  # when the text has no backslash at all: the common case, 10x faster
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def shape_problem(raw: bytes, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> str | None:
    """Why a JSON text is too deep or holds too many values to parse, or None; judged on the bytes, before
    any object is built, in a few passes of C-speed scans.

    Strings are blanked out first; the brackets left are peeled one level per pass (at most `max_depth` + 1
    passes); values are counted as the commas and brackets outside strings. Malformed text is left for the
    parser to report.
    """
    skeleton = (_JSON_STRING if b"\\" in raw else _PLAIN_STRING).sub(b"0", raw)
    values = skeleton.count(b",") + skeleton.count(b"[") + skeleton.count(b"{")
    if values > max_values:
        return f"the request body holds more than {max_values:,} values (array items and object members)"
    brackets = skeleton.translate(None, _NOT_BRACKETS)  # at most `max_values` + 1 of them by now
    depth = 0
    while brackets:
        peeled = _EMPTY_PAIR.sub(b"", brackets)
        if peeled == brackets:
            break  # unbalanced: the parser says where
        depth += 1
        if depth > max_depth:
            return f"the request body nests arrays or objects deeper than {max_depth} levels"
        brackets = peeled
    return None


def _not_one_of(error: ValidationError, value: object, allowed: list[str]) -> str:
    """An enum refusal: the whole list when it is short; otherwise its size and the closest values, so a long
    list (the 140 Windows time zone ids) is never cut mid-name. An IANA zone sent as a TimeZone is answered
    with the Windows ids that mean it."""
    if len(allowed) <= 12:
        return f"{excerpt(value)} is not one of {', '.join(allowed)}"
    text = value if isinstance(value, str) else ""
    hint = windows_ids_for(text) if error.path and error.path[-1] == "TimeZone" and "/" in text else []
    hint = hint or [a for a in allowed if a.lower() == text.lower()]
    hint = hint or difflib.get_close_matches(text, allowed, n=3, cutoff=0.4)
    shown = f"; did you mean {' or '.join(map(repr, hint))}?" if hint else ""
    where = " (Windows time zone ids, as LMS365 uses)" if error.path and error.path[-1] == "TimeZone" else ""
    return f"{excerpt(value)} is not one of the {len(allowed)} values allowed{where}{shown}"


def describe(error: ValidationError) -> str:
    """What is wrong with a value, in words, quoting at most an excerpt of it (never the whole value)."""
    kind, limit, value = error.validator, error.validator_value, error.instance
    if kind == "maxLength":
        return f"is {len(value):,} characters long; at most {limit} are allowed"
    if kind == "minLength":
        return "must not be empty" if limit == 1 else f"must be at least {limit} characters long"
    if kind == "maxItems":
        return f"has {len(value):,} items; at most {limit} are allowed"
    if kind == "minItems":
        return f"must have at least {limit} items"
    if kind == "maxProperties":
        return f"has {len(value):,} properties; at most {limit} are allowed"
    if kind == "type":
        wanted = " or ".join(limit) if isinstance(limit, list) else limit
        return f"{excerpt(value)} is not of type '{wanted}'"
    if kind == "enum":
        return _not_one_of(error, value, [str(x) for x in limit])
    if kind == "required":
        missing = next((name for name in limit if name not in value), limit[0])
        return f"'{missing}' is a required property"
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        extra = sorted(set(value) - set(known))
        if not extra:
            return "has a property this operation does not define"
        more = f" (and {len(extra) - 1} more: {', '.join(map(excerpt, extra[1:4]))})" if len(extra) > 1 else ""
        return (
            f"{excerpt(extra[0])} is not a property this operation defines{suggestion(extra[0], known)};"
            f" leave it out{more}"
        )
    if kind == "format":
        return f"{excerpt(value)} is not a valid {limit}"
    if kind == "pattern":
        return f"{excerpt(value)} does not match the pattern {limit}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        # jsonschema's own words here quote a number, which is short ("0 is less than the minimum of 1").
        return str(error.message) if len(str(value)) <= 60 else f"{excerpt(value)} is out of range ({kind} {limit})"
    return f"{excerpt(value)} does not satisfy {kind} {excerpt(limit)}"


def _target(error: ValidationError) -> str:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next((name for name in error.validator_value if name not in error.instance), None)
        if missing is not None:
            path.append(missing)
    elif error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        if extra and len(extra[0]) <= 60:
            path.append(extra[0])
    return pointer(path)


class BodyProblem(BadRequestProblem):
    """A 400 about a JSON body, naming the field at fault (`target`) apart from the words."""

    def __init__(self, detail: str, target: str | None = None) -> None:
        super().__init__(detail=detail)
        self.target = target


def parse_body(raw: bytes, encoding: str) -> Any:
    """Decode and parse a JSON body; refuse text that is not `encoding`, nesting deeper than MAX_DEPTH or more
    than MAX_VALUES values (before parsing), malformed JSON and unpaired surrogate escapes, each as a BodyProblem."""
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        raise BodyProblem(f"the request body is not valid {encoding} text") from None
    ascii_compatible = encoding.lower().replace("-", "").replace("_", "") in ("utf8", "ascii", "latin1", "iso88591")
    problem = shape_problem(raw if ascii_compatible else text.encode("utf-8", "surrogatepass"))
    if problem:
        raise BodyProblem(problem)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BodyProblem(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # unbalanced brackets the shape check leaves to the parser
        raise BodyProblem(f"the request body nests arrays or objects deeper than {MAX_DEPTH} levels") from None
    # Only bodies that spell a surrogate escape can hold one; the full check runs just for those.
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise BodyProblem("the request body contains an unpaired UTF-16 surrogate escape")
    return body


# Body schemas live as long as the app's specification, like parameter definitions below.
_BODY_SCHEMAS: dict[int, tuple[dict[str, Any], Any]] = {}


def _body_validator(schema: dict[str, Any]) -> Any:
    entry = _BODY_SCHEMAS.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = (schema, Draft4RequestValidator(schema, format_checker=FORMAT_CHECKER))
        _BODY_SCHEMAS[id(schema)] = entry
    return entry[1]


class JSONBodyValidator(JSONRequestBodyValidator):
    """connexion's JSON body validator, with clear messages and targets, bounded nesting, a validator built
    once per schema, and large bodies parsed and validated off the event loop.

    Bodies are held to connector.bodies' rules of their operation: a property the operation does not define is
    a 400 naming it; GUID properties are passed on in their stored form; a PATCH may carry back read-only
    properties of the entity, which are dropped (its `Id` must name the entity of the path). When the body
    changed, the handler receives the changed body.
    """

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        messages: list[MutableMapping[str, Any]] = []
        more = True
        while more:
            message = await receive()
            messages.append(message)
            more = message.get("more_body", False)
        raw = b"".join(m.get("body", b"") for m in messages)
        if len(raw) > OFFLOAD_BYTES:
            rewritten = await asyncio.to_thread(self._check, raw, scope)
        else:
            rewritten = self._check(raw, scope)
        if rewritten is not None:
            messages = [{"type": "http.request", "body": rewritten, "more_body": False}]
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [
                (b"content-length", str(len(rewritten)).encode())
            ]
        return self._insert_messages(receive, messages=messages), scope

    def _check(self, raw: bytes, scope: Scope | None = None) -> bytes | None:
        """Parse and validate the body; return it re-encoded when normalizing changed it, else None."""
        body = parse_body(raw, self._encoding) if raw.strip() else None
        if body is None:
            if self._required:
                raise BodyProblem("the request body is required")
            return None
        operation_id = ((scope or {}).get("extensions") or {}).get("connexion_routing", {}).get("operation_id")
        rules = bodies.rules(operation_id) if operation_id else None
        if rules is None:
            self._validate(body)
            return None
        changed = rules.normalize(body)
        self._validate(body, rules.validator)
        if rules.key_checked and isinstance(body, dict) and "Id" in body:
            _check_key(body["Id"], scope or {})
        changed = rules.drop_read_only(body) or changed
        if not changed:
            return None
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(self._encoding)

    def _validate(self, body: Any, validator: Any = None) -> None:
        if not self._nullable and body is None:
            raise BodyProblem("the request body must not be empty")
        errors = list((validator or _body_validator(self._schema)).iter_errors(body))
        if errors:
            # A property the operation does not define says most: a misspelt required one is also "missing".
            exc = next((e for e in errors if e.validator == "additionalProperties"), None) or best_match(errors)
            target = _target(exc)
            raise BodyProblem(f"{target or 'the request body'}: {describe(exc)}", target or None)


def _check_key(sent: Any, scope: Scope) -> None:
    """A PATCH body's `Id` (carried back from a GET) must name the entity of the path, in any spelling of it."""
    keys = list((scope.get("path_params") or {}).values())
    if len(keys) != 1:
        return
    expected = ids.canonical_key(str(keys[0]))
    if not isinstance(sent, str) or ids.canonical(sent) != expected:
        raise BodyProblem(
            f"Id: {excerpt(sent)} is not the id of the entity this request updates ({expected}); Id cannot change:"
            " leave it out, or send it as read",
            "Id",
        )


# Parameter definitions live as long as the app's specification: id() is stable while the entry
# holds the definition itself.
_PARAMETER_SCHEMAS: dict[int, tuple[dict[str, Any], Draft4Validator]] = {}


class CachedParameterValidator(ParameterValidator):
    @staticmethod
    def validate_parameter(
        parameter_type: str, value: Any, param: dict[str, Any], param_name: str | None = None
    ) -> str | None:
        if value is None or (is_nullable(param) and is_null(value)):
            return ParameterValidator.validate_parameter(parameter_type, value, param, param_name)  # type: ignore[no-any-return]
        entry = _PARAMETER_SCHEMAS.get(id(param))
        if entry is None or entry[0] is not param:
            schema = param.get("schema", param)
            entry = (param, Draft4Validator(schema, format_checker=FORMAT_CHECKER))
            _PARAMETER_SCHEMAS[id(param)] = entry
        try:
            entry[1].validate(value)
        except ValidationError as exc:
            # connexion's message would quote the whole parameter definition; name the parameter instead.
            return f"{parameter_type} parameter '{param['name']}': {describe(exc)}"
        return None


VALIDATORS: dict[str, Any] = {
    **VALIDATOR_MAP,
    "parameter": CachedParameterValidator,
    "body": copy.copy(VALIDATOR_MAP["body"]),
}
VALIDATORS["body"]["*/*json"] = JSONBodyValidator
VALIDATORS["body"]["multipart/form-data"] = MultiPartBodyValidator
