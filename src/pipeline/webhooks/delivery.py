"""One delivery attempt, from its message to its recorded outcome.

1. **Claim** the row in a short transaction (``outbox.claim``): ``delivering``, the fence
   and the attempt count up by one. A message that cannot claim (a duplicate, a stale
   copy, a retry not yet due, a finished delivery) is dropped: the row is the one record.
2. **Post** outside any transaction: signed (``signing``), to a checked and pinned
   address, bounded in time and size (``sender``).
3. **Record** the attempt and the outcome in one transaction, fenced on the claim:
   a 2xx is ``delivered``; ``410 Gone`` disables the endpoint and cancels its unfinished
   deliveries; a refused destination is ``dead`` at once (retrying cannot change the
   address); any other failure is ``retrying`` after the policy's delay (its message
   sent with that delay, after the commit), or ``dead`` with a dead letter of the
   ``webhooks`` queue once the attempts are used up.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, Final

import msgspec
from sqlalchemy import Engine
from sqlalchemy.engine import Row

from pipeline.engine import transitions
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.failures import Failure
from pipeline.messages import Delivery
from pipeline.settings import Settings
from pipeline.webhooks import messages, outbox, signing
from pipeline.webhooks.messages import WebhookMessage
from pipeline.webhooks.policy import RetryPolicy
from pipeline.webhooks.sender import AttemptResult, WebhookSender

logger = logging.getLogger(__name__)

DEADLINE_SLACK: Final = timedelta(seconds=30)
"""Added to the attempt's timeout: a claim older than both was abandoned."""
GONE_REASON: Final = "the receiver answered 410 Gone"

Outcome = str
"""What one message did: ``delivered``, ``retrying``, ``dead``, ``cancelled``,
``dropped`` (could not claim) or ``lost`` (the fence was taken over meanwhile)."""


class DeliveryService:
    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        settings: Settings,
        sender: WebhookSender,
        *,
        clock: Any = time.time,
    ) -> None:
        config = settings.webhooks
        self.engine = engine
        self.dispatcher = dispatcher
        self.sender = sender
        self.clock = clock
        self.policy = RetryPolicy(config.max_attempts, config.min_backoff_ms, config.max_backoff_ms)
        self.claim_deadline = timedelta(milliseconds=config.timeout_ms) + DEADLINE_SLACK
        self.grace = timedelta(milliseconds=settings.stages.queued_grace_ms)

    def deliver(self, payload: object, delivery: Delivery) -> Outcome:
        try:
            message = WebhookMessage.from_args(payload)
        except msgspec.ValidationError as error:
            logger.warning(
                "webhooks: dropping a malformed message %s: %s", delivery.message_id, error
            )
            return "dropped"
        with self.engine.begin() as conn:
            claimed = conn.execute(
                outbox.claim(message.delivery_id, delivery.message_id, self.claim_deadline)
            ).first()
        if claimed is None:
            logger.debug("webhooks: %s not claimable (duplicate, stale or not due)", message)
            return "dropped"
        result = self._post(claimed)
        return self._record(claimed, result, delivery)

    def _post(self, claimed: Row[Any]) -> AttemptResult:
        body = msgspec.json.encode(claimed.payload)
        secrets = [claimed.secret, *([claimed.previous_secret] if claimed.previous_secret else [])]
        headers = signing.headers(secrets, signing.message_id(claimed.id), int(self.clock()), body)
        return self.sender.post(claimed.url, headers, body)

    def _record(self, claimed: Row[Any], result: AttemptResult, delivery: Delivery) -> Outcome:
        delivery_id, fence, attempts = claimed.id, claimed.fence, claimed.attempts
        attempt = outbox.attempt(
            delivery_id,
            attempts,
            claimed.started_at,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error
            if result.excerpt is None or result.delivered
            else f"{result.error}: {result.excerpt}",
        )
        if result.delivered:
            assert result.status_code is not None
            with self.engine.begin() as conn:
                done = conn.execute(outbox.delivered(delivery_id, fence, result.status_code))
                conn.execute(attempt)
                return "delivered" if done.first() else "lost"
        error = result.error or "failed"
        if result.status_code == 410:
            with self.engine.begin() as conn:
                conn.execute(outbox.lock_endpoint(claimed.endpoint_id, None))
                conn.execute(outbox.disable_endpoint(claimed.endpoint_id, GONE_REASON))
                conn.execute(outbox.cancel_unfinished(claimed.endpoint_id, GONE_REASON))
                conn.execute(attempt)
            logger.warning("webhooks: endpoint %s disabled: %s", claimed.endpoint_id, GONE_REASON)
            return "cancelled"
        if result.refused or self.policy.exhausted(attempts):
            if result.refused:
                failure = Failure("DestinationRefused", error, transient=False)
            else:
                failure = Failure(
                    "WebhookUndeliverable", f"{attempts} attempt(s) failed; last: {error}", True
                )
            return self._die(claimed, result, failure, attempt, delivery)
        delay = timedelta(milliseconds=self.policy.delay_ms(attempts, result.retry_after_s))
        retry = messages.build(delivery_id)
        with self.engine.begin() as conn:
            held = conn.execute(
                outbox.retrying(
                    delivery_id,
                    fence,
                    delay=delay,
                    grace=self.grace,
                    message_id=retry.message_id,
                    status_code=result.status_code,
                    error=error,
                )
            ).first()
            conn.execute(attempt)
        if held is None:
            return "lost"
        # Lost on the way (Redis down): the row is overdue later, and the dispatcher re-sends.
        self.dispatcher.send_after_commit(retry, delay_ms=int(delay.total_seconds() * 1000))
        return "retrying"

    def _die(
        self,
        claimed: Row[Any],
        result: AttemptResult,
        failure: Failure,
        attempt: Any,
        delivery: Delivery,
    ) -> Outcome:
        generation = claimed.payload.get("data", {}).get("generation")
        with self.engine.begin() as conn:
            if claimed.document_id is not None:  # lock order: document, delivery, letter
                conn.execute(transitions.lock_document(claimed.document_id))
            dead = conn.execute(
                outbox.died(
                    claimed.id, claimed.fence, status_code=result.status_code, error=failure.reason
                )
            ).first()
            conn.execute(attempt)
            if dead is None:
                return "lost"
            conn.execute(
                transitions.webhook_letter(
                    claimed.id,
                    delivery,
                    document_id=claimed.document_id,
                    generation=generation if isinstance(generation, int) else None,
                    failure=failure,
                    attempts=dead.attempts,
                )
            )
        logger.warning("webhooks: delivery %s is dead: %s", claimed.id, failure.reason)
        return "dead"
