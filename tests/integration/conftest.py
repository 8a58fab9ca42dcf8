"""In-process pipeline for integration tests: real Postgres, real Redis, real Dramatiq.

One broker, one executor and one Dramatiq worker serve the whole session; the API
runs in Litestar's test client against the same database and broker. The client
sends an API key of tenant ``default`` with every scope. The helpers the tests share
live in ``tests.support``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from litestar.testing import TestClient
from sqlalchemy import Engine

from pipeline.actors import declare_actors, declare_operations_actor
from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import StageExecutor
from pipeline.http.app import create_app
from pipeline.operations.common import Operator, RunContext
from pipeline.operations.replay import ReplayService
from pipeline.operations.rerun import RerunService
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE
from pipeline.wiring import Wiring
from tests.support.api import bearer, make_key
from tests.support.faults import FaultPlan, PlannedFaults


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
    return ReplayService(engine, Dispatcher(broker), settings, PIPELINE)


@pytest.fixture(scope="session")
def rerun_service(settings: Settings, broker: dramatiq.Broker, engine: Engine) -> RerunService:
    return RerunService(engine, Dispatcher(broker), settings, PIPELINE)


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
def api_key(engine: Engine) -> str:
    """Tenant ``default``, every scope: what the session's ``client`` sends."""
    return make_key(engine)


@pytest.fixture(scope="session")
def client(settings: Settings, broker: dramatiq.Broker, api_key: str) -> Iterator[TestClient[Any]]:
    app = create_app(settings, dispatcher=Dispatcher(broker))
    with TestClient(app) as client:
        client.headers.update(bearer(api_key))
        yield client


logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.fixture
def controls(settings: Settings, engine: Engine) -> Iterator[Any]:
    """The stage controls (pause/resume); whatever a test paused is resumed after it."""
    service = Wiring(settings, engine=engine).stage_controls
    yield service
    run = RunContext(operator=Operator(name="tests@here", via="cli"))
    for stage in service.definition.names:
        service.resume(stage, run)
