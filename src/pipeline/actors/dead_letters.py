"""Durable dead letters for messages Dramatiq itself gives up on.

The executor dead-letters what it processes. Two kinds of message never reach it:
one naming an actor this worker does not have, and one whose retries Dramatiq used
up because the executor itself could not run (for example Postgres was down on
every attempt). Dramatiq nacks both into Redis's short-lived ``.XQ`` set.

The first is poison: this middleware keeps a copy in Postgres so that operators can
find and replay it. The second is no verdict on its document — the row is the one
record of attempts, and none failed — so it makes no dead letter: the executor
records why the message went away (:meth:`StageExecutor.given_up`) and the
reconciler sends the unfinished stage again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

import dramatiq
from dramatiq.errors import ActorNotFound

from pipeline.dramatiq_internals import failure_of, proxied_message
from pipeline.messages import Delivery, StageMessage
from pipeline.webhooks.messages import WEBHOOK_ACTOR

logger = logging.getLogger(__name__)

Recorder = Callable[..., None]
GivenUp = Callable[[Delivery, StageMessage, str], None]


class DeadLetterRecorder(dramatiq.Middleware):
    """Calls ``given_up`` for a nacked stage message, ``record`` (poison) for any other."""

    def __init__(self, record: Recorder, given_up: GivenUp, stages: Collection[str]) -> None:
        self.record = record
        self.given_up = given_up
        self.stages = frozenset(stages)

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.broker.MessageProxy) -> None:
        error = failure_of(message)
        delivery = Delivery.from_message(proxied_message(message))
        if isinstance(error, ActorNotFound):
            error_type = "UnknownActor"
            reason = f"no actor named {message.actor_name!r} handles queue {message.queue_name!r}"
        else:
            error_type = type(error).__name__ if error else "Nacked"
            reason = f"Dramatiq gave up on the message: {error}" if error else "message nacked"
        stage = message.actor_name if message.actor_name in self.stages else None
        stage_message = _stage_message(message)
        if message.actor_name == WEBHOOK_ACTOR and not isinstance(error, ActorNotFound):
            # Like a stage message Dramatiq gave up on: no verdict on the delivery, whose
            # row is the record; the webhook dispatcher re-sends it once it is overdue.
            logger.warning(
                "webhook message %s given up by Dramatiq: %s", message.message_id, reason
            )
            return
        try:
            if (
                stage is not None
                and stage_message is not None
                and stage_message.stage == stage
                and not isinstance(error, ActorNotFound)
            ):
                self.given_up(delivery, stage_message, reason[:1000])
            else:
                self.record(delivery, error_type, reason[:1000], stage, message=stage_message)
        except Exception:
            logger.exception("could not record dead letter for message %s", message.message_id)


def _stage_message(message: dramatiq.broker.MessageProxy) -> StageMessage | None:
    args: Any = message.args
    try:
        return StageMessage.from_args(args[0])
    except Exception:
        return None
