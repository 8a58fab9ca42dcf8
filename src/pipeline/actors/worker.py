"""The module ``dramatiq`` loads in every worker process.

Dramatiq imports this module by name in each child process, so this is the one place
where settings are read from the environment on import: the broker is built first,
then the executor, then the actors bound to both.
"""

from __future__ import annotations

import os
import socket

from pipeline.actors import declare_actors, declare_operations_actor
from pipeline.actors.dead_letters import DeadLetterRecorder
from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import StageExecutor
from pipeline.faults import Faults
from pipeline.logs import configure_logging
from pipeline.messages import Delivery
from pipeline.monitoring.metrics import StageMetrics
from pipeline.operations.jobs import JobRunner
from pipeline.operations.replay import ReplayService
from pipeline.operations.rerun import RerunService
from pipeline.settings import Settings
from pipeline.stages.builtin import make_handlers

configure_logging()  # Dramatiq set up the handlers; give them our format and context
settings = Settings.from_env()
broker = make_broker(settings)
faults = Faults(settings.faults)
worker_id = f"{socket.gethostname()}:{os.getpid()}"
engine = make_engine(settings, application_name=f"pipeline-worker:{worker_id}")
dispatcher = Dispatcher(broker)
executor = StageExecutor(
    engine,
    dispatcher,
    make_handlers(settings, faults=faults),
    settings,
    faults=faults,
    worker_id=worker_id,
    observer=StageMetrics(),
)
actors = declare_actors(broker, executor, settings)
jobs = JobRunner(
    engine,
    ReplayService(engine, dispatcher, settings),
    RerunService(engine, dispatcher, settings),
)
operations = declare_operations_actor(broker, jobs)
broker.add_middleware(DeadLetterRecorder(executor.poison, executor.given_up))
if os.environ.get("dramatiq_prom_port"):  # noqa: SIM112 - Dramatiq names it so
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())


def _undecodable(queue_name: str, message_id: str, data: bytes, reason: str) -> None:
    delivery = Delivery.undecodable(queue_name, message_id, data)
    executor.poison(delivery, "UndecodableMessage", reason, None)


broker.on_poison = _undecodable
