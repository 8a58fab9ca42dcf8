"""Keyset pagination cursors: a signed, opaque token for the last (timestamp, id) of a page.

Keyset pages stay fast at any depth (no OFFSET), and a cursor keeps working while
new rows arrive ahead of it. A cursor is ``base64(position) "." base64(HMAC)``: the
HMAC-SHA256 (cut to 128 bits) of the position, the list it belongs to and the tenant
it was issued to, under a server secret (see :mod:`pipeline.queries.cursor_keys`).
So the promise in the 422's text, "a cursor this API issued", is checked, not hoped
for: an edited position, another list's cursor or another tenant's is refused. The
tenant filter stays what keeps tenants apart; the signature only makes a cursor
mean what the API meant by it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import uuid
from datetime import datetime
from typing import Final, Literal

import msgspec

from pipeline.errors import PipelineError

CursorList = Literal["documents", "dead-letters"]
MIN_KEY_BYTES: Final = 16
_SIGNATURE_BYTES: Final = 16
_MAX_CURSOR_CHARS: Final = 256
_NOT_ISSUED: Final = "the cursor is not a cursor this API issued; start again without one"


class InvalidCursor(PipelineError):
    """A pagination cursor that this API did not issue (for this list and tenant)."""


class CursorCodec:
    """Issues and checks cursors under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a cursor key must have at least {MIN_KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def ephemeral(cls) -> CursorCodec:
        """A random key for cursors that never leave the process (the CLI's own paging)."""
        return cls(secrets.token_bytes(32))

    def encode(self, kind: CursorList, tenant: str | None, at: datetime, row_id: uuid.UUID) -> str:
        payload = _b64encode(msgspec.json.encode([at, row_id]))
        return f"{payload}.{_b64encode(self._sign(kind, tenant, payload))}"

    def decode(
        self, kind: CursorList, tenant: str | None, cursor: str
    ) -> tuple[datetime, uuid.UUID]:
        """The position ``cursor`` stands for, if this key signed it for ``kind`` and ``tenant``.

        Raises:
            InvalidCursor: anything else (edited, truncated, unsigned, another list's or
                tenant's, or signed under another secret).
        """
        payload, dot, signature = cursor.rpartition(".")
        if not dot or len(cursor) > _MAX_CURSOR_CHARS:
            raise InvalidCursor(_NOT_ISSUED)
        try:
            given = _b64decode(signature)
            if not hmac.compare_digest(given, self._sign(kind, tenant, payload)):
                raise InvalidCursor(_NOT_ISSUED)
            at, row_id = msgspec.json.decode(_b64decode(payload), type=tuple[datetime, uuid.UUID])
        except (ValueError, binascii.Error, msgspec.DecodeError) as error:
            raise InvalidCursor(_NOT_ISSUED) from error
        if at.tzinfo is None:
            raise InvalidCursor(_NOT_ISSUED)
        return at, row_id

    def _sign(self, kind: CursorList, tenant: str | None, payload: str) -> bytes:
        # NUL occurs neither in a tenant (Postgres text) nor in base64: no field runs into another.
        message = "\0".join((kind, "" if tenant is None else "t:" + tenant, payload)).encode()
        return hmac.digest(self._key, message, hashlib.sha256)[:_SIGNATURE_BYTES]


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
