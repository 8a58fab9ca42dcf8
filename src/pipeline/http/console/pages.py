"""What every console page shares: rendering, reading in a thread, and parsing input.

A console page renders a template with the session (for its CSRF token and the
operator's name); bad input re-renders the page with a sentence, never a 500.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.to_thread
from litestar.response import Template
from sqlalchemy import Connection

from pipeline.access.console import Session
from pipeline.errors import PipelineError
from pipeline.http.console.auth import ConsoleNotFound
from pipeline.http.state import ApiState
from pipeline.operations.common import ItemOutcome

T = TypeVar("T")


def page(name: str, session: Session | None, *, status: int = 200, **context: Any) -> Template:
    return Template(template_name=name, context={"session": session, **context}, status_code=status)


async def read(api: ApiState, query: Callable[[Connection], T]) -> T:
    """A read on the sync engine (the operator services' engine), off the event loop."""

    def run() -> T:
        with api.sync_engine.connect() as conn:
            return query(conn)

    return await anyio.to_thread.run_sync(run)


def parse_uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ConsoleNotFound(f"no {what} with id {raw!r}") from None


class BadInput(PipelineError):
    """A form field the console cannot use (shown on the page, with a 400)."""


def parse_time(raw: str | None, name: str) -> datetime | None:
    """``datetime-local`` inputs (and any ISO 8601 time); no offset means UTC."""
    if raw is None or not raw.strip():
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise BadInput(f"{name}: expected a date and time, like 2026-11-01T09:30") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def text(form: Mapping[str, Any], name: str, limit: int = 1000) -> str | None:
    """A text field, stripped; empty is None; too long or with NUL is refused."""
    raw = form.get(name)
    if not isinstance(raw, str) or not raw.strip():
        return None
    value = raw.strip()
    if len(value) > limit or "\x00" in value:
        raise BadInput(f"{name}: at most {limit} characters, no NUL")
    return value


def describe_item(item: ItemOutcome) -> str:
    return f"{item.action}: {item.detail}"
