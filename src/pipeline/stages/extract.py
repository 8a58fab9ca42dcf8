"""extract: text from the document's bytes, by the kind validate detected."""

from __future__ import annotations

import uuid
from typing import Any, Final, cast

import msgspec
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects.postgresql import insert

from pipeline.db.models import Document, DocumentText
from pipeline.engine.artifacts import MissingInput, load_blob
from pipeline.engine.sandbox import Sandbox, never_returns
from pipeline.faults import Faults
from pipeline.processing.extract import Extracted, extract
from pipeline.processing.kinds import DocumentKind
from pipeline.processing.limits import ExtractLimits

SANDBOXED: Final[frozenset[DocumentKind]] = frozenset({"pdf", "docx", "html"})
"""Kinds parsed by C libraries on untrusted input: these run in the sandbox."""


_KIND = select(Document.kind, Document.encoding, Document.filename).where(
    Document.id == bindparam("document_id")
)
_NEW_TEXT = insert(DocumentText)
_REPLACE_TEXT = _NEW_TEXT.on_conflict_do_update(
    index_elements=[DocumentText.document_id],
    set_={
        "generation": _NEW_TEXT.excluded.generation,
        "text": _NEW_TEXT.excluded.text,
        "pages": _NEW_TEXT.excluded.pages,
        "char_count": _NEW_TEXT.excluded.char_count,
        "created_at": _NEW_TEXT.excluded.created_at,
    },
)
"""Statements built once per process (see ``storage.py``)."""


class ExtractInput(msgspec.Struct, frozen=True):
    data: bytes
    kind: DocumentKind
    encoding: str | None
    hang: bool = False
    """Fault injection: make the sandboxed parser never return."""


class ExtractHandler:
    def __init__(self, sandbox: Sandbox | None, faults: Faults, limits: ExtractLimits) -> None:
        self.sandbox = sandbox
        self.faults = faults
        self.limits = limits

    def load(self, conn: Connection, document_id: uuid.UUID) -> ExtractInput:
        row = conn.execute(_KIND, {"document_id": document_id}).one_or_none()
        if row is None or row.kind is None:
            raise MissingInput("the document has not been validated")
        data = load_blob(conn, document_id)
        hang = bool(self.faults) and self.faults.hang_parser("extract", row.filename)
        kind = cast(DocumentKind, row.kind)
        return ExtractInput(data=data, kind=kind, encoding=row.encoding, hang=hang)

    def compute(self, data: ExtractInput) -> Extracted:
        if self.sandbox is None or data.kind not in SANDBOXED:
            return extract(data.data, data.kind, data.encoding, self.limits)
        if data.hang:
            self.sandbox.run(never_returns, data.data)
        # The limits travel with the call: they are checked in the child, so an
        # oversized result is refused there and never pickled back.
        return self.sandbox.run(extract, data.data, data.kind, data.encoding, self.limits)

    def summarize(self, result: Extracted) -> dict[str, Any]:
        return {"characters": len(result.text), "pages": len(result.pages)}

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, result: Extracted
    ) -> None:
        pages = [msgspec.to_builtins(page) for page in result.pages]
        conn.execute(
            _REPLACE_TEXT,
            {
                "document_id": document_id,
                "generation": generation,
                "text": result.text,
                "pages": pages,
                "char_count": len(result.text),
            },
        )
