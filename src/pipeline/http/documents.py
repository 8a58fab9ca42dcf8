"""/documents: upload, status, listing, chunks, delete, and replace by the client's key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, delete, get, post, put, route
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.params import HeaderParameter, PathParameter, QueryParameter

from pipeline.access.keys import Principal
from pipeline.http.auth import access, enforce_upload_rate
from pipeline.http.contract import AUTH, DocumentedOperation, LinkTo, documented
from pipeline.http.problems import Problem
from pipeline.http.state import ApiState
from pipeline.http.upload_body import read_upload
from pipeline.ingestion.uploads import IdempotencyConflict, PutOutcome, Upload
from pipeline.lifecycle.deletion import DeleteRequest
from pipeline.operations.common import NotFound, Operator, RunContext
from pipeline.queries import documents as queries
from pipeline.queries.documents import ChunkList, DocumentLinks, DocumentPage, DocumentView
from pipeline.statuses import DocumentStatus
from pipeline.text import NO_NUL

EXTERNAL_ID_PATTERN = "^[^/\x00]+$"
ExternalId = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=255,
        pattern=EXTERNAL_ID_PATTERN,
        title="external_id",
        description="The client's own key for the document (unique per tenant; 1-255 "
        "characters, no `/`).",
    ),
]
"""The client's own key for a document: unique per tenant; one path segment."""
DeleteReason = Annotated[
    str | None,
    QueryParameter(name="reason", required=False, max_length=1000, pattern=NO_NUL),
]


class DocumentAccepted(msgspec.Struct, frozen=True):
    id: uuid.UUID
    status: DocumentStatus
    links: DocumentLinks


class KeyedDocument(msgspec.Struct, frozen=True):
    """What an upload by external id did to the document with that key."""

    id: uuid.UUID
    external_id: str
    outcome: PutOutcome
    """``created`` (202), ``replaced`` by new bytes (202, a new generation), or
    ``unchanged``: the same bytes as the document's current ones (200, nothing done)."""
    status: DocumentStatus
    generation: int
    links: DocumentLinks


GET_DOCUMENT = "DocumentsDocumentIdGetDocument"
GET_CHUNKS = "DocumentsDocumentIdChunksGetChunks"
RERUN_DOCUMENT = "DocumentsDocumentIdRerunRerunDocument"
LIST_DOCUMENTS = "DocumentsListDocuments"
KEYED_SUCCESSES = {
    200: ResponseSpec(KeyedDocument, description="The same bytes as now: nothing was done"),
    202: ResponseSpec(
        KeyedDocument, description="Created, or replaced by new bytes: processing runs"
    ),
}


def document_links(pointer: str) -> dict[str, LinkTo]:
    """Links to what can be done with the document whose id is at ``pointer``."""
    expression = f"$response.body#{pointer}"
    return {
        "GetDocument": LinkTo(GET_DOCUMENT, {"document_id": expression}, "The document"),
        "GetChunks": LinkTo(GET_CHUNKS, {"document_id": expression}, "Its chunks"),
        "RerunDocument": LinkTo(
            RERUN_DOCUMENT, {"document_id": expression}, "Re-run it from a stage"
        ),
    }


@dataclass
class UploadOperation(DocumentedOperation):
    """Documents the two upload forms, which the handler reads itself."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # An empty file is refused (422): the schema says so.
        binary = Schema(type=OpenAPIType.STRING, format="binary", min_length=1)  # type: ignore[arg-type]
        self.request_body = RequestBody(
            required=True,
            description="The document: a multipart field `file`, or the raw bytes as the body; "
            "not empty.",
            content={
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        properties={"file": binary},
                        required=["file"],
                    )
                ),
                "application/octet-stream": OpenAPIMediaType(schema=binary),
            },
        )


def parse_id(raw: str) -> uuid.UUID:
    """Malformed ids name no document: they are 404s, like unknown ones."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(404, f"no document with id {raw!r}") from None


class DocumentController(Controller):
    path = "/documents"
    tags = ["documents"]

    @post(
        "/",
        status_code=202,
        summary="Upload a document",
        description="Stores the document and answers at once; processing runs in the "
        "background. Each API key may upload at its rate limit (`429` with `Retry-After` "
        "beyond it).",
        **access("ingest"),
        **documented(
            400,
            *AUTH,
            409,
            413,
            415,
            422,
            429,
            503,
            described={409: "This Idempotency-Key was already used for a different file"},
            links={202: document_links("/id")},
            operation=UploadOperation,
        ),
    )
    async def upload(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        filename: Annotated[
            str | None, QueryParameter(name="filename", required=False, max_length=1024)
        ] = None,
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(name="Idempotency-Key", required=False, min_length=1, max_length=255),
        ] = None,
    ) -> Response[DocumentAccepted]:
        await enforce_upload_rate(api.limiter, principal)  # before the body is read
        raw = await read_upload(request, filename, api.settings.limits.max_upload_bytes)
        upload = Upload(
            filename=raw.filename,
            declared_type=raw.declared_type,
            data=raw.data,
            idempotency_key=idempotency_key,
            tenant=principal.tenant,
        )
        try:
            accepted = await api.uploads.accept(upload)
        except IdempotencyConflict as conflict:
            raise Problem(
                409,
                "this Idempotency-Key was already used for a different file "
                f"(document {conflict.document_id})",
                document_id=str(conflict.document_id),
            ) from None
        body = DocumentAccepted(
            id=accepted.id, status=accepted.status, links=queries.links(accepted.id)
        )
        headers = {"Location": body.links.self}
        if accepted.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(body, status_code=202, headers=headers)

    @route("/", http_method=[HttpMethod.OPTIONS], include_in_schema=False, **access("public"))
    async def allow(self) -> Response[None]:
        """``Allow`` for ``/documents``, which has two methods. Litestar 2's automatic
        OPTIONS answer names only the first one registered (litestar-org/litestar#4169,
        fixed in 3), which contradicts the schema. A controller's handlers register in
        name order, and an OPTIONS handler registered after another method's loses to the
        automatic one: hence a name before ``list_documents`` and ``upload``."""
        return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})

    @get(
        "/",
        summary="List documents, newest first",
        **access("read"),
        **documented(
            *AUTH,
            422,
            503,
            links={
                200: {
                    **document_links("/items/0/id"),
                    "NextPage": LinkTo(
                        LIST_DOCUMENTS,
                        {"cursor": "$response.body#/next_cursor"},
                        "The next page (while `next_cursor` is not null)",
                    ),
                }
            },
        ),
    )
    async def list_documents(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        status: Annotated[
            DocumentStatus | None, QueryParameter(name="status", required=False)
        ] = None,
        cursor: Annotated[str | None, QueryParameter(name="cursor", required=False)] = None,
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=500)] = 50,
    ) -> DocumentPage:
        cursors = await api.cursors.codec()
        # A cursor this API did not issue is InvalidCursor: a 422 (problems.py, by type).
        return await queries.list_documents(
            api.engine,
            status=status,
            cursor=cursor,
            limit=limit,
            cursors=cursors,
            tenant=principal.tenant,
        )

    @get(
        "/{document_id:str}",
        summary="A document and each of its stage runs",
        **access("read"),
        **documented(*AUTH, 404, 503),
    )
    async def get_document(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        document_id: Annotated[str, PathParameter()],
    ) -> DocumentView:
        document = await queries.get_document(
            api.engine, parse_id(document_id), tenant=principal.tenant
        )
        if document is None:
            raise Problem(404, f"no document with id {document_id!r}")
        return document

    @get(
        "/{document_id:str}/chunks",
        summary="A document's chunks, in order",
        **access("read"),
        **documented(*AUTH, 404, 422, 503),
    )
    async def get_chunks(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        document_id: Annotated[str, PathParameter()],
        embeddings: Annotated[bool, QueryParameter(name="embeddings")] = False,
    ) -> ChunkList:
        chunks = await queries.list_chunks(
            api.engine, parse_id(document_id), with_embeddings=embeddings, tenant=principal.tenant
        )
        if chunks is None:
            raise Problem(404, f"no document with id {document_id!r}")
        return chunks

    @route(
        "/{document_id:str}",
        http_method=[HttpMethod.OPTIONS],
        include_in_schema=False,
        **access("public"),
    )
    async def allow_document(self) -> Response[None]:
        """``Allow`` for ``/documents/{id}`` (GET and DELETE): see :meth:`allow`."""
        return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS"})

    @delete(
        "/{document_id:str}",
        status_code=204,
        summary="Delete a document: erase its content, keep a tombstone",
        description="Erases the uploaded bytes, the text, the chunks and every stage's "
        "output, stops work in flight, and leaves search at once. The audit trail stays "
        "(a tombstone records who deleted it, when and why: `reason`). Needs the `ingest` "
        "scope: the client that uploads is the one its users ask to erase (operators "
        "delete with `pipeline documents delete`). "
        "Afterwards the document answers `404`, and so does a repeated DELETE.",
        **access("ingest"),
        **documented(*AUTH, 404, 422, 503),
    )
    async def delete_document(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        document_id: Annotated[str, PathParameter()],
        reason: DeleteReason = None,
    ) -> None:
        wanted = DeleteRequest(ids=[parse_id(document_id)], reason=reason)
        # Named as the admin API names its operators (``http.admin.run_of``, which
        # imports this module): the key, and the client's address.
        host = request.client.host if request.client else None
        operator = Operator(name=f"{principal.label}@{host or 'unknown'}", via="api")
        run = RunContext(operator=operator, tenant=principal.tenant)
        report = await anyio.to_thread.run_sync(api.deletion.delete, wanted, run)
        [item] = report.items
        if isinstance(item, NotFound):
            raise Problem(404, f"no document with id {document_id!r}")
        if item.action == "failed":
            raise Problem(503, f"the document was not deleted ({item.detail})")

    @route(
        "/by-key/{external_id:str}",
        http_method=[HttpMethod.OPTIONS],
        include_in_schema=False,
        **access("public"),
    )
    async def allow_key(self) -> Response[None]:
        """``Allow`` for ``/documents/by-key/{key}`` (GET and PUT): see :meth:`allow`."""
        return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, PUT"})

    @get(
        "/by-key/{external_id:str}",
        summary="The document with this external id",
        **access("read"),
        **documented(*AUTH, 404, 422, 503),
    )
    async def get_by_key(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        external_id: ExternalId,
    ) -> DocumentView:
        document = await queries.document_by_key(api.engine, external_id, tenant=principal.tenant)
        if document is None:
            raise Problem(404, f"no document with external id {external_id!r}")
        return document

    @put(
        "/by-key/{external_id:str}",
        summary="Upload a document under the client's own key, or replace its bytes",
        description="The same bodies as `POST /documents`, with the same limits. No "
        "document has this key: one is created (202). The same bytes as the document's "
        "current ones: nothing is done (200). New bytes: the document moves to a new "
        "generation and is processed again (202); its chunks are swapped for the new ones "
        "in one transaction, so search shows the old or the new, never both or neither.",
        **access("ingest"),
        **documented(
            400,
            *AUTH,
            413,
            415,
            422,
            429,
            503,
            successes=KEYED_SUCCESSES,
            links={200: document_links("/id"), 202: document_links("/id")},
            operation=UploadOperation,
        ),
    )
    async def put_by_key(
        self,
        request: Request[Any, Any, Any],
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        external_id: ExternalId,
        filename: Annotated[
            str | None, QueryParameter(name="filename", required=False, max_length=1024)
        ] = None,
    ) -> Response[KeyedDocument]:
        await enforce_upload_rate(api.limiter, principal)  # before the body is read
        raw = await read_upload(request, filename, api.settings.limits.max_upload_bytes)
        upload = Upload(
            filename=raw.filename,
            declared_type=raw.declared_type,
            data=raw.data,
            tenant=principal.tenant,
            external_id=external_id,
        )
        done = await api.uploads.put(upload, by=f"api:{principal.label}")
        body = KeyedDocument(
            id=done.id,
            external_id=external_id,
            outcome=done.outcome,
            status=done.status,
            generation=done.generation,
            links=queries.links(done.id),
        )
        status = 200 if done.outcome == "unchanged" else 202
        return Response(body, status_code=status, headers={"Location": body.links.self})
