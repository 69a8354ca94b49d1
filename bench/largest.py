"""The largest request bodies the API document allows, read from openapi/apiDefinition.swagger.json at run time.

`Builder.body(method, path)` walks the operation's body schema and fills in every property, optional
ones included: each string as long as its `maxLength` (in characters, which is what JSON Schema
counts), each array at its `maxItems`. The hostile filler writes 4-byte UTF-8 characters (CJK
Extension B letters, which every name check accepts), so a string carries the most bytes its limit
allows; the ordinary filler writes short ASCII strings into the same shape (same rows, small values),
for a control database. A string without a `maxLength` gets an equal share of what is left of the
JSON body limit (COURSEWIRE_MAX_JSON_BYTES). If the whole body would pass that limit, the arrays are
shortened (all by the same factor) until it fits; the strings keep their full length.

Every string starts with a random hex token, so values spread over their indexes like the ordinary
writes' values do (uuid-prefixed login names) instead of piling up at one end of them.

Properties that must name something real (ids, logins, dates, an e-mail address, a Url) take the
value the caller's `Overrides` give; enums take their longest value. A body the server still refuses
is a bench error that names the field, so a new rule in the document shows up as a clear failure.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCUMENT = Path(__file__).resolve().parents[1] / "openapi" / "apiDefinition.swagger.json"
MAX_JSON_BYTES = 1024 * 1024  # connector/settings.py's default COURSEWIRE_MAX_JSON_BYTES
# CJK Unified Ideographs Extension B (Unicode 3.1): letters (category Lo), 4 bytes each in UTF-8.
WIDE = (0x20000, 0x2A6D6)
OMIT = object()  # an override that leaves the property out


@dataclass
class Filler:
    """Text of a given length: `wide` 4-byte letters after a hex token, or short ASCII (`short` characters)."""

    rng: random.Random
    wide: bool = True
    short: int = 16

    def token(self) -> str:
        return f"{self.rng.getrandbits(48):012x}"

    def text(self, length: int, *, token: str | None = None) -> str:
        """A string of exactly `length` characters (at most `short` when not wide), starting with a token."""
        head = (token or self.token())[:length]
        if not self.wide:
            return head[: min(length, self.short)]
        span = WIDE[1] - WIDE[0]
        start = self.rng.randrange(span)
        return head + "".join(chr(WIDE[0] + (start + i) % span) for i in range(length - len(head)))

    def ascii(self, length: int) -> str:
        """ASCII letters and digits only (Url path segments), `length` long (or `short` when not wide)."""
        n = length if self.wide else min(length, self.short)
        return (self.token() + "".join(self.rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=n)))[:n]


Override = Callable[["Slot"], Any]  # returns a value, or OMIT


@dataclass(frozen=True)
class Slot:
    """Where a value goes: its path (`Tags[].TagName`), its schema, and the filler in use."""

    path: str
    schema: Mapping[str, Any]
    filler: Filler

    @property
    def max_length(self) -> int | None:
        value = self.schema.get("maxLength")
        return int(value) if value is not None else None


@dataclass
class Builder:
    """Builds bodies for one operation after another from the document; `limits` lists what it read."""

    document: Path = DOCUMENT
    max_json_bytes: int = MAX_JSON_BYTES
    spec: dict[str, Any] = field(init=False)
    limits: dict[str, dict[str, int | None]] = field(default_factory=dict)  # operation -> path -> maxLength

    def __post_init__(self) -> None:
        self.spec = json.loads(self.document.read_text())

    def schema(self, method: str, path: str) -> dict[str, Any]:
        """The body schema of `method path`, with every $ref resolved (raises KeyError if there is none)."""
        operation = self.spec["paths"][path][method.lower()]
        params = operation.get("parameters", [])
        body = next(p for p in params if p.get("in") == "body")
        return self._resolve(body["schema"])

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, dict):
            if "$ref" in schema:
                return self._resolve(self.spec["definitions"][schema["$ref"].rsplit("/", 1)[-1]])
            return {k: self._resolve(v) for k, v in schema.items()}
        if isinstance(schema, list):
            return [self._resolve(v) for v in schema]
        return schema

    def count_max_lengths(self) -> int:
        """How many maxLength keywords the document has (0 before issue 8's limits landed)."""
        return json.dumps(self.spec).count('"maxLength"')

    def body(
        self, method: str, path: str, filler: Filler, overrides: Mapping[str, Override] | None = None
    ) -> dict[str, Any]:
        """The largest body of `method path` under the JSON body limit; see the module docstring."""
        schema = self.schema(method, path)
        seen: dict[str, int | None] = {}
        self.limits[f"{method} {path}"] = seen
        overrides = overrides or {}

        seed = filler.rng.random()

        def attempt(scale: float, unbounded_chars: int) -> tuple[Any, int]:
            filler.rng.seed(seed)
            value = self._value(schema, "", filler, overrides, seen, scale, unbounded_chars)
            return value, len(json.dumps(value, ensure_ascii=False).encode())

        chars = 0
        value, size = attempt(1.0, chars)
        unbounded = [p for p, n in seen.items() if n is None]
        if unbounded and filler.wide:
            chars = max(0, self.max_json_bytes - size - 256) // len(unbounded) // 4
            value, size = attempt(1.0, chars)
        if size > self.max_json_bytes:
            low, high = 0.0, 1.0  # shorten every array by the same factor until the body fits
            for _ in range(20):
                mid = (low + high) / 2
                if attempt(mid, chars)[1] <= self.max_json_bytes:
                    low = mid
                else:
                    high = mid
            value, size = attempt(low, chars)
        filler.rng.seed(seed + 1)  # the next body draws other tokens
        return dict(value)

    def _value(
        self,
        schema: Mapping[str, Any],
        path: str,
        filler: Filler,
        overrides: Mapping[str, Override],
        seen: dict[str, int | None],
        scale: float,
        unbounded_chars: int,
    ) -> Any:
        if path in overrides:
            return overrides[path](Slot(path, schema, filler))
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            out = {}
            for name, sub in schema.get("properties", {}).items():
                value = self._value(
                    sub, f"{path}.{name}" if path else name, filler, overrides, seen, scale, unbounded_chars
                )
                if value is not OMIT:
                    out[name] = value
            return out
        if kind == "array":
            items = schema.get("maxItems")
            count = 1 if items is None else max(1, math.floor(int(items) * scale))
            values = [
                self._value(schema.get("items", {}), f"{path}[]", filler, overrides, seen, scale, unbounded_chars)
                for _ in range(count)
            ]
            return [v for v in values if v is not OMIT]
        if kind == "string":
            if "enum" in schema:
                return max(schema["enum"], key=len)
            limit = schema.get("maxLength")
            seen[path] = None if limit is None else int(limit)
            return filler.text(int(limit) if limit is not None else max(16, unbounded_chars))
        if kind == "boolean":
            return True
        if kind in ("integer", "number"):
            return schema.get("minimum", 0)
        return None
