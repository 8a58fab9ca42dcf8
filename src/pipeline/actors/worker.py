"""The module ``dramatiq`` loads in every worker process.

Dramatiq imports this module by name in each child process, so this is the one place
where settings are read from the environment on import; the composition root builds
the rest, and the actors are bound to its executor and job runner.
"""

from __future__ import annotations

import os
import socket

from pipeline.actors import declare_actors, declare_operations_actor
from pipeline.actors.dead_letters import DeadLetterRecorder
from pipeline.actors.webhooks import declare_webhook_actor
from pipeline.broker import make_broker
from pipeline.logs import configure_logging
from pipeline.messages import Delivery
from pipeline.monitoring.metrics import StageMetrics
from pipeline.settings import Settings
from pipeline.wiring import Wiring

configure_logging()  # Dramatiq set up the handlers; give them our format and context
worker_id = f"{socket.gethostname()}:{os.getpid()}"
settings = Settings.from_env()
broker = make_broker(settings)
wiring = Wiring(
    settings,
    broker=broker,
    application_name=f"pipeline-worker:{worker_id}",
    worker_id=worker_id,
    observer=StageMetrics(),
)
executor = wiring.executor
actors = declare_actors(broker, executor, wiring.policies)
operations = declare_operations_actor(broker, wiring.jobs)
webhooks = declare_webhook_actor(broker, wiring.webhook_delivery, settings.webhooks.timeout_ms)
broker.add_middleware(
    DeadLetterRecorder(executor.poison, executor.given_up, wiring.definition.names)
)
if os.environ.get("dramatiq_prom_port"):  # noqa: SIM112 - Dramatiq names it so
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())


def _undecodable(queue_name: str, message_id: str, data: bytes, reason: str) -> None:
    delivery = Delivery.undecodable(queue_name, message_id, data)
    executor.poison(delivery, "UndecodableMessage", reason, None)


broker.on_poison = _undecodable
