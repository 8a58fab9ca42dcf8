"""Where artifacts live: the one module that loads a stage's inputs and stores its outputs.

Most artifacts are MessagePack of their declared type in the ``artifacts`` table,
keyed by (document, artifact name): a custom stage's artifacts need no migration. The
four the API and search read have tables of their own: the upload (``documents`` and
``document_blobs``, written at accept), the validation (columns of ``documents``), the
text (``document_texts``) and the searchable chunks (``chunks``, whose triggers keep the
lexical index). Every store *replaces* what an earlier run of the stage wrote, never
appends: a stage re-run after a crash leaves exactly the rows one run leaves.

Statements are built once per process: building and cache-keying a SQLAlchemy
statement on every call showed up as a quarter of a worker's time (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from typing import Any, Final, Protocol

import msgspec
from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as upsert

from pipeline.db.models import Chunk, Document, DocumentBlob, DocumentText, StoredArtifact
from pipeline.errors import PermanentError
from pipeline.processing.extract import Extracted, PageSpan
from pipeline.processing.kinds import DocumentKind
from pipeline.processing.validate import Validation
from pipeline.stages.artifacts import (
    SEARCHABLE,
    TEXT,
    UPLOAD,
    VALIDATION,
    IndexRow,
    SearchableChunks,
    Upload,
)
from pipeline.stages.pipeline import Pipeline
from pipeline.stages.spec import Artifact, Inputs, Outputs, StageSpec


class MissingInput(PermanentError):
    """A stage's input is not in Postgres (the stage that writes it never stored it)."""


class InvalidOutputs(PermanentError):
    """A stage returned other artifacts than it declares, or a value of the wrong type."""


class ArtifactStore(Protocol):
    def load(self, conn: Connection, document_id: uuid.UUID) -> Any: ...

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, stage: str, value: Any
    ) -> None: ...


# -- the upload ------------------------------------------------------------------------

_UPLOAD = (
    select(Document.filename, Document.declared_content_type, DocumentBlob.data)
    .join(DocumentBlob, DocumentBlob.document_id == Document.id)
    .where(Document.id == bindparam("document_id"))
)


class UploadStore:
    """The client's bytes, written once at accept (``ingestion``); stages only read them."""

    def load(self, conn: Connection, document_id: uuid.UUID) -> Upload:
        row = conn.execute(_UPLOAD, {"document_id": document_id}).one_or_none()
        if row is None:
            raise MissingInput("the uploaded bytes of this document are missing")
        return Upload(
            data=row.data, filename=row.filename, declared_content_type=row.declared_content_type
        )

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, stage: str, value: Any
    ) -> None:
        raise InvalidOutputs(f"stage {stage!r} may not write the upload")


# -- the validation --------------------------------------------------------------------

_VALIDATION = select(
    Document.kind, Document.detected_content_type, Document.encoding, Document.sha256,
    Document.size_bytes,
).where(Document.id == bindparam("document_id"))  # fmt: skip
_VALIDATED = (
    update(Document)
    .where(Document.id == bindparam("document_id"))
    .values(
        kind=bindparam("kind_"),
        detected_content_type=bindparam("mime_"),
        encoding=bindparam("encoding_"),
        updated_at=func.now(),
    )
)
"""SQLAlchemy reserves the column names for its own SET parameters, hence the
trailing underscores."""


class ValidationStore:
    def load(self, conn: Connection, document_id: uuid.UUID) -> Validation:
        row = conn.execute(_VALIDATION, {"document_id": document_id}).one_or_none()
        if row is None or row.kind is None:
            raise MissingInput("the document has not been validated")
        kind: DocumentKind = row.kind
        return Validation(
            kind=kind,
            mime=row.detected_content_type or "",
            encoding=row.encoding,
            sha256=row.sha256,
            size=row.size_bytes,
        )

    def store(
        self,
        conn: Connection,
        document_id: uuid.UUID,
        generation: int,
        stage: str,
        value: Validation,
    ) -> None:
        conn.execute(
            _VALIDATED,
            {
                "document_id": document_id,
                "kind_": value.kind,
                "mime_": value.mime,
                "encoding_": value.encoding,
            },
        )


# -- the text --------------------------------------------------------------------------

_TEXT = select(DocumentText.text, DocumentText.pages).where(
    DocumentText.document_id == bindparam("document_id")
)
_NEW_TEXT = upsert(DocumentText)
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


class TextStore:
    def load(self, conn: Connection, document_id: uuid.UUID) -> Extracted:
        row = conn.execute(_TEXT, {"document_id": document_id}).one_or_none()
        if row is None:
            raise MissingInput("the extracted text of this document is missing")
        return Extracted(text=row.text, pages=msgspec.convert(row.pages, list[PageSpan]))

    def store(
        self,
        conn: Connection,
        document_id: uuid.UUID,
        generation: int,
        stage: str,
        value: Extracted,
    ) -> None:
        conn.execute(
            _REPLACE_TEXT,
            {
                "document_id": document_id,
                "generation": generation,
                "text": value.text,
                "pages": [msgspec.to_builtins(page) for page in value.pages],
                "char_count": len(value.text),
            },
        )


# -- the searchable chunks -------------------------------------------------------------

_CHUNKS = (
    select(
        Chunk.ordinal, Chunk.text, Chunk.start_offset, Chunk.end_offset, Chunk.token_count,
        Chunk.page, Chunk.embedding, Chunk.embedding_model,
    )
    .where(Chunk.document_id == bindparam("document_id"))
    .order_by(Chunk.ordinal)
)  # fmt: skip
_DELETE_CHUNKS = delete(Chunk).where(Chunk.document_id == bindparam("document_id"))
_INSERT_CHUNKS = insert(Chunk).inline()  # inline: no RETURNING of the new ids, which nothing reads
_TENANT = select(Document.tenant).where(Document.id == bindparam("document_id"))


class SearchableStore:
    def load(self, conn: Connection, document_id: uuid.UUID) -> SearchableChunks:
        rows = conn.execute(_CHUNKS, {"document_id": document_id})
        return SearchableChunks(rows=[IndexRow(**row._asdict()) for row in rows])

    def store(
        self,
        conn: Connection,
        document_id: uuid.UUID,
        generation: int,
        stage: str,
        value: SearchableChunks,
    ) -> None:
        # The search triggers on ``chunks`` drop the old chunks' postings and totals and
        # add the new ones' in this same transaction.
        conn.execute(_DELETE_CHUNKS, {"document_id": document_id})
        if value.rows:
            tenant = conn.execute(_TENANT, {"document_id": document_id}).scalar_one()
            conn.execute(
                _INSERT_CHUNKS,
                [
                    {"document_id": document_id, "tenant": tenant, **msgspec.structs.asdict(row)}
                    for row in value.rows
                ],
            )


# -- every other artifact --------------------------------------------------------------

_PACKED = select(StoredArtifact.payload).where(
    StoredArtifact.document_id == bindparam("document_id"),
    StoredArtifact.name == bindparam("name"),
)
_NEW_PACKED = upsert(StoredArtifact)
_REPLACE_PACKED = _NEW_PACKED.on_conflict_do_update(
    index_elements=[StoredArtifact.document_id, StoredArtifact.name],
    set_={
        "stage": _NEW_PACKED.excluded.stage,
        "generation": _NEW_PACKED.excluded.generation,
        "payload": _NEW_PACKED.excluded.payload,
        "created_at": _NEW_PACKED.excluded.created_at,
    },
)
_ENCODER: Final = msgspec.msgpack.Encoder()


class PackedStore:
    """MessagePack of the artifact's type in the ``artifacts`` table."""

    def __init__(self, artifact: Artifact[Any]) -> None:
        self.name = artifact.name
        self.decoder = msgspec.msgpack.Decoder(artifact.type)

    def load(self, conn: Connection, document_id: uuid.UUID) -> Any:
        found = conn.execute(_PACKED, {"document_id": document_id, "name": self.name})
        payload = found.scalar_one_or_none()
        if payload is None:
            raise MissingInput(f"the {self.name!r} artifact of this document is missing")
        return self.decoder.decode(payload)

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, stage: str, value: Any
    ) -> None:
        conn.execute(
            _REPLACE_PACKED,
            {
                "document_id": document_id,
                "name": self.name,
                "stage": stage,
                "generation": generation,
                "payload": _ENCODER.encode(value),
            },
        )


TABLES: Final[Mapping[str, ArtifactStore]] = {
    UPLOAD.name: UploadStore(),
    VALIDATION.name: ValidationStore(),
    TEXT.name: TextStore(),
    SEARCHABLE.name: SearchableStore(),
}
"""The artifacts with tables of their own; every other one is packed."""


class Artifacts:
    """Loads and stores the artifacts of one pipeline definition's stages."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.stores: dict[str, ArtifactStore] = {}
        self.types: dict[str, type[Any]] = {}
        for artifact in (*pipeline.sources, *(a for spec in pipeline for a in spec.writes)):
            self.stores[artifact.name] = TABLES.get(artifact.name) or PackedStore(artifact)
            self.types[artifact.name] = artifact.type

    def load(self, conn: Connection, document_id: uuid.UUID, spec: StageSpec) -> Inputs:
        """``spec``'s inputs, each loaded (on ``conn``) when the stage first reads it."""
        return Inputs(
            loaders={
                artifact.name: functools.partial(self.stores[artifact.name].load, conn, document_id)
                for artifact in spec.reads
            }
        )

    def check(self, spec: StageSpec, outputs: object) -> Outputs:
        """The outputs, if they are exactly what ``spec`` declares it writes."""
        if not isinstance(outputs, Outputs):
            raise InvalidOutputs(
                f"stage {spec.name!r} returned a {type(outputs).__name__}, not Outputs"
            )
        declared = sorted(artifact.name for artifact in spec.writes)
        if sorted(outputs.names()) != declared:
            raise InvalidOutputs(
                f"stage {spec.name!r} returned {sorted(outputs.names())}; it declares it "
                f"writes {declared}"
            )
        for artifact in spec.writes:
            value = outputs.get(artifact.name)
            if not isinstance(value, artifact.type):
                raise InvalidOutputs(
                    f"stage {spec.name!r} returned a {type(value).__name__} as "
                    f"{artifact.name!r}, which is a {artifact.type.__name__}"
                )
        return outputs

    def store(
        self,
        conn: Connection,
        document_id: uuid.UUID,
        generation: int,
        spec: StageSpec,
        outputs: Outputs,
        inputs: Inputs | None = None,
    ) -> None:
        """Store what ``spec`` wrote; an artifact it revises and gave back unchanged (the
        very object it read from ``inputs``) is already stored, and is not written again."""
        for artifact in spec.writes:
            value = outputs.get(artifact.name)
            if inputs is not None and value is not None and inputs.loaded(artifact.name) is value:
                continue
            self.stores[artifact.name].store(conn, document_id, generation, spec.name, value)
