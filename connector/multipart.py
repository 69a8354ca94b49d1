"""The multipart/form-data body validator of FileUpload, hardened against malformed bodies."""

from __future__ import annotations

from typing import Any

from connexion.exceptions import BadRequestProblem, UnsupportedMediaTypeProblem
from connexion.validators import MultiPartFormDataValidator
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Scope


class _ClosingMultiPartParser(MultiPartParser):
    """Closes each uploaded part once parsed: the validator only looks at field names and types."""

    async def parse(self) -> Any:
        form = await super().parse()
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                value.file.close()
        return form


class MultiPartBodyValidator(MultiPartFormDataValidator):
    @property
    def _form_parser_cls(self) -> type[MultiPartParser]:
        return _ClosingMultiPartParser

    async def _parse(self, stream: Any, scope: Scope) -> Any:
        content_type = Headers(scope=scope).get("content-type")
        if not content_type:
            raise UnsupportedMediaTypeProblem(detail="send the file as multipart/form-data (no Content-Type was given)")
        if "boundary=" not in content_type.lower():
            raise BadRequestProblem(detail="send the file as multipart/form-data with a boundary (Content-Type)")
        try:
            return await super()._parse(stream, scope)
        except MultiPartException as exc:
            raise BadRequestProblem(detail=f"the multipart/form-data body is malformed: {exc.message}") from None
