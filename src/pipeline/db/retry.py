"""Trying a database transaction again when the error is one a new one may not meet.

A dropped connection (Postgres restarted, a backend terminated), a deadlock, a lock or
statement timeout: the same transaction on a fresh connection can succeed. SQLAlchemy
refreshes its pool once it has seen a disconnect, so the next try gets a new
connection. Any other error (a constraint, a bug) is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

logger = logging.getLogger(__name__)

T = TypeVar("T")


def worth_retrying(error: BaseException) -> bool:
    """A connection-level or lock-level error that a new transaction may not meet."""
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or isinstance(error, OperationalError | InterfaceError)
    return isinstance(error, psycopg.OperationalError)


def retry_database(
    act: Callable[[], T],
    *,
    tries: int,
    what: str,
    pause_s: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``act()``, tried up to ``tries`` times (pausing ``pause_s``, doubling) while it
    fails with an error :func:`worth_retrying`; the last error is raised."""
    for tried in range(1, tries + 1):
        try:
            return act()
        except (DBAPIError, psycopg.OperationalError) as error:
            if tried == tries or not worth_retrying(error):
                raise
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            logger.warning("%s failed (try %d of %d): %s; trying again", what, tried, tries, first)
            sleep(pause_s * 2 ** (tried - 1))
    raise AssertionError("unreachable")
