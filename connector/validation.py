"""Request validators: connexion's, hardened against bodies that would otherwise crash them, and faster.

connexion decodes JSON bodies without handling bytes that are not UTF-8, lets unpaired surrogate
escapes (`"\\ud800"`) through into strings that SQLite and every encoder refuse, parses multipart
bodies without checking for a boundary, and never closes the spooled files of the parts it parsed.
Each of those is a 400 here, or a closed file, instead of a 500 or a leak. connexion also copies
each parameter's definition and builds a JSON Schema validator for it on every request; here each
parameter's validator is built once.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from connexion.exceptions import BadRequestProblem
from connexion.utils import is_null, is_nullable
from connexion.validators import VALIDATOR_MAP, JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.types import Scope

from connector.multipart import MultiPartBodyValidator

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class JSONBodyValidator(JSONRequestBodyValidator):
    async def _parse(self, stream: Any, scope: Scope) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        if not raw:
            return None
        try:
            text = raw.decode(self._encoding)
        except (UnicodeDecodeError, LookupError):
            raise BadRequestProblem(detail=f"the request body is not valid {self._encoding} text") from None
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequestProblem(detail=f"the request body is not valid JSON: {exc}") from None
        # Only bodies that spell a surrogate escape can hold one; the full check runs just for those.
        if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
            raise BadRequestProblem(detail="the request body contains an unpaired UTF-16 surrogate escape")
        return body


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
            entry = (param, Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER))
            _PARAMETER_SCHEMAS[id(param)] = entry
        try:
            entry[1].validate(value)
        except ValidationError as exc:
            # connexion's message would quote the whole parameter definition; name the parameter instead.
            return f"{parameter_type} parameter '{param['name']}': {exc.message}"
        return None


VALIDATORS: dict[str, Any] = {
    **VALIDATOR_MAP,
    "parameter": CachedParameterValidator,
    "body": copy.copy(VALIDATOR_MAP["body"]),
}
VALIDATORS["body"]["*/*json"] = JSONBodyValidator
VALIDATORS["body"]["multipart/form-data"] = MultiPartBodyValidator
