"""Building and sending stage messages.

A message is built *before* the transaction that records it commits (so its id can
be stored on the stage row) and sent only *after* the commit. A send that fails
after a commit leaves the row ``queued`` with a deadline; the reconciler re-sends it.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from pipeline.messages import StageMessage


class Dispatcher:
    """Turns :class:`StageMessage` values into Dramatiq messages on the stage's queue."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def build(self, message: StageMessage) -> dramatiq.Message[Any]:
        return dramatiq.Message(
            queue_name=message.stage,
            actor_name=message.stage,
            args=(message.to_args(),),
            kwargs={},
            options={},
        )

    def send(self, message: dramatiq.Message[Any]) -> None:
        self.broker.enqueue(message)

    def ping(self) -> None:
        """Raise if the broker's Redis does not answer."""
        self.redis_client().ping()

    def redis_client(self) -> Any:
        """The broker's Redis client (for queue depths and health checks)."""
        if not isinstance(self.broker, RedisBroker):
            raise TypeError("the pipeline's broker is a RedisBroker")
        return self.broker.client
