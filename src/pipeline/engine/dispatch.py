"""Building and sending stage messages.

A message is built *before* the transaction that records it commits (so its id can
be stored on the stage row) and sent only *after* the commit. A send that fails
after a commit leaves the row ``queued`` with a deadline; the reconciler re-sends it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio.to_thread
import dramatiq
import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from pipeline.dramatiq_internals import dispatch_lua
from pipeline.messages import StageMessage

logger = logging.getLogger(__name__)


class Dispatcher:
    """Turns :class:`StageMessage` values into Dramatiq messages on the stage's queue."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def build(
        self, message: StageMessage, *, message_id: str | None = None
    ) -> dramatiq.Message[Any]:
        """A new Dramatiq message for ``message`` (a new id, unless ``message_id`` is given)."""
        built: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=message.stage,
            actor_name=message.stage,
            args=(message.to_args(),),
            kwargs={},
            options={},
        )
        return built if message_id is None else built.copy(message_id=message_id)

    def send(self, message: dramatiq.Message[Any], *, delay_ms: int | None = None) -> None:
        self.broker.enqueue(message, delay=delay_ms)

    def send_after_commit(
        self, message: dramatiq.Message[Any], *, delay_ms: int | None = None
    ) -> bool:
        """Send a message whose stage row is already committed; never raises.

        ``delay_ms`` holds it back that long (a retry, sent when it is due). A failed
        send is logged and left to the reconciler, which re-sends any row that waits
        past its deadline. Returns whether the send went through.
        """
        try:
            self.send(message, delay_ms=delay_ms)
        except Exception:
            logger.exception(
                "could not send %s message %s; the reconciler will re-send it",
                message.queue_name,
                message.message_id,
            )
            return False
        return True

    def ping(self) -> None:
        """Raise if the broker's Redis does not answer."""
        self.redis_client().ping()

    def redis_client(self) -> Any:
        """The broker's Redis client (for queue depths and health checks)."""
        if not isinstance(self.broker, RedisBroker):
            raise TypeError("the pipeline's broker is a RedisBroker")
        return self.broker.client


class AsyncSender:
    """Sends stage messages from an event loop without a thread hop.

    Does what ``RedisBroker.enqueue`` does, with ``redis.asyncio``: the same Lua
    script (the broker's, so with its wake-up announcement when it has one), keys and
    arguments, so workers see exactly what Dramatiq itself would have enqueued.
    (Broker ``enqueue`` middleware hooks do not run here; the API's broker has none
    that act on enqueue.)
    """

    def __init__(self, broker: RedisBroker, url: str) -> None:
        self.broker = broker
        self.client = aioredis.Redis.from_url(url)
        source: bytes = getattr(broker, "dispatch_source", None) or dispatch_lua()
        self.script = self.client.register_script(source)
        self._max_unpack: int | None = None

    async def send(self, message: dramatiq.Message[Any]) -> None:
        broker = self.broker
        if self._max_unpack is None:
            # Computed by Dramatiq once per process (a Redis call) and cached on the class.
            self._max_unpack = int(await anyio.to_thread.run_sync(broker._max_unpack_size))
        max_unpack: int = self._max_unpack
        redis_id = str(uuid.uuid4())
        envelope = message.copy(options={"redis_message_id": redis_id})
        await self.script(
            keys=[broker.namespace],
            args=[
                "enqueue",
                current_millis(),
                envelope.queue_name,
                broker.broker_id,
                broker.heartbeat_timeout,
                broker.dead_message_ttl,
                0,  # no maintenance from the API: workers do it
                max_unpack,
                redis_id,
                envelope.encode(),
            ],
        )

    async def close(self) -> None:
        await self.client.aclose()
