"""Hostile documents through the real API, executor, sandbox and Dramatiq worker.

Each test uploads one generated hostile document (``tests/support/hostile.py``) and checks
that a limit stopped it: the stage is dead after one attempt (refusals are permanent,
never retried), the dead letter and the document carry the same clear reason, and
a normal document uploaded right after it succeeds: the worker keeps serving.

These documents need limits unlike the session's (uploads up to 64 MiB, a 512 MiB
parser memory cap), so the module runs its own worker and API on a Redis namespace
of its own, against the session's database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import dramatiq.broker
import pytest
from dramatiq import Worker
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.actors import declare_actors
from pipeline.broker import make_broker
from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.settings import Settings
from pipeline.wiring import Wiring
from tests.support import hostile
from tests.support.api import upload
from tests.support.documents import ALL_SUCCEEDED, stage_statuses, wait_for_document

MIB = hostile.MIB
WAIT_S = 90.0


@pytest.fixture(scope="module")
def hostile_settings(settings: Settings) -> Settings:
    return settings.replace(
        broker={"namespace": f"{settings.broker.namespace}-hostile"},
        limits={
            "max_upload_bytes": 64 * MIB,
            "parser_time_limit_ms": 20_000,
            "parser_memory_mb": 512,
        },
    )


@pytest.fixture(scope="module")
def hostile_worker(hostile_settings: Settings, engine: Engine) -> Iterator[dramatiq.Broker]:
    """A worker for every stage, on the module's own broker; the session's stays current."""
    previous = dramatiq.broker.global_broker
    broker = make_broker(hostile_settings)
    wiring = Wiring(hostile_settings, broker=broker, engine=engine, worker_id="hostile-worker")
    declare_actors(broker, wiring.executor, wiring.policies)
    broker.emit_after("process_boot")
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    yield broker
    worker.stop()
    if previous is not None:
        dramatiq.set_broker(previous)


@pytest.fixture(scope="module")
def hclient(
    hostile_settings: Settings, hostile_worker: dramatiq.Broker, client: TestClient[Any]
) -> Iterator[TestClient[Any]]:
    """The API under the module's settings, sending what the session's client sends."""
    app = create_app(hostile_settings, dispatcher=Dispatcher(hostile_worker))
    with TestClient(app) as module_client:
        module_client.headers.update(client.headers)
        yield module_client


def dead_letters(engine: Engine, document_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM dead_letters WHERE document_id = :id"), {"id": document_id}
        ).mappings()
        return [dict(row) for row in rows]


def assert_refused(
    hclient: TestClient[Any],
    engine: Engine,
    response: Any,
    *,
    error_type: str,
    reason: str,
) -> None:
    """Dead at extract after one attempt, with ``reason`` everywhere a person looks."""
    assert response.status_code == 202, response.text
    document_id = response.json()["id"]
    document = wait_for_document(hclient, document_id, timeout=WAIT_S)
    assert document["status"] == "failed"
    assert document["failure_reason"] == f"extract: {reason}"
    extract = next(row for row in document["stages"] if row["stage"] == "extract")
    assert extract["status"] == "dead"
    assert extract["attempts"] == 1
    assert extract["last_error"]["transient"] is False
    (letter,) = dead_letters(engine, document_id)
    assert letter["stage"] == "extract"
    assert letter["attempts"] == 1
    assert letter["error_type"] == error_type
    assert letter["error_message"] == reason


def assert_still_serving(hclient: TestClient[Any]) -> None:
    """A normal document uploaded after the hostile one goes all the way through."""
    name = f"normal-{uuid.uuid4().hex[:8]}.txt"
    response = upload(hclient, hostile.NORMAL_TEXT, name)
    assert response.status_code == 202, response.text
    document = wait_for_document(hclient, response.json()["id"], timeout=WAIT_S)
    assert document["status"] == "succeeded", document
    assert stage_statuses(document) == ALL_SUCCEEDED


def test_docx_zip_bomb(hclient: TestClient[Any], engine: Engine) -> None:
    bomb = hostile.docx_bomb(101 * MIB)
    response = upload(hclient, bomb, "bomb.docx", "application/octet-stream")
    assert_refused(
        hclient,
        engine,
        response,
        error_type="ArchiveTooLarge",
        reason="DOCX expands to more than 100 MiB when decompressed (zip bomb?); "
        "split the document",
    )
    assert_still_serving(hclient)


def test_pdf_with_thousands_of_pages(hclient: TestClient[Any], engine: Engine) -> None:
    response = upload(hclient, hostile.pdf_pages(2001), "pages.pdf", "application/pdf")
    assert_refused(
        hclient,
        engine,
        response,
        error_type="TooManyPages",
        reason="PDF has 2001 pages, more than the limit of 2000; split it into smaller files",
    )
    assert_still_serving(hclient)


def test_pdf_with_a_million_nested_form_draws_hits_the_memory_cap(
    hclient: TestClient[Any], engine: Engine
) -> None:
    """4 KB asking PDFium for 100**3 texts: it aborts at the 512 MiB cap, in the child."""
    response = upload(hclient, hostile.pdf_form_fanout(3, 100), "fanout.pdf", "application/pdf")
    assert_refused(
        hclient,
        engine,
        response,
        error_type="ParserCrashed",
        reason="the parser crashed (signal 6, SIGABRT) on this file; "
        "it probably ran out of its 512 MiB memory cap",
    )
    assert_still_serving(hclient)


def test_pdf_with_deeply_nested_objects_completes(hclient: TestClient[Any]) -> None:
    response = upload(hclient, hostile.pdf_nested_arrays(100_000), "nested.pdf", "application/pdf")
    document = wait_for_document(hclient, response.json()["id"], timeout=WAIT_S)
    assert document["status"] == "succeeded", document
    chunks = hclient.get(f"/documents/{document['id']}/chunks").json()
    assert [item["text"] for item in chunks["chunks"]] == ["Nested"]


def test_html_nested_a_million_levels_deep(hclient: TestClient[Any], engine: Engine) -> None:
    page = b"<!doctype html><html><body>" + hostile.html_nested(1_000_000) + b"</body></html>"
    response = upload(hclient, page, "deep.html", "text/html")
    assert_refused(
        hclient,
        engine,
        response,
        error_type="CorruptContent",
        reason="HTML nests elements too deeply to be read (over 2048 levels); "
        "fix the markup and upload it again",
    )
    assert_still_serving(hclient)


def test_text_that_is_one_50_mb_line(hclient: TestClient[Any], engine: Engine) -> None:
    line = hostile.one_line_text(50 * MIB)
    response = upload(hclient, line, "one-line.txt", "text/plain")
    assert_refused(
        hclient,
        engine,
        response,
        error_type="TextTooLong",
        reason="the document's text is 52,428,800 characters long, more than the limit "
        "of 10,000,000; split it into smaller documents",
    )
    assert_still_serving(hclient)


def test_one_50_mb_line_is_413_at_the_default_upload_limit(
    hostile_settings: Settings,
    hostile_worker: dramatiq.Broker,
    client: TestClient[Any],
    engine: Engine,
) -> None:
    defaults = hostile_settings.replace(
        limits={"max_upload_bytes": Settings().limits.max_upload_bytes}
    )
    app = create_app(defaults, dispatcher=Dispatcher(hostile_worker))
    name = f"too-long-{uuid.uuid4().hex[:8]}.txt"
    with TestClient(app) as default_client:
        default_client.headers.update(client.headers)
        response = upload(default_client, hostile.one_line_text(50 * MIB), name)
    assert response.status_code == 413
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM documents WHERE filename = :name"), {"name": name}
        ).scalar_one()
    assert stored == 0
