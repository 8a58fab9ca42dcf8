"""Reading an upload from a request: multipart field ``file`` or a raw body.

Everything that makes a request unacceptable is decided here, before anything is
written: a missing file, more than one, an empty one, one over the size limit, or a
declared type the pipeline can never read.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile

from pipeline.filenames import sanitise_filename
from pipeline.http.problems import Problem

MULTIPART: Final = "multipart/form-data"

# Declared types that could hold a supported document. The real type is always
# sniffed from the bytes; this list only turns away uploads that say outright they
# are something else (another kind of image, a video, an archive).
ACCEPTABLE_TYPES: Final = frozenset(
    {
        "application/pdf",
        "application/x-pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/xhtml+xml",
        "application/xml",
        "application/json",
        "application/octet-stream",
        "application/x-markdown",
        "binary/octet-stream",
        # Images, read by the ocr stage.
        "image/png",
        "image/jpeg",
        "image/tiff",
    }
)


class RawUpload(msgspec.Struct, frozen=True):
    filename: str
    declared_type: str | None
    data: bytes


async def read_upload(
    request: Request[Any, Any, Any], filename: str | None, max_bytes: int
) -> RawUpload:
    media_type = request.content_type[0].lower() if request.headers.get("content-type") else ""
    if media_type == MULTIPART:
        form = await request.form()
        parts = form.getall("file", [])
        if len(parts) > 1:
            # Taking one and dropping the rest would store a file the client may not
            # have meant, and say nothing about the others.
            raise Problem(
                422,
                f"the multipart body has {len(parts)} parts named 'file'; "
                "send exactly one file per upload",
            )
        upload = parts[0] if parts else None
        if not isinstance(upload, UploadFile):
            raise Problem(422, "the multipart body has no file in a field named 'file'")
        data = await upload.read()
        declared = _normalise_type(upload.content_type)
        name: str | None = filename or upload.filename
    else:
        data = await request.body()
        declared = _normalise_type(media_type)
        name = filename
    if len(data) > max_bytes:
        raise Problem(413, f"the file is {len(data)} bytes; the limit is {max_bytes} bytes")
    if declared is not None and not acceptable(declared):
        raise Problem(
            415,
            f"declared type {declared!r} is not a supported document type "
            "(PDF, DOCX, HTML, Markdown, plain text, or a PNG, JPEG or TIFF image)",
        )
    if not data:
        raise Problem(422, "the uploaded file is empty")
    # The one place a client's file name enters the pipeline: sanitised here, once.
    return RawUpload(filename=sanitise_filename(name), declared_type=declared, data=data)


def acceptable(declared: str) -> bool:
    return declared.startswith("text/") or declared in ACCEPTABLE_TYPES


def _normalise_type(value: str | None) -> str | None:
    if not value:
        return None
    media_type = value.split(";", 1)[0].strip().lower()
    return media_type or None
