"""Event streams against real processes: a ``pipeline api`` and a ``pipeline worker``.

The streams are read over real HTTP connections while the worker moves documents
through their stages, so what a client sees is what the processes really did.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from pipeline.db.engine import make_async_engine
from pipeline.events.feed import Cursor
from pipeline.events.hub import EventHub, SubscriberTooSlow
from pipeline.settings import Settings
from pipeline.statuses import STREAMED_EVENT_NAMES
from tests.support.api import bearer, make_key
from tests.support.processes import Processes, free_port, ready, stack_env, wait_until
from tests.support.sse import Listener, Message, messages

pytestmark = pytest.mark.slow

SLOW_CHUNK = {"stage": "chunk", "match": "slow-*", "sleep_s": 1.5, "sleep_attempts": 1}
RETRIED_EXTRACT = {"stage": "extract", "match": "retry-*", "transient_attempts": 1}


class Stack:
    def __init__(self, processes: Processes, url: str, engine: Engine, env: dict[str, str]):
        self.processes = processes
        self.url = url
        self.engine = engine
        self.env = env
        self.http = httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=60))

    def upload(self, key: str, name: str, body: bytes | None = None) -> str:
        data = body if body is not None else f"{name}: a test document. {uuid.uuid4()}".encode()
        response = self.http.post(
            "/documents", files={"file": (name, data, "text/plain")}, headers=bearer(key)
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def recorded(self, document_id: str) -> list[tuple[str, str | None]]:
        """The streamed events the table holds for the document, in feed order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT event, stage FROM stage_events WHERE document_id = :id "
                    "AND event = ANY(:names) ORDER BY coalesce(xact, 0), id"
                ),
                {"id": document_id, "names": list(STREAMED_EVENT_NAMES)},
            ).all()
        return [(row.event, row.stage) for row in rows]


@pytest.fixture(scope="module")
def stack(
    settings: Settings, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    logs: Path = tmp_path_factory.mktemp("event-stream-logs")
    env = stack_env(
        settings,
        [SLOW_CHUNK, RETRIED_EXTRACT],
        PIPELINE_EVENTS_KEEPALIVE_S="0.3",
        PIPELINE_EVENTS_MAX_STREAMS_PER_KEY="3",
    )
    processes = Processes(env, logs)
    port = free_port()
    processes.start("api", "--port", str(port), name="api")
    processes.worker()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: ready(url), 30, f"the api: {processes.log('api')}")
        built = Stack(processes, url, engine, env)
        yield built
        built.http.close()
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def key(engine: Engine) -> str:
    return make_key(engine, tenant=f"streams-{uuid.uuid4().hex[:8]}")


def names(found: list[Message]) -> list[tuple[str, str | None]]:
    return [(message.body["event"], message.body["stage"]) for message in found]


def test_a_document_stream_carries_every_transition_in_order_and_ends(
    stack: Stack, key: str
) -> None:
    document_id = stack.upload(key, "retry-slow-one.txt")
    listener = Listener(stack.http, f"/documents/{document_id}/events", bearer(key))
    found = listener.events(timeout=60)
    assert listener.status == 200
    assert listener.ended.wait(5), "the stream ends after the document's outcome"
    seen = names(found)
    assert seen == stack.recorded(document_id)
    assert seen[0] == ("accepted", None)
    assert seen[-1] == ("document_succeeded", None)
    assert ("retrying", "extract") in seen  # the injected transient failure
    for stage in ("validate", "extract", "ocr", "chunk", "embed", "index"):
        assert ("succeeded", stage) in seen
    ids = [Cursor.parse(message.id or "") for message in found]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(message.id == message.body["id"] for message in found)
    # Asked again after its outcome, the stream says there is nothing more: 204.
    again = stack.http.get(
        f"/documents/{document_id}/events",
        headers={**bearer(key), "Last-Event-ID": found[-1].id or ""},
    )
    assert again.status_code == 204


def test_a_stream_resumes_with_last_event_id_without_a_gap_or_a_repeat(
    stack: Stack, key: str
) -> None:
    document_id = stack.upload(key, "slow-resumed.txt")
    first: list[Message] = []
    path = f"/documents/{document_id}/events"
    with stack.http.stream("GET", path, headers=bearer(key)) as response:
        for message in messages(response):
            if message.event is not None:
                first.append(message)
            if message.event == "claimed" and message.body["stage"] == "chunk":
                break  # disconnect while chunk sleeps: the rest happens while away
    resumed = Listener(stack.http, path, {**bearer(key), "Last-Event-ID": first[-1].id or ""})
    rest = resumed.events(timeout=60)
    assert resumed.ended.wait(5)
    assert names(first) + names(rest) == stack.recorded(document_id)
    assert rest[0].body["event"] == "succeeded"
    assert rest[0].body["stage"] == "chunk"


def test_the_tenant_stream_carries_outcomes_and_no_other_tenants_events(
    stack: Stack, key: str, engine: Engine
) -> None:
    other = make_key(engine, tenant=f"streams-other-{uuid.uuid4().hex[:8]}")
    outcomes = Listener(stack.http, "/events", bearer(key))
    failures = Listener(stack.http, "/events", bearer(key), params={"status": "failed"})
    spy = Listener(stack.http, "/events", bearer(other), params={"transitions": "true"})
    for listener in (outcomes, failures, spy):
        assert listener.opened.wait(10)
        assert listener.status == 200
    good = [stack.upload(key, f"outcome-{n}.txt") for n in range(3)]
    bad = stack.upload(key, "outcome-binary.txt", body=bytes(range(256)) * 8)  # refused
    found = outcomes.events(count=4, timeout=60)
    by_document = {message.body["document_id"]: message.body["event"] for message in found}
    assert by_document == {**dict.fromkeys(good, "document_succeeded"), bad: "document_failed"}
    failed = failures.events(count=1, timeout=30)
    assert [m.body["document_id"] for m in failed] == [bad]
    # The other tenant saw nothing of these, and cannot open their streams.
    assert spy.received.empty() or all(
        message.event is None for message in list(spy.received.queue) if message is not None
    )
    refused = stack.http.get(f"/documents/{good[0]}/events", headers=bearer(other))
    assert refused.status_code == 404


def test_idle_streams_get_keepalive_comments_and_a_key_has_a_stream_limit(
    stack: Stack, engine: Engine
) -> None:
    limited = make_key(engine, tenant=f"streams-limit-{uuid.uuid4().hex[:8]}")
    open_streams = [Listener(stack.http, "/events", bearer(limited)) for _ in range(3)]
    for listener in open_streams:
        assert listener.opened.wait(10)
        assert listener.status == 200
    comments: list[str] = []
    while "keep-alive" not in comments:
        message = open_streams[0].received.get(timeout=10)
        assert message is not None
        comments += message.comments
    refused = stack.http.get("/events", headers=bearer(limited))
    assert refused.status_code == 429
    assert "PIPELINE_EVENTS_MAX_STREAMS_PER_KEY" in refused.json()["detail"]


def test_a_malformed_last_event_id_is_a_problem_not_a_stream(stack: Stack, key: str) -> None:
    response = stack.http.get("/events", headers={**bearer(key), "Last-Event-ID": "yesterday"})
    assert response.status_code == 422
    assert "last_event_id" in response.json()["detail"].lower().replace("-", "_")


def test_streams_work_while_redis_is_down(stack: Stack, key: str, tmp_path: Path) -> None:
    """A second API process whose Redis does not answer still streams a document that
    the first stack's worker processes: the stream is fed by Postgres alone."""
    port = free_port()
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    offline = Processes({**stack.env, "REDIS_URL": dead_redis}, tmp_path)
    offline.start("api", "--port", str(port), name="api-offline")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: (
                httpx.get(url + "/health", timeout=1).status_code == 200 if _answers(url) else False
            ),
            30,
            f"the offline api: {offline.log('api-offline')}",
        )
        document_id = stack.upload(key, "slow-offline.txt")
        with httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=60)) as client:
            listener = Listener(client, f"/documents/{document_id}/events", bearer(key))
            found = listener.events(timeout=60)
        assert listener.status == 200
        assert names(found) == stack.recorded(document_id)
        assert found[-1].body["event"] == "document_succeeded"
    finally:
        offline.stop_all()


def _answers(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_a_subscriber_that_falls_behind_is_dropped_not_buffered(
    stack: Stack, settings: Settings, engine: Engine
) -> None:
    """The hub's bound, on the real database: a queue of two, and more events."""
    tenant = f"streams-behind-{uuid.uuid4().hex[:8]}"
    key = make_key(engine, tenant=tenant)

    async def scenario() -> tuple[bool, bool]:
        engine = make_async_engine(settings)
        hub = EventHub(
            engine, settings.database.libpq_url, queue_size=2, max_streams_per_key=1, poll_s=1
        )
        await hub.start()
        try:
            await hub.wait_listening()
            async with hub.subscribe(key="k", tenant=tenant) as subscription:
                await asyncio.to_thread(stack.upload, key, "behind.txt")
                for _ in range(200):
                    if subscription.overflowed:
                        break
                    await asyncio.sleep(0.05)
                raised = False
                try:
                    for _ in range(10):  # the two queued events, then the drop
                        await subscription.next(0.1)
                except SubscriberTooSlow:
                    raised = True
                return subscription.overflowed, raised
        finally:
            await hub.stop()
            await engine.dispose()

    overflowed, raised = asyncio.run(scenario())
    assert overflowed
    assert raised
