"""Keyset pagination cursors: an opaque token for the last (timestamp, id) of a page.

Keyset pages stay fast at any depth (no OFFSET), and a cursor keeps working while
new rows arrive ahead of it.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import msgspec


class InvalidCursor(ValueError):
    """A pagination cursor that this API did not issue."""


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    raw = msgspec.json.encode([at, row_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = msgspec.json.decode(raw, type=tuple[datetime, uuid.UUID])
    except (ValueError, msgspec.DecodeError) as error:
        raise InvalidCursor("the cursor is not one this API issued") from error
    if at.tzinfo is None:
        raise InvalidCursor("the cursor is not one this API issued")
    return at, row_id
