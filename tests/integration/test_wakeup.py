"""The consumer wake-up (``pipeline.wakeup``) against a real Redis: an enqueue announces
itself, an idle consumer is woken by it, and a message that comes without a notice (or
while the subscription is down) is still fetched by the consumer's regular poll.

The whole integration session's worker runs on this consumer too (the broker's default);
these tests pin the parts the other tests cannot see. Each uses a namespace of its own,
and brokers built directly (``make_broker`` would replace Dramatiq's global broker).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import dramatiq
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.broker import PipelineRedisBroker
from pipeline.engine.dispatch import AsyncSender
from pipeline.settings import Settings
from pipeline.wakeup import Wakeup, channel
from tests.support.processes import free_port

QUEUE = "wakeup-test"


@pytest.fixture
def namespace(settings: Settings) -> Iterator[str]:
    name = f"{settings.broker.namespace}-wakeup-{uuid.uuid4().hex[:6]}"
    yield name
    client = redis.Redis.from_url(settings.broker.url)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)


def broker_for(settings: Settings, namespace: str, *, wakeup: bool = True) -> PipelineRedisBroker:
    return PipelineRedisBroker(url=settings.broker.url, namespace=namespace, wakeup=wakeup)


def message(queue: str = QUEUE) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name="noop", args=(), kwargs={}, options={})


def subscribed(settings: Settings, namespace: str, queue: str = QUEUE) -> Wakeup:
    wakeup = Wakeup(redis.Redis.from_url(settings.broker.url), channel(namespace, queue))
    wakeup.arm()
    return wakeup


def test_an_enqueue_wakes_the_queues_subscribers_and_only_with_the_wakeup_on(
    settings: Settings, namespace: str
) -> None:
    wakeup = subscribed(settings, namespace)
    try:
        plain = broker_for(settings, namespace, wakeup=False)
        plain.enqueue(message())
        assert wakeup.wait(0.3) is False  # Dramatiq's own script announces nothing
        assert len(plain.do_fetch(QUEUE, 10)) == 1  # empty again
        broker_for(settings, namespace).enqueue(message())
        assert wakeup.wait(30) is True
    finally:
        wakeup.close()


def test_only_the_enqueue_that_finds_the_queue_empty_is_announced(
    settings: Settings, namespace: str
) -> None:
    """A consumer waits only after an empty fetch; under a backlog nobody waits."""
    broker = broker_for(settings, namespace)
    wakeup = subscribed(settings, namespace)
    try:
        broker.enqueue(message())
        assert wakeup.wait(30) is True
        broker.enqueue(message())  # the queue holds one already: a busy queue
        assert wakeup.wait(0.3) is False
        assert len(broker.do_fetch(QUEUE, 10)) == 2
        broker.enqueue(message())  # empty again: the next one is announced
        assert wakeup.wait(30) is True
    finally:
        wakeup.close()


def test_the_apis_async_sender_announces_its_messages_too(
    settings: Settings, namespace: str
) -> None:
    broker = broker_for(settings, namespace)
    wakeup = subscribed(settings, namespace)

    async def send() -> None:
        sender = AsyncSender(broker, settings.broker.url)
        try:
            await sender.send(message())
        finally:
            await sender.close()

    try:
        anyio.run(send)
        assert wakeup.wait(30) is True
        fetched = broker.do_fetch(QUEUE, 10)
        assert len(fetched) == 1  # and the message itself is where Dramatiq looks
    finally:
        wakeup.close()


def test_a_delayed_message_wakes_its_delay_queue(settings: Settings, namespace: str) -> None:
    wakeup = subscribed(settings, namespace, f"{QUEUE}.DQ")
    try:
        broker_for(settings, namespace).enqueue(message(), delay=60_000)
        assert wakeup.wait(30) is True
    finally:
        wakeup.close()


def test_notices_that_arrived_before_a_fetch_are_forgotten(
    settings: Settings, namespace: str
) -> None:
    broker = broker_for(settings, namespace)
    wakeup = subscribed(settings, namespace)
    try:
        broker.enqueue(message())
        broker.enqueue(message())
        wakeup.arm()  # what the consumer does right before it fetches both
        assert wakeup.wait(0.3) is False
    finally:
        wakeup.close()


def test_an_idle_consumer_is_woken_by_an_enqueue(settings: Settings, namespace: str) -> None:
    """The consumer waits an hour between fetches: only the notice can wake it."""
    broker = broker_for(settings, namespace)
    consumer = broker.consume(QUEUE, prefetch=1, timeout=3_600_000)
    received: list[Any] = []

    def consume() -> None:
        for proxy in consumer:
            if proxy is not None:
                received.append(proxy)
                return

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        # The consumer's first fetch (empty) writes its broker's heartbeat; it subscribed
        # before that fetch, so from here on an enqueue is announced to it.
        heartbeats = f"{namespace}:__heartbeats__"
        while broker.client.zscore(heartbeats, broker.broker_id) is None:
            thread.join(0.01)
        broker_for(settings, namespace).enqueue(message())  # another broker, another id
        thread.join(30)  # a bound on a hang, not a speed: the poll alone takes an hour
        assert [proxy.queue_name for proxy in received] == [QUEUE]
    finally:
        consumer.close()


def test_a_message_without_a_notice_is_still_fetched_by_the_regular_poll(
    settings: Settings, namespace: str
) -> None:
    broker = broker_for(settings, namespace)
    consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
    try:
        assert next(consumer) is None  # idle: fetched nothing, waited its timeout
        broker_for(settings, namespace, wakeup=False).enqueue(message())
        proxy = next(proxy for proxy in consumer if proxy is not None)
        assert proxy.queue_name == QUEUE
    finally:
        consumer.close()


def test_without_redis_the_wakeup_falls_back_to_sleeping() -> None:
    nowhere = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    wakeup = Wakeup(nowhere, "nowhere")
    wakeup.arm()  # logs the lost channel instead of raising
    assert wakeup.wait(0.01) is False


def test_the_wait_ends_when_a_delayed_message_falls_due(settings: Settings, namespace: str) -> None:
    broker = broker_for(settings, namespace)
    broker.enqueue(message(), delay=5_000)
    consumer: Any = broker.consume(f"{QUEUE}.DQ", prefetch=10, timeout=3_600_000)
    try:
        proxy = next(proxy for proxy in consumer if proxy is not None)
        assert 0 < consumer._idle_seconds() <= 5.0
        consumer.ack(proxy)
        assert consumer._idle_seconds() == 3600.0
    finally:
        consumer.close()
