"""Multipart bodies read with a part-header limit that fits the file-name promise.

Litestar's own reader uses the ``multipart`` parser's default limit of 4,224 bytes
per part-header line and answers anything longer with ``400 Request Entity Too
Large``. A file name is a parameter of the ``Content-Disposition`` line, so a name of
a few thousand bytes (which the API promises to cut to 255 bytes, see
:func:`pipeline.filenames.sanitise_filename`) was refused before anyone could cut it.

:class:`PipelineRequest` reads multipart bodies exactly as Litestar does (same parser,
same parts, same form structure), with :data:`MAX_PART_HEADER_BYTES` per header line;
a longer line is a ``413`` that says which limit it broke. Everything else about the
request is Litestar's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncGenerator
from typing import Any, Final, cast

from litestar import Request
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, ValidationException
from litestar.types import Empty
from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
)

from pipeline.http.problems import Problem

MAX_PART_HEADER_BYTES: Final = 32 * 1024
"""Longest header line of one part: room for a file name of thousands of bytes (even
percent-encoded), and half of the multipart allowance the body limit adds to the
upload limit (``pipeline.http.app.MULTIPART_OVERHEAD``)."""


class PipelineRequest(Request[Any, Any, Any]):
    """Litestar's request, reading multipart forms with :func:`parse_multipart`."""

    async def form(self) -> FormMultiDict:
        content_type, options = self.content_type
        if content_type != RequestEncodingType.MULTI_PART:
            return await super().form()
        if self._form is Empty:
            form_data = self._connection_state.form
            if form_data is Empty:
                boundary = options.get("boundary")
                if boundary is None:
                    raise ValidationException("multipart boundary missing in Content-Type")
                form_data = await parse_multipart(
                    self.stream(), boundary.encode(), self.app.multipart_form_part_limit
                )
                self._connection_state.form = form_data  # shared like Litestar's own
            self._form = FormMultiDict.from_form_data(cast("dict[str, Any]", form_data))
        return self._form


async def parse_multipart(
    stream: AsyncGenerator[bytes, None], boundary: bytes, part_limit: int
) -> dict[str, Any]:
    """Fields of a multipart body: a str per text part, an UploadFile per file part,
    a list where a name repeats (the shape ``FormMultiDict.from_form_data`` takes).

    Raises:
        Problem: ``413`` for a part-header line or a number of parts over the limits.
        ClientException: ``400`` for a body that is not valid multipart.
    """
    fields: defaultdict[str, list[Any]] = defaultdict(list)
    data: UploadFile | bytearray = bytearray()
    segment: MultipartSegment | None = None
    first = b""
    async for first in stream:
        if first:
            break
    if not first:
        return {}  # an empty body has no fields (and is not malformed), as in Litestar
    try:
        with PushMultipartParser(
            boundary, max_header_size=MAX_PART_HEADER_BYTES, max_segment_count=part_limit
        ) as parser:
            async for chunk in _chunks(first, stream):
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        segment = event
                        if segment.filename:
                            data = UploadFile(
                                content_type=segment.content_type or "text/plain",
                                filename=segment.filename,
                                headers=dict(segment.headerlist),
                            )
                    elif event:
                        if isinstance(data, UploadFile):
                            await data.write(event)
                        else:
                            data.extend(event)
                    else:  # the end of a part
                        if segment is None:
                            raise ClientException("Unexpected eof in multipart/form-data")
                        if isinstance(data, UploadFile):
                            await data.seek(0)
                            fields[segment.name].append(data)
                        else:
                            fields[segment.name].append(data.decode(segment.charset or "utf-8"))
                        data, segment = bytearray(), None
                if parser.closed:
                    break
    except (ParserError, ParserLimitReached, ClientException) as error:
        if isinstance(data, UploadFile):
            await data.close()
        await _close_files(fields)
        if isinstance(error, ClientException):
            raise
        if isinstance(error, ParserError):
            raise ClientException("Invalid multipart/form-data") from error
        raise _limit_problem(str(error), part_limit) from None
    return {name: values if len(values) > 1 else values[0] for name, values in fields.items()}


async def _chunks(first: bytes, stream: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """The body's chunks, then one empty chunk: it tells the parser the body ended."""
    yield first
    async for chunk in stream:
        if chunk:
            yield chunk
    yield b""


def _limit_problem(message: str, part_limit: int) -> Problem:
    if "count" in message and "header count" not in message:
        return Problem(413, f"the multipart body has more than {part_limit} parts")
    return Problem(
        413,
        f"a multipart part header is longer than {MAX_PART_HEADER_BYTES} bytes, or a part "
        "has too many header lines (a file name that long? names are cut to 255 bytes, "
        "but must fit in the header)",
    )


async def _close_files(fields: dict[str, list[Any]]) -> None:
    for values in fields.values():
        for value in values:
            if isinstance(value, UploadFile):
                await value.close()
