"""Who may call what: API keys, scopes, and the per-key upload rate limit.

Every route declares its access with :func:`access` (``public``, ``ingest``,
``read``, ``admin``, or ``metrics``, which is ``admin`` unless
``PIPELINE_METRICS_PUBLIC``); ``create_app`` refuses to start if one does not. One
guard, run before the handler (and before an upload's body is read), resolves the
presented key to a :class:`~pipeline.access.keys.Principal` (a tenant and its
scopes) and checks the route's scope:

- no key, or one that is malformed, unknown or revoked: ``401`` with
  ``WWW-Authenticate: Bearer``;
- a valid key without the scope: ``403``.

Handlers then act for ``principal.tenant`` only; another tenant's documents, dead
letters and jobs answer the same ``404`` as ids that do not exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, get_args

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityScheme

from pipeline.access.keys import UNAUTHENTICATED_LOCAL, Authenticator, Principal
from pipeline.access.rate_limit import RateLimiter
from pipeline.http.problems import Problem
from pipeline.settings import Settings
from pipeline.statuses import Scope

Access = Literal["public", Scope, "metrics"]
"""Who may call a route: anyone, a key with a scope, or (``metrics``) an admin key unless
``PIPELINE_METRICS_PUBLIC``."""
ACCESS_LEVELS: Final[tuple[Access, ...]] = get_args(Access)
SECURITY_COMPONENTS: Final = Components(
    security_schemes={
        "bearer": SecurityScheme(
            type="http",
            scheme="bearer",
            description="An API key (`pipeline keys create`) as `Authorization: Bearer <key>`.",
        ),
        "apiKey": SecurityScheme(
            type="apiKey",
            name="X-API-Key",
            security_scheme_in="header",
            description="The same API key in an `X-API-Key` header.",
        ),
    }
)
_CHALLENGE: Final = 'Bearer realm="pipeline"'


def access(level: Access) -> dict[str, Any]:
    """Route decorator keywords: who may call it (for the guard) and its OpenAPI security.

    OpenAPI 3.1 lets non-OAuth schemes list the roles an operation needs; the scope
    is listed there so the schema says which scope each operation takes.
    """
    if level == "public":
        return {"opt": {"access": level}, "security": [{}]}
    scope = "admin" if level == "metrics" else level
    return {"opt": {"access": level}, "security": [{"bearer": [scope]}, {"apiKey": [scope]}]}


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The key in ``Authorization: Bearer <key>``, else in ``X-API-Key``."""
    authorization = connection.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return ""  # something else was presented: refused, not treated as missing
    return connection.headers.get("x-api-key")


def make_guard(
    settings: Settings, authenticator: Callable[[], Authenticator]
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    """The app's one guard; ``authenticator`` gives the running app's (built on startup)."""

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        level = declared_access(handler)
        if level == "public" or (level == "metrics" and settings.access.metrics_public):
            return
        scope = level if level in ("ingest", "read") else "admin"  # undeclared: the narrowest
        if settings.access.auth == "disabled":
            principal = UNAUTHENTICATED_LOCAL
        else:
            principal = await _authenticate(connection, authenticator())
        if not principal.allows(scope):
            raise Problem(
                403,
                f"this API key lacks the {scope!r} scope this endpoint needs "
                f"(it has: {', '.join(sorted(principal.scopes))})",
                required_scope=scope,
            )
        connection.scope["auth"] = principal

    return guard


async def _authenticate(
    connection: ASGIConnection[Any, Any, Any, Any], authenticator: Authenticator
) -> Principal:
    key = presented_key(connection)
    if key is None:
        raise Problem(
            401,
            "this endpoint needs an API key: send `Authorization: Bearer <key>` "
            "(or `X-API-Key: <key>`); `pipeline keys create` makes one",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    principal = await authenticator.authenticate(key)
    if principal is None:
        raise Problem(
            401,
            "the API key is not valid: unknown, malformed or revoked",
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
        )
    return principal


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The principal the guard resolved (a dependency of every non-public handler)."""
    principal = request.scope.get("auth")
    if not isinstance(principal, Principal):
        raise RuntimeError(f"{request.url.path}: no principal; is the route declared public?")
    return principal


async def enforce_upload_rate(limiter: RateLimiter, principal: Principal) -> None:
    """``429`` with ``Retry-After`` when this key uploads faster than its limit."""
    bucket = str(principal.key_id) if principal.key_id else "auth-disabled"
    wait = await limiter.acquire(bucket, principal.rate_limit_per_s)
    if wait is not None:
        raise Problem(
            429,
            f"this API key is uploading faster than its limit; retry in {wait} s",
            headers={"Retry-After": str(wait)},
            retry_after=wait,
        )


def declared_access(handler: BaseRouteHandler) -> str | None:
    """A route's access; Litestar's automatic ``OPTIONS`` answers (an ``Allow`` header,
    nothing more) are public. None: undeclared."""
    level = handler.opt.get("access")
    if level is None and set(getattr(handler, "http_methods", ())) == {"OPTIONS"}:
        return "public"
    return level if level in ACCESS_LEVELS else None


def undeclared_routes(handlers: list[BaseRouteHandler]) -> list[str]:
    """Handlers without a valid ``access`` declaration (``create_app`` refuses to start)."""
    return [
        f"{sorted(getattr(handler, 'http_methods', []))} {sorted(handler.paths)}"
        for handler in handlers
        if declared_access(handler) is None
    ]
