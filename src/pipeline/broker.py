"""The Dramatiq broker: Redis, JSON via msgspec, explicit middleware.

Build the broker before declaring any actor: Dramatiq binds actors to the broker
that is current when they are declared.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any

import dramatiq
import msgspec
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import DecodeError
from dramatiq.middleware import (
    AgeLimit,
    CurrentMessage,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from pipeline.dramatiq_internals import RedisConsumer, nack
from pipeline.settings import Settings

logger = logging.getLogger(__name__)

PoisonHandler = Callable[[str, str, bytes, str], None]
"""Called as ``handler(queue_name, message_id, raw_bytes, reason)`` for an undecodable message."""

_REDIS_ID = re.compile(rb'"redis_message_id"\s*:\s*"([0-9a-f-]{36})"')
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(dict[str, Any])


class MsgspecJSONEncoder(dramatiq.Encoder):
    """Dramatiq's JSON format, encoded and decoded by msgspec (faster, strict UTF-8)."""

    def encode(self, data: dict[str, Any]) -> bytes:
        return _json_encoder.encode(data)

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            return _json_decoder.decode(data)
        except msgspec.DecodeError as error:
            raise DecodeError(  # type: ignore[no-untyped-call]
                f"undecodable message {data[:200]!r}", data, error
            ) from None


class PipelineRedisBroker(RedisBroker):
    """A RedisBroker whose consumers set aside undecodable messages instead of wedging.

    Dramatiq's Redis consumer raises on a message it cannot decode, after the message
    has already moved to the worker's ack set: the consumer restarts, and the message
    comes back when the worker dies, forever. Here such a message is nacked (so it
    lands in Dramatiq's own ``.XQ`` dead-letter queue) and reported to ``on_poison``,
    which keeps a durable copy in Postgres; the consumer carries on.
    """

    def __init__(self, *, on_poison: PoisonHandler | None = None, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self.on_poison = on_poison

    @property
    def consumer_class(self) -> type[RedisConsumer]:
        return _PoisonSafeConsumer

    def quarantine(self, queue_name: str, data: bytes, reason: str) -> None:
        redis_id = self._find_redis_id(queue_name, data)
        if redis_id is not None:
            nack(self, queue_name, redis_id)
        message_id = redis_id or hashlib.sha256(data).hexdigest()[:32]
        logger.error("undecodable message %s on %s: %s", message_id, queue_name, reason)
        if self.on_poison is None:
            return
        try:
            self.on_poison(queue_name, message_id, data, reason)
        except Exception:
            # The message is already in Redis's dead-letter set. Raising here would stop
            # the consumer, and the messages it had prefetched would wait for this worker
            # to die: a forged message must not be able to do that.
            logger.exception("could not record undecodable message %s", message_id)

    def _find_redis_id(self, queue_name: str, data: bytes) -> str | None:
        found = _REDIS_ID.search(data)
        if found is not None:
            return found.group(1).decode()
        messages = f"{self.namespace}:{queue_name}.msgs"
        for key, value in self.client.hscan_iter(messages, count=1000):
            if value == data:
                return key.decode() if isinstance(key, bytes) else str(key)
        return None


class _PoisonSafeConsumer(RedisConsumer):
    def __next__(self) -> Any:
        while True:
            try:
                return super().__next__()  # type: ignore[no-untyped-call]
            except DecodeError as error:
                broker: PipelineRedisBroker = self.broker
                reason = f"undecodable message: {error.error}"[:500]
                broker.quarantine(self.queue_name, bytes(error.data), reason)


def make_broker(settings: Settings) -> PipelineRedisBroker:
    """A Redis broker with the middleware every stage actor relies on.

    Retries and TimeLimit carry defaults here; each actor overrides them with its
    own stage policy (``max_retries``, ``min_backoff``, ``max_backoff``, ``time_limit``).
    """
    dramatiq.set_encoder(MsgspecJSONEncoder())
    middleware = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Retries(),
        CurrentMessage(),
    ]
    broker = PipelineRedisBroker(
        url=settings.broker.url,
        namespace=settings.broker.namespace,
        middleware=middleware,
    )
    dramatiq.set_broker(broker)
    return broker
