"""Webhook endpoints: register, list, show (with recent deliveries), rotate, enable, remove.

Handlers parse, call :class:`~pipeline.webhooks.endpoints.WebhookEndpoints` (the CLI's
service too) in a worker thread, and format. Access: reading needs ``read``; registering,
rotating, enabling and removing need ``admin``, because an endpoint hears about *every*
document of the tenant (not only the caller's uploads) and holds a signing secret: an
upload client's ``ingest`` key must not be able to send the tenant's document events to
a URL of its choosing. Another tenant's endpoint answers 404, like an id that does not
exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio.to_thread
import msgspec
from litestar import Controller, HttpMethod, Response, delete, get, post, route
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from pipeline.access.keys import Principal
from pipeline.http.auth import access
from pipeline.http.contract import AUTH, documented
from pipeline.http.json_body import StrictJSONRequest
from pipeline.http.problems import Problem
from pipeline.http.state import ApiState
from pipeline.webhooks.endpoints import (
    EndpointDetail,
    EndpointNotFound,
    EndpointRequest,
    EndpointView,
    EndpointWithSecret,
)

T = TypeVar("T")


class EndpointList(msgspec.Struct, frozen=True):
    items: list[EndpointView]


def _endpoint_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(404, f"no webhook endpoint with id {raw!r}") from None


async def _call(action: Callable[[], T]) -> T:
    try:
        return await anyio.to_thread.run_sync(action)
    except EndpointNotFound as error:
        raise Problem(404, error.reason) from None


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]
    request_class = StrictJSONRequest

    @route("/", http_method=[HttpMethod.OPTIONS], include_in_schema=False, **access("public"))
    async def allow(self) -> Response[None]:
        """``Allow`` for ``/webhooks`` (two methods): Litestar 2's automatic answer names
        only one (see ``DocumentController.allow``); named to register first."""
        return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})

    @route(
        "/{endpoint_id:str}",
        http_method=[HttpMethod.OPTIONS],
        include_in_schema=False,
        **access("public"),
    )
    async def allow_one(self, endpoint_id: Annotated[str, PathParameter()]) -> Response[None]:
        """``Allow`` for ``/webhooks/{id}`` (two methods), as :meth:`allow`."""
        return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS"})

    @post(
        "/",
        status_code=201,
        summary="Register a webhook endpoint",
        description="Deliveries of the chosen `events` (`document.succeeded`, "
        "`document.failed`, `document.deleted`, `stage.dead`) for every document of the "
        "key's tenant are POSTed to `url`, signed as Standard Webhooks says with the "
        "`secret` in the answer, shown this once. The URL must be `https` and resolve to "
        "public addresses only (422 otherwise).",
        **documented(400, *AUTH, 413, 422, 503),
        **access("admin"),
    )
    async def create(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        data: JSONBody[EndpointRequest],
    ) -> Response[EndpointWithSecret]:
        tenant = principal.tenant
        created = await _call(lambda: api.webhooks.create(tenant, data, principal.label))
        location = f"/webhooks/{created.id}"
        return Response(created, status_code=201, headers={"Location": location})

    @get(
        "/",
        summary="List the tenant's webhook endpoints (without their secrets)",
        **documented(*AUTH, 503),
        **access("read"),
    )
    async def list_endpoints(
        self, api: NamedDependency[ApiState], principal: NamedDependency[Principal]
    ) -> EndpointList:
        tenant = principal.tenant
        return EndpointList(await _call(lambda: api.webhooks.list(tenant)))

    @get(
        "/{endpoint_id:str}",
        summary="A webhook endpoint, with its recent deliveries and their attempts",
        **documented(*AUTH, 404, 503),
        **access("read"),
    )
    async def show(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        endpoint_id: Annotated[str, PathParameter()],
    ) -> EndpointDetail:
        parsed, tenant = _endpoint_id(endpoint_id), principal.tenant
        return await _call(lambda: api.webhooks.show(parsed, tenant))

    @post(
        "/{endpoint_id:str}/rotate-secret",
        status_code=200,
        summary="Rotate the signing secret",
        description="Answers the new secret (shown this once). Deliveries are signed with "
        "the new and the old secret (two signatures) until the rotation grace has passed "
        "(`PIPELINE_WEBHOOKS_SECRET_ROTATION_GRACE_S`, a day by default).",
        **documented(*AUTH, 404, 503),
        **access("admin"),
    )
    async def rotate(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        endpoint_id: Annotated[str, PathParameter()],
    ) -> EndpointWithSecret:
        parsed, tenant = _endpoint_id(endpoint_id), principal.tenant
        return await _call(lambda: api.webhooks.rotate(parsed, tenant))

    @post(
        "/{endpoint_id:str}/enable",
        status_code=200,
        summary="Enable an endpoint again (after a 410 Gone disabled it)",
        **documented(*AUTH, 404, 503),
        **access("admin"),
    )
    async def enable(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        endpoint_id: Annotated[str, PathParameter()],
    ) -> EndpointView:
        parsed, tenant = _endpoint_id(endpoint_id), principal.tenant
        return await _call(lambda: api.webhooks.enable(parsed, tenant))

    @delete(
        "/{endpoint_id:str}",
        status_code=204,
        summary="Remove an endpoint; nothing more is delivered to it",
        **documented(*AUTH, 404, 503),
        **access("admin"),
    )
    async def remove(
        self,
        api: NamedDependency[ApiState],
        principal: NamedDependency[Principal],
        endpoint_id: Annotated[str, PathParameter()],
    ) -> None:
        parsed, tenant = _endpoint_id(endpoint_id), principal.tenant
        await _call(lambda: api.webhooks.remove(parsed, tenant))
