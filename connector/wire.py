"""How action responses are written on the wire: JSON without a single `null`.

Power Apps shows an empty data table when any property of a connector response is `null`, and
Swagger 2.0 has no standard way to declare one, so a property without a value is left out instead
(arrays are `[]`, never null). This is the one place every JSON body an operation returns is
serialized (connexion calls `JSONIFIER.dumps` for each handler's return value, nested `$expand`
values included), so no property added later can carry a null. "Send an HTTP request" answers with
the body its inner request got from this same app, so it carries none either. Error bodies
(connector.errors.body) are built without nulls: `target` is left out when no one field is at fault.
"""

from __future__ import annotations

import json
from typing import Any

from connexion.jsonifier import Jsonifier

from webhooks.payloads import without_nulls


class WireJson:
    """The `json` module as connexion's Jsonifier uses it (`dumps`, `loads`), leaving nulls out of what it writes.

    Leaving them out costs about a third of `json.dumps` itself: ~3 ms on a 1,000-row page of
    enrollments on the 2-core VM (bench/wire_nulls.py), against ~8 ms to encode it.
    """

    @staticmethod
    def dumps(value: Any, **kwargs: Any) -> str:
        """`value` as JSON text, every object member whose value is None (and every None in an array) left out."""
        return json.dumps(without_nulls(value), **kwargs)

    @staticmethod
    def loads(text: str | bytes) -> Any:
        """Parse JSON text (request bodies): nulls a client sends mean what the operation says they mean."""
        return json.loads(text)


JSONIFIER = Jsonifier(WireJson, separators=(",", ":"), ensure_ascii=False)
