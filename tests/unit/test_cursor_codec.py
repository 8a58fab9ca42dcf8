"""Cursor signing: only what this key signed, for this list and tenant, decodes."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from pipeline.errors import PipelineError
from pipeline.queries.cursors import CursorCodec, InvalidCursor

AT = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
ROW = uuid.UUID("0b6c4c1e-0000-4000-8000-000000000001")
KEY = b"k" * 32


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_cursor_decodes_to_what_was_encoded() -> None:
    codec = CursorCodec(KEY)
    assert codec.decode("documents", "acme", codec.encode("documents", "acme", AT, ROW)) == (
        AT,
        ROW,
    )


def test_an_edited_position_with_the_old_signature_is_refused() -> None:
    codec = CursorCodec(KEY)
    cursor = codec.encode("documents", "acme", AT, ROW)
    _payload, signature = cursor.split(".")
    edited = b64(msgspec.json.encode([AT + timedelta(days=365), ROW])) + "." + signature
    with pytest.raises(InvalidCursor, match="a cursor this API issued"):
        codec.decode("documents", "acme", edited)


@pytest.mark.parametrize(
    "cursor",
    [
        b64(msgspec.json.encode([AT, ROW])),  # the old, unsigned form
        "",
        ".",
        "not-a-cursor",
        "x" * 10_000,
        b64(msgspec.json.encode([AT, ROW])) + "." + b64(bytes(16)),
    ],
)
def test_anything_unsigned_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        CursorCodec(KEY).decode("documents", "acme", cursor)


def test_a_cursor_is_bound_to_its_list_its_tenant_and_its_key() -> None:
    cursor = CursorCodec(KEY).encode("documents", "acme", AT, ROW)
    for kind, tenant, key in [
        ("dead-letters", "acme", KEY),
        ("documents", "other", KEY),
        ("documents", "acme", b"j" * 32),
    ]:
        with pytest.raises(InvalidCursor):
            CursorCodec(key).decode(kind, tenant, cursor)


def test_invalid_cursor_is_a_pipeline_error() -> None:
    assert issubclass(InvalidCursor, PipelineError)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        CursorCodec(b"short")
