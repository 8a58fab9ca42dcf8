"""Every name of Dramatiq's that is not public API, in this one module.

The pipeline leans on these things Dramatiq does not promise:

* ``dramatiq.brokers.redis._RedisConsumer``, subclassed so that an undecodable message
  is quarantined instead of stopping the consumer (:mod:`pipeline.broker`); the broker
  builds consumers through its ``consumer_class`` attribute;
* ``RedisBroker.do_nack``, the Lua script that moves a message to the ``.XQ`` set;
* the Lua source of that dispatch script (:func:`dispatch_lua`) and the broker's
  ``scripts["dispatch"]`` slot, which :mod:`pipeline.wakeup` extends with a PUBLISH;
* the loop of ``_RedisConsumer.__next__`` and the attributes it keeps
  (``message_cache``, ``queued_message_ids``, ``misses``, ``prefetch``, ``timeout``,
  ``outstanding_message_count``, ``broker.do_fetch``), which the wake-up consumer of
  :mod:`pipeline.broker` re-implements with a wait in place of the sleep;
* ``MessageProxy._message``, the message a middleware hook is handed a proxy of;
* ``MessageProxy._exception``, where the worker stores why a message failed (set by
  ``stuff_exception``), read when Dramatiq nacks it (:mod:`pipeline.actors.dead_letters`).

``tests/unit/test_dramatiq_internals.py`` checks each against the installed Dramatiq
and fails loudly, naming the one that moved, when a release changes them. The
``dramatiq`` range in ``pyproject.toml`` admits only the releases that test covers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dramatiq
import dramatiq.brokers.redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.redis import _RedisConsumer as RedisConsumer

__all__ = ["RedisConsumer", "dispatch_lua", "failure_of", "nack", "proxied_message"]


def proxied_message(proxy: dramatiq.broker.MessageProxy) -> dramatiq.Message[Any]:
    """The message behind a middleware hook's proxy."""
    message: dramatiq.Message[Any] = proxy._message
    return message


def failure_of(proxy: dramatiq.broker.MessageProxy) -> BaseException | None:
    """Why the worker failed the message (None when it recorded nothing)."""
    error = getattr(proxy, "_exception", None)
    return error if isinstance(error, BaseException) else None


def nack(broker: RedisBroker, queue_name: str, redis_id: str) -> None:
    """Move a message (by its Redis id) to the queue's dead-letter set."""
    broker.do_nack(queue_name, redis_id)


def dispatch_lua() -> bytes:
    """The source of Dramatiq's Redis dispatch script (every broker command runs it)."""
    return (Path(dramatiq.brokers.redis.__file__).parent / "redis" / "dispatch.lua").read_bytes()
