"""The console's own authentication: sessions in a cookie, a CSRF token on every form.

Why the console's routes are ``public`` to the app's guard: that guard reads an API
key from a header, which a browser following a link does not send. Each console route
instead declares ``opt["console"]``: ``"anonymous"`` for the sign-in pages and the
stylesheet; anything else (``"session"``, or nothing at all) needs a signed-in
operator. The console router's guard (:func:`make_console_guard`) runs for every route:

- no valid session (no cookie, expired, signed out, or its key revoked or no longer
  ``admin``): a page is redirected to the sign-in page, anything else refused;
- a mutating request (``POST``) without the session's CSRF token in its form, or sent
  from another origin: ``403``, nothing done.

The session then acts exactly as its API key would on the admin API: for the key's
tenant only (another tenant's document, letter or job is a ``404`` page), and every
action is audited with the key's tenant, prefix and name (:func:`run_of`).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final
from urllib.parse import quote, urlsplit

from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from pipeline.access.console import COOKIE, Session
from pipeline.errors import PipelineError
from pipeline.http.state import ApiState
from pipeline.operations.common import Operator, RunContext

PRE_SIGN_IN_COOKIE: Final = "pipeline_console_pre"
"""The sign-in form's own CSRF token (double-submit): nobody else's page can sign a
browser into a session of their choosing."""
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANONYMOUS: Final[dict[str, Any]] = {
    "opt": {"access": "public", "console": "anonymous"},
    "security": [{}],
    "include_in_schema": False,
}
"""Route keywords of a console page anyone may open (the sign-in pages)."""
SIGNED_IN: Final[dict[str, Any]] = {
    "opt": {"access": "public", "console": "session"},
    "security": [{}],
    "include_in_schema": False,
}
"""Route keywords of every other console route: a session is checked by
:func:`console_guard` (``public`` only to the app's key guard)."""


class ConsoleRefused(PipelineError):
    """The console refuses a request before its handler runs."""

    status = 403


class SignInRequired(ConsoleRefused):
    """No valid console session: sign in (again)."""

    status = 401


class CsrfRefused(ConsoleRefused):
    """A mutating console request without its session's CSRF token, or from elsewhere."""


class ConsoleNotFound(PipelineError):
    """What a console page names does not exist for this session's tenant."""


def session_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Session:
    session = connection.scope.get("console_session")
    if not isinstance(session, Session):
        raise RuntimeError(f"{connection.url.path}: no console session; is the route anonymous?")
    return session


def provide_session(request: Request[Any, Any, Any]) -> Session:
    """The session the console guard found (a dependency of the console's handlers)."""
    return session_of(request)


def run_of(request: Request[Any, Any, Any], session: Session) -> RunContext:
    """Who acts, for whom: the audit trail names the key (tenant, prefix, name) and the
    browser's address, exactly as the admin API names a key."""
    host = request.client.host if request.client else None
    operator = Operator(name=f"{session.key_label}@{host or 'unknown'}", via="console")
    return RunContext(operator=operator, tenant=session.principal.tenant)


def _unsafe(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    scope: dict[str, Any] = dict(connection.scope)
    return scope.get("method") in UNSAFE_METHODS


def _same_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """A browser names the page a form was sent from; it must be this server."""
    origin = connection.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # "null": a sandboxed or privacy-stripped page, refused
    return urlsplit(origin).netloc == connection.headers.get("host", "")


def make_console_guard(
    state: Callable[[], ApiState],
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    """The console router's guard; ``state`` gives the running app's (built on startup)."""

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        await check_session(state(), connection, handler)

    return guard


async def check_session(
    api: ApiState, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    if handler.opt.get("console") == "anonymous":
        if _unsafe(connection) and not _same_origin(connection):
            raise CsrfRefused("this form was sent from another site")
        return
    session = await api.console.find(connection.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired("sign in to use the console")
    if _unsafe(connection):
        if not _same_origin(connection):
            raise CsrfRefused("this form was sent from another site")
        form = await Request(connection.scope, connection.receive).form()
        presented = form.get("csrf")
        if not session.csrf_matches(presented if isinstance(presented, str) else None):
            raise CsrfRefused(
                "this form has no valid security token (it may be from an old page); "
                "reload the page and try again"
            )
    connection.scope["console_session"] = session  # type: ignore[typeddict-unknown-key]


def _secure(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"


def session_cookie(request: Request[Any, Any, Any], value: str, max_age: int | None) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=value,
        path="/console",
        httponly=True,
        secure=_secure(request),
        samesite="strict",
        max_age=max_age,
    )


def on_refused(request: Request[Any, Any, Any], error: ConsoleRefused) -> Response[Any]:
    """A page without a session goes to the sign-in page (and back after it); a
    refused form or stream gets a page saying why."""
    if isinstance(error, SignInRequired):
        if request.method == "GET" and not request.url.path.endswith("/stream"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return Redirect(f"/console/sign-in?next={quote(target, safe='')}", status_code=303)
        return Template(
            template_name="refused.html",
            context={"message": error.reason, "session": None},
            status_code=401,
        )
    return Template(
        template_name="refused.html",
        context={"message": error.reason, "session": None},
        status_code=error.status,
    )


def on_not_found(request: Request[Any, Any, Any], error: ConsoleNotFound) -> Response[Any]:
    session = request.scope.get("console_session")
    return Template(
        template_name="not_found.html",
        context={"message": error.reason, "session": session},
        status_code=404,
    )


def _next(raw: str | None) -> str:
    """Where to go after signing in: a console path of this server, nothing else."""
    if raw and raw.startswith("/console") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/console"


def _sign_in_page(
    request: Request[Any, Any, Any], *, error: str | None = None, status: int = 200
) -> Template:
    pre = secrets.token_urlsafe(24)
    response = Template(
        template_name="sign_in.html",
        context={
            "session": None,
            "pre": pre,
            "error": error,
            "next": _next(request.query_params.get("next")),
        },
        status_code=status,
    )
    response.set_cookie(
        PRE_SIGN_IN_COOKIE,
        pre,
        path="/console",
        httponly=True,
        secure=_secure(request),
        samesite="strict",
        max_age=3600,
    )
    return response


@get("/sign-in", **ANONYMOUS)
async def sign_in_page(request: Request[Any, Any, Any]) -> Template:
    return _sign_in_page(request)


def _pre_matches(request: Request[Any, Any, Any], presented: Any) -> bool:
    expected = request.cookies.get(PRE_SIGN_IN_COOKIE)
    return (
        isinstance(presented, str)
        and expected is not None
        and secrets.compare_digest(presented, expected)
    )


async def _open(
    request: Request[Any, Any, Any], api: ApiState, principal: Any, to: str
) -> Response[Any]:
    token = await api.console.open(principal)
    response = Redirect(to, status_code=303)
    response.set_cookie(
        session_cookie(request, token, int(api.console.session_ttl.total_seconds()))
    )
    response.delete_cookie(PRE_SIGN_IN_COOKIE, path="/console")
    return response


@post("/sign-in", **ANONYMOUS)
async def sign_in(request: Request[Any, Any, Any], api: NamedDependency[ApiState]) -> Response[Any]:
    """Sign in with an ``admin`` API key: the key is checked like the API checks it."""
    form = await request.form()
    if not _pre_matches(request, form.get("pre")):
        return _sign_in_page(request, error="the sign-in form expired; try again", status=403)
    key = form.get("key")
    principal = await api.auth.authenticate(key.strip()) if isinstance(key, str) else None
    if principal is None:
        return _sign_in_page(
            request, error="that API key is not valid (unknown, malformed or revoked)", status=401
        )
    if not principal.allows("admin"):
        return _sign_in_page(
            request,
            error="that API key lacks the admin scope the console needs "
            f"(it has: {', '.join(sorted(principal.scopes))})",
            status=403,
        )
    next_raw = form.get("next")
    return await _open(
        request, api, principal, _next(next_raw if isinstance(next_raw, str) else None)
    )


@get("/link/{token:str}", **ANONYMOUS)
async def link_page(
    request: Request[Any, Any, Any], token: Annotated[str, PathParameter()]
) -> Template:
    """A sign-in link's page: a button, not a sign-in on GET (link previews and
    prefetchers must not use up a one-time link)."""
    response = _sign_in_page(request)
    response.template_name = "sign_in_link.html"
    response.context["token"] = token
    return response


@post("/link", **ANONYMOUS)
async def sign_in_by_link(
    request: Request[Any, Any, Any], api: NamedDependency[ApiState]
) -> Response[Any]:
    form = await request.form()
    if not _pre_matches(request, form.get("pre")):
        return _sign_in_page(request, error="the sign-in form expired; try again", status=403)
    token = form.get("token")
    principal = await api.console.redeem(token) if isinstance(token, str) else None
    if principal is None:
        return _sign_in_page(
            request,
            error="that sign-in link is used, expired or its key revoked; "
            "make a new one with `pipeline console link`, or sign in with the key",
            status=401,
        )
    return await _open(request, api, principal, "/console")


@post("/sign-out", **SIGNED_IN)
async def sign_out(
    request: Request[Any, Any, Any], api: NamedDependency[ApiState]
) -> Response[Any]:
    await api.console.end(request.cookies.get(COOKIE))
    response = Redirect("/console/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


ROUTES = [sign_in_page, sign_in, link_page, sign_in_by_link, sign_out]
