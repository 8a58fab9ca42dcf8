"""The ``deliver_webhook`` actor, on its own ``webhooks`` queue.

Thin, like the stage actors: the delivery service claims, posts and records. It
schedules its own retries (the delivery row is the one record of attempts), so
Dramatiq's retries are only a safety net for the service itself failing (Postgres
unreachable); a message Dramatiq gives up on makes no dead letter (see
``actors.dead_letters``): the row is overdue later and the dispatcher sends it again.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

from pipeline.messages import Delivery
from pipeline.webhooks.delivery import DeliveryService
from pipeline.webhooks.messages import WEBHOOK_ACTOR, WEBHOOKS_QUEUE

SAFETY_RETRIES = 3
TIME_LIMIT_SLACK_MS = 60_000


def declare_webhook_actor(
    broker: dramatiq.Broker, service: DeliveryService, timeout_ms: int
) -> dramatiq.Actor[[object], None]:
    def run(payload: object) -> None:
        message = CurrentMessage.get_current_message()
        if message is None:  # only when called directly, outside a worker
            raise RuntimeError("the webhook actor runs inside a Dramatiq worker")
        service.deliver(payload, Delivery.from_message(message))

    run.__name__ = run.__qualname__ = WEBHOOK_ACTOR
    declare = dramatiq.actor(
        actor_name=WEBHOOK_ACTOR,
        queue_name=WEBHOOKS_QUEUE,
        broker=broker,
        max_retries=SAFETY_RETRIES,
        min_backoff=1_000,
        max_backoff=30_000,
        time_limit=timeout_ms + TIME_LIMIT_SLACK_MS,
    )
    return declare(run)
