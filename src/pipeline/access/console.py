"""Operator console sessions and one-time sign-in links, kept in Postgres.

A session is opened by presenting an ``admin`` API key (or a sign-in link made for
one); the browser then holds a random token in a cookie, and Postgres its SHA-256 (a
stolen copy of the table opens nothing). Each request looks the session up joined
with its key, in one indexed statement: a session acts as its key, for its key's
tenant, and stops working the moment the key is revoked or loses ``admin`` — not a
cache period later, since a console is where an operator acts, not a hot upload path.
Signing out deletes the row, so the cookie is worthless afterwards, in every API
process at once.

Every mutating form carries the session's CSRF token (``csrf``), compared in constant
time: the cookie is ``SameSite=Strict`` too, but a token does not depend on the browser.

A sign-in link carries a random token stored hashed, usable once, for a few minutes
(``PIPELINE_CONSOLE_LINK_S``), so ``pipeline up`` can print a link without the key
itself ever sitting in a URL or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Final

import msgspec
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.access.keys import KeyNotFound, Principal, _identifies
from pipeline.db.models import ApiKey, ConsoleSession, ConsoleSignInToken
from pipeline.statuses import Scope

COOKIE: Final = "pipeline_console"
"""The session cookie's name."""
TOKEN_BYTES: Final = 32


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A live console session: who (the key), for which tenant, and its CSRF token."""

    principal: Principal
    key_label: str
    csrf: str

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def key_label(tenant: str, prefix: str, name: str | None) -> str:
    """``tenant/prefix`` and the key's name: what the audit trail calls the operator."""
    return f"{tenant}/{prefix}" + (f" ({name})" if name else "")


_LIVE_KEY = (ApiKey.revoked_at.is_(None), ApiKey.scopes.contains(["admin"]))


class ConsoleSessions:
    """Opens, finds and ends sessions; redeems sign-in links (on the API's engine)."""

    def __init__(self, engine: AsyncEngine, session_ttl_s: float, link_ttl_s: float) -> None:
        self.engine = engine
        self.session_ttl = timedelta(seconds=session_ttl_s)
        self.link_ttl = timedelta(seconds=link_ttl_s)

    async def open(self, principal: Principal) -> str:
        """A new session for an admin key's principal; returns the cookie's token."""
        assert principal.key_id is not None
        assert principal.allows("admin")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        async with self.engine.begin() as conn:
            # Expired sessions and links go when someone signs in (rare, and indexed).
            await conn.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < func.now()))
            await conn.execute(
                delete(ConsoleSignInToken).where(ConsoleSignInToken.expires_at < func.now())
            )
            name = (
                await conn.execute(select(ApiKey.name).where(ApiKey.id == principal.key_id))
            ).scalar_one_or_none()
            await conn.execute(
                insert(ConsoleSession).values(
                    id_hash=_hash(token),
                    key_id=principal.key_id,
                    tenant=principal.tenant,
                    key_label=key_label(principal.tenant, principal.prefix or "?", name),
                    csrf=secrets.token_urlsafe(TOKEN_BYTES),
                    expires_at=func.now() + self.session_ttl,
                )
            )
        return token

    async def find(self, token: str | None) -> Session | None:
        """The session of a cookie's token, if it is unexpired and its key still an
        unrevoked admin key; None otherwise."""
        if not token or len(token) > 128:
            return None
        query = (
            select(
                ConsoleSession.key_id,
                ConsoleSession.tenant,
                ConsoleSession.key_label,
                ConsoleSession.csrf,
                ApiKey.prefix,
                ApiKey.scopes,
                ApiKey.rate_limit_per_s,
            )
            .join(ApiKey, ApiKey.id == ConsoleSession.key_id)
            .where(
                ConsoleSession.id_hash == _hash(token),
                ConsoleSession.expires_at > func.now(),
                ApiKey.tenant == ConsoleSession.tenant,
                *_LIVE_KEY,
            )
        )
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")  # one statement
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        scopes: frozenset[Scope] = frozenset(row.scopes)
        principal = Principal(
            tenant=row.tenant,
            scopes=scopes,
            key_id=row.key_id,
            prefix=row.prefix,
            rate_limit_per_s=row.rate_limit_per_s,
        )
        return Session(principal=principal, key_label=row.key_label, csrf=row.csrf)

    async def end(self, token: str | None) -> None:
        """Sign out: the row goes, so the cookie opens nothing any more."""
        if not token:
            return
        async with self.engine.begin() as conn:
            await conn.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == _hash(token)))

    async def redeem(self, link_token: str) -> Principal | None:
        """The principal of an unused, unexpired sign-in link of a live admin key, marking
        the link used (once: a second use, even concurrent, finds nothing)."""
        if not link_token or len(link_token) > 128:
            return None
        async with self.engine.begin() as conn:
            key_id = (
                await conn.execute(
                    update(ConsoleSignInToken)
                    .where(
                        ConsoleSignInToken.token_hash == _hash(link_token),
                        ConsoleSignInToken.used_at.is_(None),
                        ConsoleSignInToken.expires_at > func.now(),
                    )
                    .values(used_at=func.now())
                    .returning(ConsoleSignInToken.key_id)
                )
            ).scalar_one_or_none()
            if key_id is None:
                return None
            row = (
                await conn.execute(
                    select(ApiKey.id, ApiKey.tenant, ApiKey.prefix, ApiKey.scopes).where(
                        ApiKey.id == key_id, *_LIVE_KEY
                    )
                )
            ).one_or_none()
        if row is None:
            return None
        return Principal(
            tenant=row.tenant, scopes=frozenset(row.scopes), key_id=row.id, prefix=row.prefix
        )


def create_link_token(conn: Connection, ident: str, ttl_s: float) -> tuple[str, str]:
    """A one-time sign-in token for the admin key ``ident`` (id or prefix); returns the
    token and the key's label. Refuses a revoked key or one without ``admin``."""
    row = conn.execute(
        select(ApiKey.id, ApiKey.tenant, ApiKey.prefix, ApiKey.name, ApiKey.scopes).where(
            _identifies(ident), ApiKey.revoked_at.is_(None)
        )
    ).one_or_none()
    if row is None:
        raise KeyNotFound(f"no unrevoked API key {ident!r}")
    if "admin" not in row.scopes:
        raise KeyNotFound(f"key {row.prefix} lacks the admin scope the console needs")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    conn.execute(
        insert(ConsoleSignInToken).values(
            token_hash=_hash(token),
            key_id=row.id,
            expires_at=func.now() + timedelta(seconds=ttl_s),
        )
    )
    return token, key_label(row.tenant, row.prefix, row.name)
