"""Signed cursors through the API: an edited cursor is the documented 422, and a
cursor one API process issued works on every other one of the deployment.

Without ``PIPELINE_CURSOR_SECRET`` the processes share a secret that the first of them
stored in Postgres; with it, every process configured with the same value accepts the
others' cursors, and one configured differently refuses them.
"""

from __future__ import annotations

import base64
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.settings import Settings
from tests.support.api import assert_problem, bearer, make_key, upload
from tests.support.processes import Processes, free_port, ready, wait_until

PIPELINE = [sys.executable, "-m", "pipeline"]
ISSUED = "a cursor this API issued"


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture(scope="module")
def tenant_key(engine: Engine) -> str:
    """A tenant of its own with three documents, so that pages of one are certain."""
    return make_key(engine, tenant=f"cursors-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def documents(client: TestClient[Any], tenant_key: str) -> list[str]:
    ids = []
    for number in range(3):
        response = upload(
            client, f"cursor document {number} {uuid.uuid4()}".encode(), headers=bearer(tenant_key)
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def pages(client: TestClient[Any] | httpx.Client, key: str, cursor: str | None) -> Any:
    params: dict[str, Any] = {"limit": 1}
    if cursor is not None:
        params["cursor"] = cursor
    return client.get("/documents", params=params, headers=bearer(key))


def first_cursor(client: TestClient[Any], key: str) -> str:
    page = pages(client, key, None).json()
    assert page["next_cursor"] is not None
    return str(page["next_cursor"])


@pytest.fixture
def other_app(settings: Settings, broker: dramatiq.Broker) -> Iterator[Any]:
    """``make(**access settings changes)``: further API apps (each its own process state)."""
    clients: list[TestClient[Any]] = []

    def make(**access: Any) -> TestClient[Any]:
        app = create_app(settings.replace(access=access), dispatcher=Dispatcher(broker))
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_next_cursor_pages_through_every_document(
    client: TestClient[Any], tenant_key: str, documents: list[str]
) -> None:
    seen, cursor = [], None
    while True:
        page = pages(client, tenant_key, cursor).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(documents))


def test_an_edited_cursor_is_the_documented_422(
    client: TestClient[Any], tenant_key: str, documents: list[str]
) -> None:
    cursor = first_cursor(client, tenant_key)
    payload, signature = cursor.split(".")
    at, _row = msgspec.json.decode(b64decode(payload))
    later = msgspec.json.encode([at, str(uuid.UUID(int=2**128 - 1))])
    for edited in [b64encode(later) + "." + signature, payload + "." + signature[:-2] + "AA"]:
        assert_problem(pages(client, tenant_key, edited), 422, ISSUED)
    # The old form (plain base64 of the position) is not issued any more, nor accepted.
    assert_problem(pages(client, tenant_key, payload), 422, ISSUED)


def test_another_tenants_cursor_is_refused(
    client: TestClient[Any], engine: Engine, tenant_key: str, documents: list[str]
) -> None:
    cursor = first_cursor(client, tenant_key)
    assert_problem(pages(client, make_key(engine, tenant="cursor-thief"), cursor), 422, ISSUED)


def test_a_documents_cursor_is_refused_by_the_dead_letter_list(
    client: TestClient[Any], tenant_key: str, documents: list[str], engine: Engine
) -> None:
    cursor = first_cursor(client, tenant_key)
    response = client.get("/dead-letters", params={"cursor": cursor}, headers=bearer(tenant_key))
    assert_problem(response, 422, ISSUED)


def test_apps_without_a_configured_secret_share_the_stored_one(
    client: TestClient[Any], tenant_key: str, documents: list[str], other_app: Any
) -> None:
    cursor = first_cursor(client, tenant_key)
    second = pages(other_app(), tenant_key, cursor)
    assert second.status_code == 200, second.text
    assert [item["id"] for item in second.json()["items"]] == [documents[1]]


def test_a_configured_secret_is_the_one_used(
    client: TestClient[Any], tenant_key: str, documents: list[str], other_app: Any
) -> None:
    one, same = other_app(cursor_secret="s" * 32), other_app(cursor_secret="s" * 32)
    cursor = first_cursor(one, tenant_key)
    assert pages(same, tenant_key, cursor).status_code == 200
    assert_problem(pages(other_app(cursor_secret="t" * 32), tenant_key, cursor), 422, ISSUED)
    assert_problem(pages(client, tenant_key, cursor), 422, ISSUED)  # the stored secret


@pytest.mark.slow
def test_a_cursor_works_across_real_api_processes(
    client: TestClient[Any],
    settings: Settings,
    tenant_key: str,
    documents: list[str],
    tmp_path: Path,
) -> None:
    """Two ``pipeline api`` processes (no secret configured) and the in-process app:
    each page's cursor, issued by one of them, is followed by the next."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.broker.url,
        "PIPELINE_REDIS_NAMESPACE": settings.broker.namespace + "-cursors",
    }
    env.pop("PIPELINE_CURSOR_SECRET", None)
    processes = Processes(env, tmp_path)
    urls = []
    try:
        for n in range(2):
            port = free_port()
            processes.start("api", "--port", str(port), name=f"api{n}")
            urls.append(f"http://127.0.0.1:{port}")
        for n, url in enumerate(urls):
            wait_until(lambda url=url: ready(url), 30, f"api{n}: {processes.log(f'api{n}')}")
        apis = [httpx.Client(base_url=url, timeout=10) for url in urls]
        first = pages(apis[0], tenant_key, None).json()
        second = pages(apis[1], tenant_key, first["next_cursor"])
        assert second.status_code == 200, second.text
        third = pages(client, tenant_key, second.json()["next_cursor"])
        assert third.status_code == 200, third.text
        ids = [page["items"][0]["id"] for page in (first, second.json(), third.json())]
        assert ids == list(reversed(documents))
        for api in apis:
            api.close()
    finally:
        processes.stop_all()


def test_cursor_secret_setting_is_read_and_bounded() -> None:
    from pipeline.settings import SettingsError

    assert Settings.from_env({}).access.cursor_secret is None
    assert Settings.from_env({"PIPELINE_CURSOR_SECRET": "x" * 32}).access.cursor_secret == "x" * 32
    with pytest.raises(SettingsError, match="PIPELINE_CURSOR_SECRET"):
        Settings.from_env({"PIPELINE_CURSOR_SECRET": "short"})
