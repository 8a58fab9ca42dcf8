"""In-process pipeline for integration tests: real Postgres, real Redis, real Dramatiq.

One broker, one executor and one Dramatiq worker serve the whole session; the API
runs in Litestar's test client against the same database and broker. The client
sends an API key of tenant ``default`` with every scope; :func:`make_key` and
:class:`AsKey` make requests as other tenants or with fewer scopes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import httpx
import pytest
from dramatiq import Worker
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.access.keys import create_key
from pipeline.actors import declare_actors, declare_operations_actor
from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import StageExecutor
from pipeline.http.app import create_app
from pipeline.operations.replay import ReplayService
from pipeline.operations.rerun import RerunService
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE
from pipeline.wiring import Wiring

from .faults import FaultPlan, PlannedFaults


@pytest.fixture(scope="session")
def broker(settings: Settings) -> dramatiq.Broker:
    return make_broker(settings)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def faults() -> FaultPlan:
    return FaultPlan()


@pytest.fixture(scope="session")
def executor(
    settings: Settings, broker: dramatiq.Broker, engine: Engine, faults: FaultPlan
) -> StageExecutor:
    planned = PlannedFaults(faults)
    wiring = Wiring(settings, broker=broker, engine=engine, faults=planned, worker_id="test-worker")
    executor = wiring.executor
    declare_actors(broker, executor, wiring.policies)
    declare_operations_actor(broker, wiring.jobs)
    return executor


@pytest.fixture(scope="session")
def replay_service(settings: Settings, broker: dramatiq.Broker, engine: Engine) -> ReplayService:
    return ReplayService(engine, Dispatcher(broker), settings)


@pytest.fixture(scope="session")
def rerun_service(settings: Settings, broker: dramatiq.Broker, engine: Engine) -> RerunService:
    return RerunService(engine, Dispatcher(broker), settings)


@pytest.fixture(scope="session")
def worker(broker: dramatiq.Broker, executor: StageExecutor) -> Iterator[Worker]:
    # The dramatiq CLI emits process_boot in each worker process; TimeLimit starts
    # its watchdog thread on it.
    broker.emit_after("process_boot")
    worker = Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(autouse=True)
def _clear_faults(faults: FaultPlan) -> Iterator[None]:
    yield
    faults.clear()


TEST_RATE_PER_S = 10_000.0
"""The session key's upload limit: far above what the tests send, but still checked."""


def make_key(
    engine: Engine,
    tenant: str = "default",
    scopes: str = "ingest,read,admin",
    *,
    rate_limit_per_s: float | None = TEST_RATE_PER_S,
    name: str | None = "tests",
) -> str:
    """A new API key (stored hashed, like ``pipeline keys create`` stores it)."""
    with engine.begin() as conn:
        created = create_key(
            conn, tenant=tenant, scopes=scopes, name=name, rate_limit_per_s=rate_limit_per_s
        )
    return created.key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def api_key(engine: Engine) -> str:
    """Tenant ``default``, every scope: what the session's ``client`` sends."""
    return make_key(engine)


@pytest.fixture(scope="session")
def client(settings: Settings, broker: dramatiq.Broker, api_key: str) -> Iterator[TestClient[Any]]:
    app = create_app(settings, dispatcher=Dispatcher(broker))
    with TestClient(app) as client:
        client.headers.update(bearer(api_key))
        yield client


class AsKey:
    """The session's client sending another key in place of its own (None: no key at all)."""

    def __init__(self, client: TestClient[Any], key: str | None) -> None:
        self.client = client
        self.key = key

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Credentials given in ``headers`` are sent as given; else this key (or none)."""
        given = {name.lower() for name in kwargs.get("headers") or {}}
        request = self.client.build_request(method, url, **kwargs)
        if not given & {"authorization", "x-api-key"}:
            request.headers.pop("authorization", None)
            if self.key is not None:
                request.headers.update(bearer(self.key))
        elif "authorization" not in given:
            request.headers.pop("authorization", None)  # only the X-API-Key given
        return self.client.send(request)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def wait_for_document(
    client: TestClient[Any] | AsKey, document_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll the API until the document is succeeded or failed."""
    deadline = time.monotonic() + timeout
    while True:
        document: dict[str, Any] = client.get(f"/documents/{document_id}").json()
        if document["status"] in ("succeeded", "failed"):
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"document still {document['status']}: {document}")
        time.sleep(0.05)


def assert_problem(response: Any, status: int, detail_part: str) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status`` whose detail says ``detail_part``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert detail_part in body["detail"], body
    return body


def upload(
    client: TestClient[Any] | AsKey,
    data: bytes,
    filename: str = "doc.txt",
    content_type: str = "text/plain",
    headers: dict[str, str] | None = None,
) -> Any:
    return client.post(
        "/documents",
        files={"file": (filename, data, content_type)},
        headers=headers or {},
    )


def stage_statuses(document: dict[str, Any]) -> dict[str, str]:
    return {stage["stage"]: stage["status"] for stage in document["stages"]}


def events(engine: Engine, document_id: str | uuid.UUID) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT stage, event, attempt, detail FROM stage_events "
                "WHERE document_id = :id ORDER BY id"
            ),
            {"id": str(document_id)},
        ).mappings()
        return [dict(row) for row in rows]


ALL_SUCCEEDED = dict.fromkeys(PIPELINE.names, "succeeded")


logging.getLogger("httpx").setLevel(logging.WARNING)
