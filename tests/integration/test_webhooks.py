"""Webhooks end to end: real Postgres, Redis and Dramatiq, a receiver on 127.0.0.1.

The session's in-process worker runs the stages; this module adds the webhook actor
(with private destinations allowed, as the receiver is on loopback) and, where a test
needs it, a thread that runs the dispatcher the reconciler would run. One test runs
real ``pipeline worker`` and ``pipeline reconciler`` processes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.actors.webhooks import declare_webhook_actor
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.reconciler import Reconciler
from pipeline.messages import Delivery
from pipeline.settings import Settings
from pipeline.webhooks import messages
from pipeline.webhooks.delivery import DeliveryService
from pipeline.webhooks.dispatch import WebhookDispatch
from pipeline.webhooks.endpoints import EndpointRequest, WebhookEndpoints
from pipeline.webhooks.sender import WebhookSender
from tests.support.api import AsKey, assert_problem, make_key, upload
from tests.support.dead_letters import GIF, unique
from tests.support.documents import wait_for_document
from tests.support.processes import ProcessStack, free_port, stack_maker, wait_until
from tests.support.webhooks import Receiver, attempts, deliveries, readme_verifier

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def private(settings: Settings) -> Settings:
    """Loopback allowed; quick retries (ceilings of 0.1 s, 0.2 s, ... up to 2 s); few attempts."""
    return settings.replace(
        webhooks={
            "allow_private": True,
            "min_backoff_ms": 100,
            "max_backoff_ms": 2000,
            "max_attempts": 3,
            "timeout_ms": 2000,
        }
    )


def service_for(settings: Settings, engine: Engine, broker: dramatiq.Broker) -> DeliveryService:
    config = settings.webhooks
    sender = WebhookSender(
        timeout_s=config.timeout_ms / 1000,
        max_response_bytes=config.max_response_bytes,
        allow_private=config.allow_private,
    )
    return DeliveryService(engine, Dispatcher(broker), settings, sender)


@pytest.fixture(scope="module")
def delivery(
    private: Settings, engine: Engine, broker: dramatiq.Broker, worker: dramatiq.Worker
) -> DeliveryService:
    service = service_for(private, engine, broker)
    declare_webhook_actor(broker, service, private.webhooks.timeout_ms)
    return service


@pytest.fixture(scope="module")
def endpoints(private: Settings, engine: Engine) -> WebhookEndpoints:
    return WebhookEndpoints(engine, private)


@pytest.fixture
def pump(engine: Engine, broker: dramatiq.Broker, delivery: DeliveryService) -> Iterator[None]:
    """What the active reconciler does for webhooks: the dispatcher, run continually."""
    dispatch = WebhookDispatch(engine, Dispatcher(broker), timedelta(seconds=2), 100)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            dispatch()
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


class Tenant(msgspec.Struct):
    name: str
    client: Any


@pytest.fixture
def tenant(client: TestClient[Any], engine: Engine) -> Tenant:
    name = unique("wh")
    return Tenant(name, AsKey(client, make_key(engine, tenant=name)))


def register(
    endpoints: WebhookEndpoints, tenant: Tenant, url: str, *events: str
) -> tuple[str, str]:
    created = endpoints.create(
        tenant.name,
        EndpointRequest(url=url, events=list(events)),
        "tests",  # type: ignore[arg-type]
    )
    return str(created.id), created.secret


def upload_ok(tenant: Tenant, name: str) -> str:
    response = upload(tenant.client, f"A document called {name}. It has words.".encode(), name)
    assert response.status_code == 202, response.text
    document_id = str(response.json()["id"])
    assert wait_for_document(tenant.client, document_id)["status"] == "succeeded"
    return document_id


def settled(engine: Engine, endpoint_id: str, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` deliveries of the endpoint that are all finished."""

    def done() -> bool:
        rows = deliveries(engine, endpoint_id)
        return len(rows) == count and all(
            row["status"] in ("delivered", "dead", "cancelled") for row in rows
        )

    wait_until(done, 30, f"{count} finished deliveries of {endpoint_id}")
    return deliveries(engine, endpoint_id)


def test_one_signed_delivery_per_transition_and_endpoint(
    tenant: Tenant, endpoints: WebhookEndpoints, receiver: Receiver, engine: Engine, pump: None
) -> None:
    first, first_secret = register(endpoints, tenant, receiver.url("/a"), "document.succeeded")
    second, second_secret = register(
        endpoints, tenant, receiver.url("/b"), "document.succeeded", "document.failed"
    )
    unsubscribed, _ = register(endpoints, tenant, receiver.url("/c"), "document.failed")
    documents = {upload_ok(tenant, f"doc-{n}.txt") for n in range(3)}

    verify = readme_verifier()
    for endpoint, path, secret in ((first, "/a", first_secret), (second, "/b", second_secret)):
        rows = settled(engine, endpoint, 3)
        assert {row["status"] for row in rows} == {"delivered"}
        got = receiver.at(path)
        assert len(got) == 3
        for item in got:
            assert verify(secret, item.headers, item.body)
            assert not verify(
                first_secret if secret != first_secret else second_secret, item.headers, item.body
            )
        bodies = [msgspec.json.decode(item.body) for item in got]
        assert {body["data"]["document_id"] for body in bodies} == documents
        assert {body["type"] for body in bodies} == {"document.succeeded"}
        ids = {item.headers["webhook-id"] for item in got}
        assert ids == {f"msg_{uuid.UUID(str(row['id'])).hex}" for row in rows}
    assert deliveries(engine, unsubscribed) == []
    assert receiver.at("/c") == []


def test_duplicate_messages_deliver_once(
    tenant: Tenant,
    endpoints: WebhookEndpoints,
    receiver: Receiver,
    engine: Engine,
    delivery: DeliveryService,
) -> None:
    """No dispatcher runs here: the delivery waits, and two copies of its message race."""
    endpoint, _ = register(endpoints, tenant, receiver.url("/dup"), "document.succeeded")
    upload_ok(tenant, "dup.txt")
    (row,) = deliveries(engine, endpoint)
    assert row["status"] == "pending"
    envelope = messages.build(row["id"])
    outcomes: list[str] = []

    def deliver() -> None:
        outcomes.append(delivery.deliver(envelope.args[0], Delivery.from_message(envelope.copy())))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["delivered", "dropped"]
    assert delivery.deliver(envelope.args[0], Delivery.from_message(envelope)) == "dropped"
    assert len(receiver.at("/dup")) == 1
    (row,) = deliveries(engine, endpoint)
    assert (row["status"], row["attempts"]) == ("delivered", 1)


def test_retries_until_the_receiver_answers_honouring_retry_after(
    tenant: Tenant, endpoints: WebhookEndpoints, receiver: Receiver, engine: Engine, pump: None
) -> None:
    receiver.script("/flaky", (500, {}), (503, {"Retry-After": "1"}))
    endpoint, secret = register(endpoints, tenant, receiver.url("/flaky"), "document.succeeded")
    upload_ok(tenant, "flaky.txt")
    (row,) = settled(engine, endpoint, 1)
    assert row["status"] == "delivered"
    history = attempts(engine, row["id"])
    assert [a["status_code"] for a in history] == [500, 503, 204]
    assert [a["attempt"] for a in history] == [1, 2, 3]
    assert all(a["latency_ms"] >= 0 for a in history)
    assert history[0]["error"].startswith("answered 500")
    assert history[2]["error"] is None
    # the third attempt waited for what Retry-After asked (the backoff alone: <= 0.2 s)
    assert history[2]["started_at"] - history[1]["started_at"] >= timedelta(seconds=1)
    got = receiver.at("/flaky")
    assert len({item.headers["webhook-id"] for item in got}) == 1
    assert all(readme_verifier()(secret, item.headers, item.body) for item in got)


def test_a_receiver_down_makes_a_dead_letter_that_replays(
    tenant: Tenant, endpoints: WebhookEndpoints, engine: Engine, pump: None
) -> None:
    port = free_port()  # nothing listens there yet
    endpoint, _ = register(endpoints, tenant, f"http://127.0.0.1:{port}/back", "document.succeeded")
    document_id = upload_ok(tenant, "down.txt")
    (row,) = settled(engine, endpoint, 1)
    assert (row["status"], row["attempts"]) == ("dead", 3)
    assert all(a["status_code"] is None for a in attempts(engine, row["id"]))

    listed = tenant.client.get("/dead-letters", params={"document_id": document_id})
    assert listed.status_code == 200, listed.text
    (letter,) = listed.json()["items"]
    assert (letter["queue_name"], letter["actor_name"]) == ("webhooks", "deliver_webhook")
    assert letter["id"] == str(row["id"])

    back = Receiver(port)
    try:
        replayed = tenant.client.post("/dead-letters/replay", json={"ids": [letter["id"]]})
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["items"][0]["action"] == "replayed"
        wait_until(
            lambda: deliveries(engine, endpoint)[0]["status"] == "delivered", 30, "the replay"
        )
        assert len(back.at("/back")) == 1
    finally:
        back.close()
    (row,) = deliveries(engine, endpoint)
    assert row["attempts"] == 1  # a fresh budget; the attempts before stay recorded
    assert len(attempts(engine, row["id"])) == 4
    again = tenant.client.get(f"/dead-letters/{letter['id']}").json()
    assert again["letter"]["status"] == "replayed"
    assert any(event["event"] == "replayed" for event in again["history"])


def test_gone_disables_the_endpoint_and_cancels_its_deliveries(
    tenant: Tenant, endpoints: WebhookEndpoints, receiver: Receiver, engine: Engine, pump: None
) -> None:
    receiver.script("/gone", *[(410, {})] * 5)
    endpoint, _ = register(endpoints, tenant, receiver.url("/gone"), "document.succeeded")
    upload_ok(tenant, "gone.txt")
    (row,) = settled(engine, endpoint, 1)
    assert row["status"] == "cancelled"
    shown = tenant.client.get(f"/webhooks/{endpoint}").json()
    assert shown["endpoint"]["enabled"] is False
    assert "410" in shown["endpoint"]["disabled_reason"]
    upload_ok(tenant, "after-gone.txt")  # a disabled endpoint gets no delivery
    assert len(deliveries(engine, endpoint)) == 1
    assert len(receiver.at("/gone")) == 1


def test_private_destinations_are_refused_unless_allowed(
    tenant: Tenant,
    endpoints: WebhookEndpoints,
    engine: Engine,
    settings: Settings,
    broker: dramatiq.Broker,
) -> None:
    # the session's API has the default settings: private destinations refused
    for url in (
        "http://127.0.0.1:9/hook",
        "https://localhost/hook",
        "https://2130706433/",
        "https://169.254.169.254/latest",
    ):
        response = tenant.client.post("/webhooks", json={"url": url, "events": ["stage.dead"]})
        assert_problem(response, 422, "")
    refused = tenant.client.post(
        "/webhooks", json={"url": "https://localhost/hook", "events": ["document.succeeded"]}
    )
    assert "PIPELINE_WEBHOOKS_ALLOW_PRIVATE" in refused.json()["detail"]

    # registered while allowed; delivered by a worker that does not allow it: dead at once
    endpoint, _ = register(
        endpoints, tenant, f"https://localhost:{free_port()}/x", "document.succeeded"
    )
    upload_ok(tenant, "private.txt")
    (row,) = deliveries(engine, endpoint)
    strict = service_for(settings, engine, broker)
    envelope = messages.build(row["id"])
    assert strict.deliver(envelope.args[0], Delivery.from_message(envelope)) == "dead"
    (row,) = deliveries(engine, endpoint)
    assert (row["status"], row["attempts"]) == ("dead", 1)
    assert "PIPELINE_WEBHOOKS_ALLOW_PRIVATE" in row["last_error"]
    assert "127.0.0.1" in row["last_error"] or "::1" in row["last_error"]
    with engine.connect() as conn:
        letter = conn.execute(
            text("SELECT error_type, queue_name FROM dead_letters WHERE id = :id"),
            {"id": row["id"]},
        ).one()
    assert tuple(letter) == ("DestinationRefused", "webhooks")


def test_every_code_path_to_an_outcome_feeds_the_outbox(
    tenant: Tenant,
    endpoints: WebhookEndpoints,
    engine: Engine,
    settings: Settings,
    broker: dramatiq.Broker,
    worker: dramatiq.Worker,
) -> None:
    """No dispatcher here: only the rows the trigger wrote are looked at."""
    endpoint, _ = register(
        endpoints,
        tenant,
        "http://127.0.0.1:9/all",
        "document.succeeded",
        "document.failed",
        "document.deleted",
        "stage.dead",
    )
    succeeded = upload_ok(tenant, "ok.txt")
    dead = upload(tenant.client, GIF, "image.dat", "application/octet-stream").json()["id"]
    assert wait_for_document(tenant.client, dead)["status"] == "failed"
    # the reconciler finishing a document whose rows say it is done
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE documents SET status = 'processing' WHERE id = :id"), {"id": succeeded}
        )
    Reconciler(engine, Dispatcher(broker), settings).sweep()
    # any writer of a tombstone (the lifecycle's delete)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE documents SET status = 'deleted', deleted_by = 'tests', "
                "delete_reason = 'gone' WHERE id = :id"
            ),
            {"id": succeeded},
        )
    rows = deliveries(engine, endpoint)
    kinds = sorted((str(row["document_id"]), row["event_type"]) for row in rows)
    assert kinds == sorted(
        [
            (succeeded, "document.succeeded"),
            (succeeded, "document.succeeded"),  # the reconciler's: a second transition
            (succeeded, "document.deleted"),
            (dead, "stage.dead"),
            (dead, "document.failed"),
        ]
    )
    assert len({row["event_id"] for row in rows}) == 5
    by_type = {row["event_type"]: row["payload"] for row in rows}
    assert by_type["stage.dead"]["data"]["stage"] == "validate"
    assert by_type["stage.dead"]["data"]["error"]
    assert by_type["document.failed"]["data"]["reason"]
    assert by_type["document.deleted"]["data"]["reason"] == "gone"
    assert by_type["document.deleted"]["timestamp"].endswith("Z")


def test_endpoints_api_is_tenant_isolated_and_rotates_secrets(
    tenant: Tenant, endpoints: WebhookEndpoints, client: TestClient[Any], engine: Engine
) -> None:
    endpoint, secret = register(endpoints, tenant, "http://127.0.0.1:9/x", "stage.dead")
    listed = tenant.client.get("/webhooks").json()["items"]
    assert [item["id"] for item in listed] == [endpoint]
    assert "secret" not in listed[0]
    other = AsKey(client, make_key(engine, tenant=unique("other")))
    assert other.get(f"/webhooks/{endpoint}").status_code == 404
    assert other.request("DELETE", f"/webhooks/{endpoint}").status_code == 404
    assert other.get("/webhooks").json()["items"] == []
    reader = AsKey(client, make_key(engine, tenant=tenant.name, scopes="read,ingest"))
    assert reader.get(f"/webhooks/{endpoint}").status_code == 200
    assert reader.post(f"/webhooks/{endpoint}/rotate-secret").status_code == 403

    rotated = tenant.client.post(f"/webhooks/{endpoint}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != secret
    assert rotated.json()["previous_secret_expires_at"] is not None
    assert (
        tenant.client.post("/webhooks", json={"url": "https://x.example", "events": []}).status_code
        == 422
    )
    assert tenant.client.request("DELETE", f"/webhooks/{endpoint}").status_code == 204
    assert tenant.client.get(f"/webhooks/{endpoint}").status_code == 404


class Stack(ProcessStack):
    pass


def test_real_processes_deliver_promptly_without_waiting_for_the_interval(
    settings: Settings, engine: Engine, tmp_path: Path, api_key: str, receiver: Receiver
) -> None:
    """A ``pipeline reconciler`` sweeping once a minute still sends the delivery as its
    transition commits (woken by the trigger's NOTIFY); a ``pipeline worker`` posts it."""
    interval = 60
    with stack_maker(settings, engine, tmp_path, api_key, Stack) as make:
        stack = make(
            PIPELINE_WEBHOOKS_ALLOW_PRIVATE="true", PIPELINE_RECONCILER_INTERVAL_S=str(interval)
        )
        stack.processes.worker()
        stack.processes.reconciler()
        wait_until(
            lambda: "active" in stack.processes.log("reconciler"), 30, "an active reconciler"
        )
        time.sleep(0.5)  # its first sweep (at once on taking the lock) is over
        endpoint_id, secret = register(
            WebhookEndpoints(engine, stack.settings),
            Tenant("default", stack.client),
            receiver.url("/prompt"),
            "document.succeeded",
        )
        try:
            document_id = stack.upload("prompt.txt")
            wait_until(lambda: len(receiver.at("/prompt")) == 1, 45, "the delivery")
            # The receiver answers before the worker records the attempt: wait for that.
            wait_until(
                lambda: [d["status"] for d in deliveries(engine, endpoint_id)] == ["delivered"],
                15,
                "the delivery recorded",
            )
            (row,) = deliveries(engine, endpoint_id)
            (first,) = attempts(engine, row["id"])
            # well inside the interval: the NOTIFY woke the reconciler, not its timer
            assert first["started_at"] - row["created_at"] < timedelta(seconds=interval / 2)
            body = msgspec.json.decode(receiver.at("/prompt")[0].body)
            assert body["data"]["document_id"] == document_id
            assert readme_verifier()(
                secret, receiver.at("/prompt")[0].headers, receiver.at("/prompt")[0].body
            )
        finally:
            endpoints_cleanup = WebhookEndpoints(engine, stack.settings)
            endpoints_cleanup.remove(uuid.UUID(endpoint_id), None)
