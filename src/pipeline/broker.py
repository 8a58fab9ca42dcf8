"""The Dramatiq broker: Redis, JSON via msgspec, explicit middleware.

Build the broker before declaring any actor: Dramatiq binds actors to the broker
that is current when they are declared.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
import msgspec
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.middleware import (
    AgeLimit,
    CurrentMessage,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from pipeline.dramatiq_internals import RedisConsumer, dispatch_lua, nack
from pipeline.settings import Settings
from pipeline.wakeup import Wakeup, channel, dispatch_script

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
    """A RedisBroker whose consumers set aside undecodable messages instead of wedging,
    and (with ``wakeup``) wake up when a message arrives instead of sleeping.

    Dramatiq's Redis consumer raises on a message it cannot decode, after the message
    has already moved to the worker's ack set: the consumer restarts, and the message
    comes back when the worker dies, forever. Here such a message is nacked (so it
    lands in Dramatiq's own ``.XQ`` dead-letter queue) and reported to ``on_poison``,
    which keeps a durable copy in Postgres; the consumer carries on.

    With ``wakeup`` every enqueue also announces itself on the queue's wake-up channel
    (in the same script call) and idle consumers block on that channel between fetches
    (:mod:`pipeline.wakeup`); without it they sleep out Dramatiq's backoff.
    """

    def __init__(
        self, *, on_poison: PoisonHandler | None = None, wakeup: bool = True, **options: Any
    ) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self.on_poison = on_poison
        self.wakeup = wakeup
        self.dispatch_source = dispatch_script(dispatch_lua()) if wakeup else dispatch_lua()
        """The dispatch script this broker runs (``AsyncSender`` runs the same)."""
        if wakeup:
            self.scripts["dispatch"] = self.client.register_script(self.dispatch_source)

    @property
    def consumer_class(self) -> type[RedisConsumer]:
        return _WakeableConsumer if self.wakeup else _PoisonSafeConsumer

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


_MIN_DUE_WAIT_MS = 5.0


class _WakeableConsumer(RedisConsumer):
    """Dramatiq's Redis consumer loop, blocking on the wake-up channel when idle.

    The loop is Dramatiq's own ``_RedisConsumer.__next__`` (2.2) with two changes: an
    empty fetch is followed by :meth:`Wakeup.wait` instead of a backoff sleep, and an
    undecodable message is quarantined (as :class:`_PoisonSafeConsumer` does). The wait
    is the worker timeout, as Dramatiq's longest backoff, or shorter when a delayed
    message this consumer handed out falls due sooner (the consumer thread re-enqueues
    due messages between two calls; Dramatiq's short early backoffs did that by luck).
    """

    def __init__(self, broker: PipelineRedisBroker, queue_name: str, prefetch: int, timeout: int):
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.wakeup = Wakeup(broker.client, channel(broker.namespace, queue_name))
        self.etas: dict[str, int] = {}
        """Due times (ms) of delayed messages handed out and not yet acked, by id."""

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:  # Dramatiq warns of a bug here (its #266); skip it
                        continue
                    self.misses = 0
                    try:
                        message = dramatiq.Message.decode(data)
                    except DecodeError as error:
                        broker: PipelineRedisBroker = self.broker
                        reason = f"undecodable message: {error.error}"[:500]
                        broker.quarantine(self.queue_name, bytes(error.data), reason)
                        continue
                    self.queued_message_ids.add(message.message_id)
                    eta = message.options.get("eta")
                    if isinstance(eta, int | float):
                        self.etas[message.message_id] = int(eta)
                    return MessageProxy(message)
                room = self.prefetch - self.outstanding_message_count
                if room <= 0:
                    # Every prefetched message is still being worked on: a notice would
                    # not help, so back off as Dramatiq does (forgetting the notices, so
                    # that a long backlog does not pile them up in Redis for us).
                    self.wakeup.arm()
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    time.sleep(backoff_ms / 1000)
                    return None
                self.wakeup.arm()
                self.message_cache = self.broker.do_fetch(self.queue_name, room)
                if not self.message_cache:
                    self.wakeup.wait(self._idle_seconds())
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def _idle_seconds(self) -> float:
        wait_ms = float(self.timeout)
        if self.etas:
            # At least a few ms: a due message is re-enqueued by the consumer thread
            # as soon as this call returns, and must never turn the wait into a spin.
            due_in = min(self.etas.values()) - current_millis()
            wait_ms = min(wait_ms, max(_MIN_DUE_WAIT_MS, due_in))
        return wait_ms / 1000

    def ack(self, message: MessageProxy) -> None:
        self.etas.pop(message.message_id, None)
        super().ack(message)  # type: ignore[no-untyped-call]

    def nack(self, message: MessageProxy) -> None:
        self.etas.pop(message.message_id, None)
        super().nack(message)  # type: ignore[no-untyped-call]

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        messages = list(messages)
        for message in messages:
            self.etas.pop(message.message_id, None)
        super().requeue(messages)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.wakeup.close()
        super().close()


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
        wakeup=settings.broker.wakeup,
    )
    dramatiq.set_broker(broker)
    return broker
