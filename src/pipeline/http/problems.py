"""RFC 9457 problem details for every error the API returns.

Litestar's plugin puts an HTTPException's text in ``title``; clients read ``detail``,
so each exception is converted here with a stable title per status and the
human-readable explanation in ``detail``. Anything unexpected becomes a 500 whose
detail says nothing internal; the traceback goes to the log.

The OpenAPI description says the same: :func:`problem_responses` documents each error
status an operation can answer as ``application/problem+json`` with
:class:`ProblemDocument`, the shape every error here has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import msgspec
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pipeline.errors import PipelineError
from pipeline.operations.common import InvalidRate
from pipeline.operations.stage_controls import NotOperator
from pipeline.queries.cursors import InvalidCursor
from pipeline.search.semantic import SemanticSearchUnavailable
from pipeline.stages import UnknownStage
from pipeline.webhooks.destinations import DestinationRefused
from pipeline.webhooks.endpoints import EndpointNotFound

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
"""What Litestar's problem-details plugin serves every error as."""

PROBLEM_WHEN: Final[Mapping[int, str]] = {
    400: "The request could not be read (a body that is not JSON, a broken multipart form)",
    401: "No API key, or one that is unknown, malformed or revoked (`WWW-Authenticate` says so)",
    403: "The API key lacks the scope this operation needs",
    404: "No such item (another tenant's answers the same)",
    409: "The request conflicts with the item's state",
    413: "The request body is larger than this server accepts",
    415: "The declared type is not a supported document type",
    422: "The parameters or the body are invalid (`errors` says where)",
    429: "This API key is over its upload rate; retry after `Retry-After` seconds",
    503: "A dependency (the database, the broker) is unavailable; nothing was changed, retry later",
}
"""The default description of each error status the API answers."""


class ProblemDocument(msgspec.Struct, frozen=True):
    """An RFC 9457 problem details document (for the OpenAPI description only).

    Some problems carry more members than these four (``errors`` on a ``422``,
    ``retry_after`` on a ``429``, the ``document_id`` a ``409`` is about): RFC 9457
    allows extension members, and the schema does not forbid them.
    """

    type: str
    title: str
    status: int
    detail: str


def problem_responses(
    *statuses: int, described: Mapping[int, str] | None = None
) -> dict[int, ResponseSpec]:
    """The ``responses=`` of a route: each error status it can answer, as a problem.

    ``described`` replaces the default description where an operation has a more
    precise one (what a ``409`` means there, say).
    """
    described = described or {}
    unknown = [status for status in statuses if status not in PROBLEM_WHEN]
    if unknown:
        raise ValueError(f"no description of status {unknown}; add it to PROBLEM_WHEN")
    return {
        status: ResponseSpec(
            ProblemDocument,
            description=described.get(status, PROBLEM_WHEN[status]),
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in statuses
    }


class Problem(ProblemDetailsException):
    """An API error with a clear ``detail``; raise it from handlers."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(
            status_code=status_code,
            detail=detail,
            title=_title(status_code),
            type_="about:blank",
            headers=headers,
            extra=extra or None,
        )


def _title(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


def _from_http_exception(exc: HTTPException) -> ProblemDetailsException:
    status = exc.status_code
    detail = exc.detail or _title(status)
    extra: dict[str, Any] | None = None
    if isinstance(exc, ValidationException):
        # Malformed parameters and bodies are 422, with what is wrong in ``detail``.
        status = 422
        if isinstance(exc.extra, list) and exc.extra:
            extra = {"errors": exc.extra}
            parts = [_describe(error) for error in exc.extra if isinstance(error, dict)]
            detail = "; ".join(parts) or detail
    elif status == 413:
        detail = "the request body is larger than this server accepts"
    return ProblemDetailsException(
        status_code=status,
        detail=detail,
        title=_title(status),
        type_="about:blank",
        headers=exc.headers,
        extra=extra,
    )


def _describe(error: dict[str, Any]) -> str:
    """One validation error as a phrase: where it is and what is wrong."""
    message = str(error.get("message") or "invalid")
    key = error.get("key")
    source = getattr(error.get("source"), "value", error.get("source"))  # a ParamType
    if source == "body":
        where = "request body" if key in (None, "data") else f"`{key}` in the request body"
    elif source in ("query", "path", "header", "cookie"):
        where = f"{source} parameter `{key}`"
    else:
        where = f"`{key}`" if key else "request"
    return f"invalid {where}: {message}"


def _from_database_error(exc: Exception) -> ProblemDetailsException:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        logger.warning("database unavailable: %s", exc)
        return ProblemDetailsException(
            status_code=503,
            detail="the database is unavailable; nothing was stored, retry later",
            title=_title(503),
            type_="about:blank",
            headers={"Retry-After": "5"},
        )
    return _from_unexpected(exc)


def _from_unexpected(exc: Exception) -> ProblemDetailsException:
    logger.exception("unhandled error", exc_info=exc)
    return ProblemDetailsException(
        status_code=500,
        detail="the server failed to handle this request; it has been logged",
        title=_title(500),
        type_="about:blank",
    )


STATUS_OF_ERROR: tuple[tuple[type[PipelineError], int], ...] = (
    (InvalidCursor, 422),
    (InvalidRate, 422),
    (SemanticSearchUnavailable, 409),
    (UnknownStage, 422),
    (NotOperator, 403),
    (DestinationRefused, 422),
    (EndpointNotFound, 404),
)
"""The HTTP status of each deliberate error a handler may let through, by type (the
first that matches; a subclass before its base). Its ``reason`` is the ``detail``."""


def _from_pipeline_error(exc: PipelineError) -> ProblemDetailsException:
    for kind, status in STATUS_OF_ERROR:
        if isinstance(exc, kind):
            return ProblemDetailsException(
                status_code=status, detail=exc.reason, title=_title(status), type_="about:blank"
            )
    return _from_unexpected(exc)  # a deliberate error no route expects: still a bug here


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            exception_to_problem_detail_map={
                HTTPException: _from_http_exception,
                PipelineError: _from_pipeline_error,
                SQLAlchemyError: _from_database_error,
                Exception: _from_unexpected,
            }
        )
    )
