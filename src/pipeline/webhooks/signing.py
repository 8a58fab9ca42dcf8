"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A delivery carries three headers: ``webhook-id`` (the same on every attempt, so a
receiver can drop a duplicate), ``webhook-timestamp`` (unix seconds, so a receiver can
refuse an old replay) and ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of
``{id}.{timestamp}.{body}`` under the secret, the secret being the base64 text after
``whsec_``. After a rotation the old secret signs too (space-separated signatures),
until it expires, so receivers can switch at their own pace.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from typing import Final

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, no secret
SECRET_BYTES: Final = 32


def new_secret() -> str:
    """``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (raises ``ValueError`` on anything else)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)


def message_id(delivery_id: uuid.UUID) -> str:
    """The ``webhook-id`` of a delivery: ``msg_`` and its id in hex."""
    return f"msg_{delivery_id.hex}"


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with each of ``secrets_`` (the
    current one first)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret, msg_id, timestamp, body) for secret in secrets_
        ),
    }
