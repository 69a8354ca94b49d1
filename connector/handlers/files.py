"""Handler for FileUpload: store the File part connector.multipart streamed to disk."""

from __future__ import annotations

from typing import Any

from connector import context, multipart
from storage import files
from storage.errors import Invalid


def file_upload(FileUploadUrl: str) -> dict[str, Any]:
    """Store the uploaded file under FileUploadUrl and return its FileInfo.

    The body never reaches Flask: connector.multipart parsed it while it arrived and left the File part,
    already on disk, in the request scope. Uploaders who are not administrators are held to
    COURSEWIRE_UPLOAD_QUOTA_BYTES, everyone to COURSEWIRE_MIN_FREE_BYTES of free disk. Errors as
    storage.files.store raises them (507 InsufficientStorage past either).
    """
    received = multipart.received_file(context.scope())
    if received is None:
        raise Invalid("send the file as a multipart/form-data part named File", target="File")
    try:
        services = context.services()
        return files.store(
            services.db,
            context.actor(),
            services.settings.files_dir,
            FileUploadUrl,
            received.file_name,
            received.content_type,
            received.upload,
            quota_bytes=services.settings.upload_quota_bytes,
            min_free_bytes=services.settings.min_free_bytes,
        )
    finally:
        received.upload.discard()
