"""RFC 9457 problem details for every error the API returns.

Litestar's plugin puts an HTTPException's text in ``title``; clients read ``detail``,
so each exception is converted here with a stable title per status and the
human-readable explanation in ``detail``. Anything unexpected becomes a 500 whose
detail says nothing internal; the traceback goes to the log.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

logger = logging.getLogger(__name__)


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


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            exception_to_problem_detail_map={
                HTTPException: _from_http_exception,
                SQLAlchemyError: _from_database_error,
                Exception: _from_unexpected,
            }
        )
    )
