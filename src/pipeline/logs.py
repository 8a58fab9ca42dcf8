"""Logging: JSON lines for machines, readable lines for people, with stage context.

Every record carries the context of the stage attempt it was written in
(``document_id``, ``stage``, ``message_id``, ``attempt``), set by the executor with
:func:`log_context`, so a log search for one document finds every line about it.
``PIPELINE_LOG_FORMAT`` is ``json``, ``text`` or ``auto`` (JSON unless stderr is a
terminal).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

CONTEXT_FIELDS: Final = ("document_id", "stage", "message_id", "attempt")
CHATTY_LOGGERS: Final = ("httpx", "httpcore")
"""Libraries that log every request at INFO (``HTTP Request: GET …``): a client command
(``pipeline ingest``, ``pipeline demo``) would print a line per request. They log
warnings only, unless the level asked for is DEBUG."""
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "pipeline_log_context",
    default={},  # noqa: B039 - never mutated, always replaced
)
_encoder = msgspec.json.Encoder()


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (in this thread)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def update_log_context(**fields: Any) -> None:
    """Add fields to the current block's context (e.g. the attempt, once claimed)."""
    _context.set({**_context.get(), **fields})


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            setattr(record, key, value)
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = str(value) if key != "attempt" else value
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return _encoder.encode(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}"
            for key in CONTEXT_FIELDS
            if getattr(record, key, None) is not None
        )
        return f"{line} [{context}]" if context else line


def use_json(environ: dict[str, str] | None = None) -> bool:
    value = (environ if environ is not None else os.environ).get("PIPELINE_LOG_FORMAT", "auto")
    if value == "json":
        return True
    if value == "text":
        return False
    return not sys.stderr.isatty()


def make_formatter(json_lines: bool) -> logging.Formatter:
    return JSONFormatter() if json_lines else TextFormatter()


def configure_logging(level: str | int = "INFO", *, json_lines: bool | None = None) -> None:
    """Format every root handler (adding a stderr one if there is none) and add context."""
    json_lines = use_json() if json_lines is None else json_lines
    root = logging.getLogger()
    root.setLevel(level)
    debugging = (
        logging.getLevelName(level) == "DEBUG" if isinstance(level, int) else level == "DEBUG"
    )
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debugging else logging.WARNING)
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(make_formatter(json_lines))
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())


def _server_log_config(json_lines: bool | None, loggers: tuple[str, ...]) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for an ASGI server: one stderr handler on the
    root logger with the same formatter as everything else, the server's loggers at INFO
    (propagating to it)."""
    json_lines = use_json() if json_lines is None else json_lines
    formatter = "pipeline.logs.JSONFormatter" if json_lines else "pipeline.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "filters": {"context": {"()": "pipeline.logs.ContextFilter"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {name: {"level": "INFO"} for name in loggers},
    }


def uvicorn_log_config(json_lines: bool | None = None) -> dict[str, Any]:
    """uvicorn's logging, with the same formatter as everything else."""
    return _server_log_config(json_lines, ("uvicorn", "uvicorn.error", "uvicorn.access"))


GRANIAN_LOGGERS: Final = ("_granian", "granian.access")
"""Granian's runtime logger (its Rust side logs there too) and its access logger."""


def granian_log_config(json_lines: bool | None = None) -> dict[str, Any]:
    """Granian's logging, with the same formatter as everything else.

    Granian merges this over its own configuration key by key (``dict.update``), so every
    key is given whole: its stdout handlers and ``propagate: False`` loggers are
    replaced, and its records reach the root handler on stderr as uvicorn's do."""
    config = _server_log_config(json_lines, GRANIAN_LOGGERS)
    for name in GRANIAN_LOGGERS:
        config["loggers"][name]["propagate"] = True
    return config
