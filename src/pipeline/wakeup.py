"""Waking an idle Redis consumer when a message arrives, instead of letting it sleep.

Dramatiq's Redis consumer, finding its queue empty, sleeps with a growing backoff up to
the worker timeout (1 s) before it fetches again, so every hop of a document through its
stages can wait that long. Lowering the timeout buys latency with idle polling: every
consumer of every process fetches more often, whether or not anything arrives.

Here the enqueue itself announces the message: the broker's dispatch script (Dramatiq's
own Lua, with one statement appended, see :func:`dispatch_script`) PUBLISHes on the
queue's wake-up channel in the same script call, so the notice costs no extra round trip
and is never sent for a message that was not enqueued. A consumer subscribes to its
queue's channel before its first fetch and, after an empty fetch, blocks on the
subscription instead of sleeping (:class:`Wakeup`).

A notice is only a hint, like the message itself. Pub/sub delivers at most once, and
not at all while the subscriber is disconnected; so the consumer still fetches at least
once per worker timeout, exactly as before, and a lost notice costs latency, never a
message. Notices are forgotten right before each fetch (the fetch sees their messages),
so a stale one causes at most one empty fetch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis

logger = logging.getLogger(__name__)

_PUBLISH = b"""

-- pipeline.wakeup: announce what this call made fetchable, so that idle consumers of
-- the queue wake up now instead of at their next poll (a hint: they still poll). A
-- consumer waits only after a fetch that found the queue empty, so the enqueue that
-- makes the queue non-empty is the one to announce; later ones find it busy.
if (command == "enqueue" and redis.call("llen", queue_full_name) == 1)
    or command == "requeue" or do_maintenance == "1" then
    redis.call("publish", namespace .. ":__wakeup__." .. queue_name, "")
end
"""


def dispatch_script(dramatiq_script: bytes) -> bytes:
    """Dramatiq's dispatch script, followed by the wake-up announcement.

    Appended after the script's last statement, so every command runs exactly as in
    Dramatiq, then ``enqueue`` (a new message, when it made the queue non-empty),
    ``requeue`` (a stopping worker's prefetched messages) and a maintenance pass (a dead
    worker's messages back on the queue) publish on the queue's channel.

    Why the first enqueue is enough: a consumer waits only after a fetch that found the
    queue empty; the first push after that fetch finds the queue still empty (only
    fetches happened since) and is announced. Later pushes land in a queue that some
    woken consumer fetches from again before it waits. Under a backlog no notice is
    sent at all, so the wake-up costs nothing where latency does not need it.
    """
    return dramatiq_script.rstrip() + _PUBLISH


def channel(namespace: str, queue_name: str) -> str:
    """The wake-up channel of ``queue_name`` (a delay queue ``X.DQ`` has its own)."""
    return f"{namespace}:__wakeup__.{queue_name}"


class Wakeup:
    """One consumer's subscription to its queue's wake-up channel.

    Used from the consumer's own thread only: :meth:`arm` right before each fetch,
    :meth:`wait` after an empty one. Any Redis error drops the subscription; the wait
    then sleeps (the old poll) and the next :meth:`arm` subscribes again.
    """

    def __init__(self, client: redis.Redis, channel_name: str) -> None:
        self._client = client
        self._channel = channel_name
        self._pubsub: Any = None

    def arm(self) -> None:
        """Subscribe (once), then forget the notices that already arrived."""
        try:
            if self._pubsub is None:
                self._subscribe()
            while self._pubsub.get_message(timeout=0.0) is not None:
                pass
        except redis.RedisError:
            logger.warning("wake-up channel %s lost; polling until it is back", self._channel)
            self.close()

    def wait(self, seconds: float) -> bool:
        """Block until a notice or ``seconds``; whether a notice came."""
        deadline = time.monotonic() + seconds
        if self._pubsub is not None:
            try:
                while (remaining := deadline - time.monotonic()) > 0:
                    notice = self._pubsub.get_message(timeout=remaining)
                    if notice is not None and notice["type"] == "message":
                        return True
                return False
            except redis.RedisError:
                logger.warning("wake-up channel %s lost; polling until it is back", self._channel)
                self.close()
        time.sleep(max(0.0, deadline - time.monotonic()))
        return False

    def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                pubsub.close()

    def _subscribe(self) -> None:
        """Subscribe and wait for Redis to confirm it: a message enqueued after the
        confirmation is announced to us; one enqueued before it, the fetch that follows
        sees."""
        pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self._channel)
            deadline = time.monotonic() + 5
            while (remaining := deadline - time.monotonic()) > 0:
                reply = pubsub.get_message(timeout=remaining)
                if reply is not None and reply["type"] == "subscribe":
                    self._pubsub = pubsub
                    return
            raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {self._channel}")
        except BaseException:
            pubsub.close()
            raise
