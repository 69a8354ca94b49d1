"""Handler for FileUpload: multipart upload into the data directory."""

from __future__ import annotations

from typing import Any

from connector import context
from storage import files


def file_upload(FileUploadUrl: str, File: Any) -> dict[str, Any]:
    services = context.services()
    return files.store(
        services.db,
        context.actor(),
        services.settings.files_dir,
        FileUploadUrl,
        File.filename,
        File.mimetype or None,
        File.stream,
        services.settings.max_upload_bytes,
    )
