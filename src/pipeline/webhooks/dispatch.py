"""Sending the outbox's messages: nobody in a transition knows it made a delivery.

The trigger writes deliveries with no message and a deadline of "now"; this sweep gives
each unfinished delivery whose deadline has passed a message on the ``webhooks`` queue
(new ones, and those whose message or worker was lost: a Redis restart, a worker
killed mid-attempt, a delayed retry that vanished), in bounded batches taken with
``FOR UPDATE SKIP LOCKED``, and sends them after the commit. A retry not yet due is
sent with the delay that is left.

It runs as one of the reconciler's sweeps, and also whenever the trigger's
``NOTIFY pipeline_webhooks`` wakes the active reconciler, so a delivery goes out as
soon as its transition commits rather than at the next interval.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

import dramatiq
from sqlalchemy import Engine

from pipeline.engine.dispatch import Dispatcher
from pipeline.webhooks import messages, outbox

logger = logging.getLogger(__name__)

CHANNEL: Final = "pipeline_webhooks"
"""What the outbox trigger notifies (migration 0010)."""
MAX_BATCHES: Final = 20


class WebhookDispatch:
    def __init__(
        self, engine: Engine, dispatcher: Dispatcher, grace: timedelta, batch_size: int
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.grace = grace
        self.batch_size = batch_size

    def __call__(self) -> Mapping[str, int]:
        sent = 0
        for _ in range(MAX_BATCHES):
            count = self._batch()
            sent += count
            if count < self.batch_size:
                break
        return {"webhooks_sent": sent}

    def _batch(self) -> int:
        envelopes: list[tuple[dramatiq.Message[Any], int]] = []
        with self.engine.begin() as conn:
            for row in conn.execute(outbox.due(self.batch_size)).all():
                envelope = messages.build(row.id)
                conn.execute(outbox.dispatched(row.id, envelope.message_id, self.grace))
                delay = int(row.due_in_ms) if row.status == "retrying" else 0
                envelopes.append((envelope, delay))
        for envelope, delay in envelopes:
            # On failure the row keeps its new deadline: a later sweep sends it again.
            self.dispatcher.send_after_commit(envelope, delay_ms=delay or None)
        return len(envelopes)
