"""API keys: minting, revoking, listing and verifying them (the CLI and the API share it).

A key is ``pk_<12 hex>_<43 url-safe base64>``: a public prefix that finds its row and
names it in logs, then 256 random bits. Postgres keeps only the SHA-256 of the whole
key, compared in constant time; the key itself is shown once, when it is made.

The API verifies keys through an :class:`Authenticator`, which remembers a verified
key for ``PIPELINE_AUTH_CACHE_S`` so that an upload costs no extra Postgres round
trip: a revoked key keeps working in a process for at most that long.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

import msgspec
from sqlalchemy import Connection, Row, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.db.models import ApiKey
from pipeline.errors import PipelineError
from pipeline.statuses import SCOPES, Scope

logger = logging.getLogger(__name__)

ALL_SCOPES: Final = frozenset(SCOPES)
_KEY_SHAPE: Final = re.compile(r"(pk_[0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_PREFIX_SHAPE: Final = re.compile(r"(pk_)?([0-9a-f]{12})")
_TENANT_SHAPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
MAX_NAME: Final = 200
MAX_CACHED: Final = 10_000
"""Entries each cache (verified keys, refused keys) holds at most."""
LOOKUP_CONCURRENCY: Final = 4
"""Postgres lookups of uncached keys one API process runs at once: a flood of made-up
keys waits here instead of taking the connections uploads and reads need."""


class InvalidKeyRequest(PipelineError):
    """A key cannot be made as asked (bad tenant, scope, name or rate limit)."""


class KeyNotFound(PipelineError):
    """No key has this id or prefix."""


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who a request acts as: a tenant, with the scopes of the key that was presented."""

    tenant: str
    scopes: frozenset[Scope]
    key_id: uuid.UUID | None = None
    prefix: str | None = None
    """None only when authentication is disabled."""
    rate_limit_per_s: float | None = None
    """The key's own upload rate (None: the settings' default; 0: unlimited)."""

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def label(self) -> str:
        """How the audit trail names this principal."""
        return f"{self.tenant}/{self.prefix or 'auth-disabled'}"


UNAUTHENTICATED_LOCAL: Final = Principal(tenant="default", scopes=ALL_SCOPES)
"""What every request acts as when ``PIPELINE_AUTH=disabled``."""


class KeyView(msgspec.Struct, frozen=True):
    """A key as listed: everything but its secret (which is not stored anyway)."""

    id: uuid.UUID
    prefix: str
    tenant: str
    name: str | None
    scopes: list[Scope]
    rate_limit_per_s: float | None
    created_at: datetime
    revoked_at: datetime | None


class CreatedKey(msgspec.Struct, frozen=True):
    view: KeyView
    key: str
    """The key itself: shown to whoever made it, once, and never stored."""


# -- the key format ----------------------------------------------------------------------


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_key(presented: str) -> tuple[str, bytes] | None:
    """The prefix and hash of a well-formed key; None for anything else (no lookup needed)."""
    found = _KEY_SHAPE.fullmatch(presented)
    if found is None:
        return None
    return found.group(1), digest(presented)


def _new_key() -> tuple[str, str]:
    prefix = "pk_" + secrets.token_hex(6)
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


def parse_scopes(raw: str | Iterable[str]) -> list[Scope]:
    """``"ingest,read"`` (or a list) as scopes in canonical order; unknown ones are refused."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    wanted = {item.strip().lower() for item in items if item.strip()}
    unknown = sorted(wanted - ALL_SCOPES)
    if unknown:
        raise InvalidKeyRequest(
            f"unknown scope {', '.join(unknown)}; scopes are {', '.join(SCOPES)}"
        )
    if not wanted:
        raise InvalidKeyRequest(f"give at least one scope: {', '.join(SCOPES)}")
    return [scope for scope in SCOPES if scope in wanted]


def check_tenant(tenant: str) -> str:
    if not _TENANT_SHAPE.fullmatch(tenant):
        raise InvalidKeyRequest(
            f"tenant {tenant!r} must be 1 to 200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return tenant


# -- the table (sync: the CLI and ``pipeline up``) ---------------------------------------

_VIEW_COLUMNS = (
    ApiKey.id,
    ApiKey.prefix,
    ApiKey.tenant,
    ApiKey.name,
    ApiKey.scopes,
    ApiKey.rate_limit_per_s,
    ApiKey.created_at,
    ApiKey.revoked_at,
)


def _view(row: Row[*tuple[Any, ...]]) -> KeyView:
    return KeyView(**row._asdict())


def create_key(
    conn: Connection,
    *,
    tenant: str,
    scopes: str | Iterable[str],
    name: str | None = None,
    rate_limit_per_s: float | None = None,
) -> CreatedKey:
    """Store a new key's hash and return the key (the only time it exists in clear)."""
    check_tenant(tenant)
    chosen = parse_scopes(scopes)
    if name is not None and len(name) > MAX_NAME:
        raise InvalidKeyRequest(f"the name is longer than {MAX_NAME} characters")
    if rate_limit_per_s is not None and not (
        math.isfinite(rate_limit_per_s) and rate_limit_per_s >= 0
    ):
        raise InvalidKeyRequest("the rate limit must be a number of uploads per second, ≥ 0")
    for _ in range(3):  # a 48-bit prefix collides about never; if it does, draw again
        prefix, key = _new_key()
        row = conn.execute(
            insert(ApiKey)
            .values(
                id=uuid.uuid4(),
                tenant=tenant,
                name=name,
                prefix=prefix,
                secret_hash=digest(key),
                scopes=chosen,
                rate_limit_per_s=rate_limit_per_s,
            )
            .on_conflict_do_nothing(index_elements=[ApiKey.prefix])
            .returning(*_VIEW_COLUMNS)
        ).one_or_none()
        if row is not None:
            return CreatedKey(view=_view(row), key=key)
    raise RuntimeError("could not draw an unused key prefix")


def _identifies(ident: str) -> Any:
    """The key an operator names: its id, its prefix (with or without ``pk_``), or the key."""
    ident = ident.strip()
    try:
        return ApiKey.id == uuid.UUID(ident)
    except ValueError:
        pass
    parsed = parse_key(ident)
    if parsed is not None:
        return ApiKey.prefix == parsed[0]
    found = _PREFIX_SHAPE.fullmatch(ident)
    if found is None:
        raise KeyNotFound(f"{ident!r} is not a key id or prefix (pk_ and 12 hex digits)")
    return ApiKey.prefix == "pk_" + found.group(2)


def revoke_key(conn: Connection, ident: str) -> tuple[KeyView, bool]:
    """Revoke a key by id or prefix; answers the key and whether this call revoked it."""
    condition = _identifies(ident)
    row = conn.execute(
        update(ApiKey)
        .where(condition, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(*_VIEW_COLUMNS)
    ).one_or_none()
    if row is not None:
        return _view(row), True
    existing = conn.execute(select(*_VIEW_COLUMNS).where(condition)).one_or_none()
    if existing is None:
        raise KeyNotFound(f"no API key {ident!r}")
    return _view(existing), False


def list_keys(conn: Connection, tenant: str | None = None) -> list[KeyView]:
    query = select(*_VIEW_COLUMNS).order_by(ApiKey.tenant, ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return [_view(row) for row in conn.execute(query)]


_LOOKUP = select(
    ApiKey.id, ApiKey.tenant, ApiKey.scopes, ApiKey.rate_limit_per_s, ApiKey.secret_hash
).where(ApiKey.revoked_at.is_(None))


def _principal(row: Row[*tuple[Any, ...]] | None, key_hash: bytes) -> Principal | None:
    if row is None or not hmac.compare_digest(row.secret_hash, key_hash):
        return None
    return Principal(
        tenant=row.tenant,
        scopes=frozenset(row.scopes),
        key_id=row.id,
        prefix=None,  # set by the caller, which knows it
        rate_limit_per_s=row.rate_limit_per_s,
    )


def verify_key(conn: Connection, presented: str) -> Principal | None:
    """The principal of a valid, unrevoked key; None otherwise."""
    parsed = parse_key(presented)
    if parsed is None:
        return None
    prefix, key_hash = parsed
    found = _principal(conn.execute(_LOOKUP.where(ApiKey.prefix == prefix)).first(), key_hash)
    return msgspec.structs.replace(found, prefix=prefix) if found else None


# -- verifying on the request path (async, cached) ----------------------------------------


class _Entry(msgspec.Struct):
    principal: Principal | None
    expires: float


class Authenticator:
    """Verifies presented keys, remembering answers for ``ttl_s`` seconds.

    Valid keys are cached by the hash of the whole key, so a request with a cached
    key costs a SHA-256 and a dict lookup. Refused keys are cached too (for a
    misconfigured client retrying the same bad key), malformed ones never reach
    Postgres, concurrent misses for one key share one lookup, and at most
    :data:`LOOKUP_CONCURRENCY` lookups run at once.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[bytes, _Entry] = {}
        self._pending: dict[bytes, asyncio.Future[Principal | None]] = {}
        self._lookups = asyncio.Semaphore(LOOKUP_CONCURRENCY)

    async def authenticate(self, presented: str) -> Principal | None:
        parsed = parse_key(presented)
        if parsed is None:
            return None
        prefix, key_hash = parsed
        entry = self._cache.get(key_hash)
        if entry is not None and entry.expires > self.clock():
            return entry.principal
        pending = self._pending.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(prefix, key_hash))
            self._pending[key_hash] = pending
            pending.add_done_callback(lambda done: self._settle(key_hash, done))
        # Shielded: a client that hangs up does not cancel the lookup others wait on.
        return await asyncio.shield(pending)

    async def _lookup(self, prefix: str, key_hash: bytes) -> Principal | None:
        async with self._lookups, self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")  # one statement
            row = (await conn.execute(_LOOKUP.where(ApiKey.prefix == prefix))).first()
        found = _principal(row, key_hash)
        principal = msgspec.structs.replace(found, prefix=prefix) if found else None
        if self.ttl_s > 0:
            self._remember(key_hash, principal)
        return principal

    def _remember(self, key_hash: bytes, principal: Principal | None) -> None:
        if len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))  # the oldest entry
        self._cache[key_hash] = _Entry(principal, self.clock() + self.ttl_s)

    def _settle(self, key_hash: bytes, done: asyncio.Future[Principal | None]) -> None:
        self._pending.pop(key_hash, None)
        if not done.cancelled():
            done.exception()  # retrieved: whoever awaited it has seen it already
