"""Classifying a stage's failure: transient or permanent, and what to tell a person."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import psycopg
import redis
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pipeline.errors import TOO_DEEP_REASON, StageError
from pipeline.stages import StagePolicy


class Failure(msgspec.Struct, frozen=True):
    COLUMNS: ClassVar[tuple[str, ...]] = ("error_type", "error_message", "error_transient")

    error_type: str
    reason: str
    transient: bool

    def exhausted(self, attempts: int) -> Failure:
        return Failure(
            error_type=self.error_type,
            reason=f"{self.reason} (gave up after {attempts} attempts)",
            transient=True,
        )

    def columns(self) -> dict[str, Any]:
        return {
            "error_type": self.error_type,
            "error_message": self.reason,
            "error_transient": self.transient,
        }

    def detail(self) -> dict[str, Any]:
        return {"error_type": self.error_type, "error": self.reason, "transient": self.transient}

    def document_reason(self, stage: str) -> str:
        return f"{stage}: {self.reason}"


def classify(error: BaseException, policy: StagePolicy) -> Failure:
    """Turn an exception into a :class:`Failure` an operator can read.

    Errors we did not anticipate count as transient: retrying a bug costs a few
    attempts, while wrongly giving up on a flaky dependency loses a document.
    """
    kind = type(error).__name__
    if isinstance(error, StageError):
        return Failure(kind, error.reason, error.transient)
    if isinstance(error, RecursionError):  # the same input recurses as deep next time
        return Failure(kind, TOO_DEEP_REASON, transient=False)
    if isinstance(error, TimeLimitExceeded):
        seconds = policy.time_limit_ms / 1000
        return Failure(kind, f"timed out after {seconds:g} s", transient=True)
    if isinstance(error, DBAPIError | PoolTimeout | psycopg.Error):
        return Failure(kind, f"database error: {_first_line(error)}", transient=True)
    if isinstance(error, redis.RedisError):
        return Failure(kind, f"redis error: {_first_line(error)}", transient=True)
    if isinstance(error, OSError | TimeoutError):
        return Failure(kind, f"I/O error: {_first_line(error)}", transient=True)
    return Failure(kind, f"unexpected error: {_first_line(error)}", transient=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:500] if text else type(error).__name__
