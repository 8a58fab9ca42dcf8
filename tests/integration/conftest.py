"""In-process pipeline for integration tests: real Postgres, real Redis, real Dramatiq.

One broker, one executor and one Dramatiq worker serve the whole session; the API
runs in Litestar's test client against the same database and broker.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.actors import declare_actors, declare_operations_actor
from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.http.app import create_app
from pipeline.services.dispatch import Dispatcher
from pipeline.services.executor import StageExecutor
from pipeline.services.handlers import make_handlers
from pipeline.services.jobs import JobRunner
from pipeline.services.replay import ReplayService
from pipeline.services.rerun import RerunService
from pipeline.settings import Settings
from pipeline.stages import STAGES

from .faults import FaultPlan, FaultyHandler


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
    handlers: dict[Any, Any] = {
        stage: FaultyHandler(stage, handler, faults)
        for stage, handler in make_handlers(settings).items()
    }
    dispatcher = Dispatcher(broker)
    executor = StageExecutor(engine, dispatcher, handlers, settings, worker_id="test-worker")
    declare_actors(broker, executor, settings)
    runner = JobRunner(
        engine,
        ReplayService(engine, dispatcher, settings),
        RerunService(engine, dispatcher, settings),
    )
    declare_operations_actor(broker, runner)
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


@pytest.fixture(scope="session")
def client(settings: Settings, broker: dramatiq.Broker) -> Iterator[TestClient[Any]]:
    app = create_app(settings, dispatcher=Dispatcher(broker))
    with TestClient(app) as client:
        yield client


def wait_for_document(
    client: TestClient[Any], document_id: str, timeout: float = 30.0
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


def upload(
    client: TestClient[Any],
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


ALL_SUCCEEDED = dict.fromkeys(STAGES, "succeeded")


logging.getLogger("httpx").setLevel(logging.WARNING)
