"""Operator actions under failure and concurrency: honest reports, live jobs, audited imports.

What this file proves (issue 11, items 5 and 7 and the two "also" items):

* A small bulk replay or rerun over HTTP whose middle item cannot be done (its document
  row is locked past the API's lock timeout) answers 200 with a per-item report: the
  items before and after it are done, the middle one is ``failed`` and untouched, and the
  database says the same. Never a 503 "nothing was stored" after partial work.
* A paced background job heartbeats while it waits, so the reconciler's stale-job sweep
  never fails a job that is alive; and a running job that was marked ``failed`` stops
  before its next item and stays failed.
* A job that fails is marked ``failed`` with a readable error, and its Dramatiq message is
  not turned into a poison dead letter.
* Bulk replay and rerun are paced by default (an explicit higher rate is honoured).
* Importing an undecodable letter from Redis leaves an ``imported`` stage event too.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from pipeline.broker import make_broker
from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.operations import jobs
from pipeline.operations.common import Operator, RunContext
from pipeline.operations.jobs import create_job, job_message
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import ReplayRequest, RerunRequest
from pipeline.operations.rerun import DocumentFilter, RerunService
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE
from pipeline.wiring import Wiring
from tests.support.api import bearer, upload
from tests.support.documents import events, wait_for_document
from tests.support.faults import Fault, FaultPlan
from tests.support.processes import Processes, wait_until

ME = Operator(name="operator-actions@tests", via="cli")
RUN = RunContext(operator=ME)
TEXT = b"Operator actions test. It mentions herons and tidal flats.\n\nA second paragraph."
GIF = b"GIF89a" + bytes(64)
LOCK_TIMEOUT_MS = 300
NOT = re.compile(r"\bnot\b", re.IGNORECASE)


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locker(settings: Settings) -> Iterator[Engine]:
    """Connections of a third party, outside every pool the pipeline uses."""
    engine = create_engine(settings.database.sqlalchemy_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@contextmanager
def holding(locker: Engine, sql: str, **params: Any) -> Iterator[None]:
    """Run ``sql`` in a transaction that stays open (its locks held) for the block."""
    with locker.connect() as conn:
        transaction = conn.begin()
        try:
            conn.execute(text(sql), params)
            yield
        finally:
            transaction.rollback()


def with_lock_timeout(settings: Settings, timeout_ms: int) -> Settings:
    """The same settings, with every connection's ``lock_timeout`` set (a query option)."""
    separator = "&" if "?" in settings.database.url else "?"
    url = f"{settings.database.url}{separator}options=-c%20lock_timeout%3D{timeout_ms}"
    return settings.replace(database={"url": url})


@pytest.fixture
def impatient_client(settings: Settings, broker: dramatiq.Broker, api_key: str) -> Iterator[Any]:
    """The API with a short lock timeout on its database connections (an admin key)."""
    app = create_app(with_lock_timeout(settings, LOCK_TIMEOUT_MS), dispatcher=Dispatcher(broker))
    with TestClient(app) as client:
        client.headers.update(bearer(api_key))
        yield client


def uploaded(client: TestClient[Any], body: bytes, name: str, content_type: str) -> str:
    response = upload(client, body, name, content_type)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def succeeded_documents(client: TestClient[Any], prefix: str, count: int) -> list[str]:
    ids = [
        uploaded(client, TEXT + f" {prefix} {i}".encode(), f"{prefix}-{i}.txt", "text/plain")
        for i in range(count)
    ]
    for document_id in ids:
        assert wait_for_document(client, document_id, timeout=60)["status"] == "succeeded"
    return ids


def failed_documents(
    client: TestClient[Any], faults: FaultPlan, prefix: str, count: int
) -> list[str]:
    """Documents dead at extract once (a replay then succeeds), each with a dead letter."""
    names = [f"{prefix}-{i}.txt" for i in range(count)]
    for name in names:
        faults.add("extract", name, Fault("permanent", times=1))
    ids = [uploaded(client, TEXT + name.encode(), name, "text/plain") for name in names]
    for document_id in ids:
        assert wait_for_document(client, document_id, timeout=60)["status"] == "failed"
    return ids


def unsupported_documents(client: TestClient[Any], prefix: str, count: int) -> list[str]:
    """Documents that fail at validate every time (fast), each with a dead letter."""
    ids = [
        uploaded(client, GIF + bytes([i]), f"{prefix}-{i}.gif", "application/octet-stream")
        for i in range(count)
    ]
    for document_id in ids:
        assert wait_for_document(client, document_id, timeout=60)["status"] == "failed"
    return ids


def dead_letter_ids(engine: Engine, document_ids: list[str]) -> list[uuid.UUID]:
    """The dead letter of each document, in the documents' order."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT document_id, id FROM dead_letters "
                "WHERE document_id = ANY(:ids) AND status = 'dead'"
            ),
            {"ids": [uuid.UUID(i) for i in document_ids]},
        ).all()
    by_document = {str(document_id): letter_id for document_id, letter_id in rows}
    assert set(by_document) == set(document_ids), rows
    return [by_document[i] for i in document_ids]


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(text(sql), params).mappings()]


def document_state(engine: Engine, document_id: str) -> dict[str, Any]:
    """The document row, its stage rows and its dead letters, for before/after comparisons."""
    return {
        "document": rows(engine, "SELECT * FROM documents WHERE id = :id", id=document_id),
        "stage_runs": rows(
            engine,
            "SELECT * FROM stage_runs WHERE document_id = :id ORDER BY position",
            id=document_id,
        ),
        "dead_letters": rows(
            engine, "SELECT * FROM dead_letters WHERE document_id = :id ORDER BY id", id=document_id
        ),
        "events": events(engine, document_id),
    }


def generation(engine: Engine, document_id: str) -> int:
    (row,) = rows(engine, "SELECT generation FROM documents WHERE id = :id", id=document_id)
    return int(row["generation"])


def job_row(engine: Engine, job_id: str | uuid.UUID) -> dict[str, Any]:
    (row,) = rows(engine, "SELECT * FROM operation_jobs WHERE id = :id", id=str(job_id))
    return row


def queue_rerun_job(client: TestClient[Any], ids: list[str], rate: float) -> str:
    """A paced rerun from ``index``: more than MAX_PACED_SECONDS of pacing, so it is a job."""
    response = client.post("/rerun", json={"ids": ids, "from_stage": "index", "rate": rate})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def assert_never(happened: Callable[[], object], seconds: float, what: str) -> None:
    """Nothing signals that something did *not* happen: watch for it for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = happened()
        if seen:
            raise AssertionError(f"{what}: {seen}")
        time.sleep(0.1)


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in report["items"]}


# -- item 5: a partly failed bulk action reports per item ------------------------------------


def test_bulk_rerun_with_a_locked_middle_item_reports_it_failed(
    client: TestClient[Any],
    impatient_client: TestClient[Any],
    engine: Engine,
    locker: Engine,
    worker: Any,
) -> None:
    """A rerun whose 2nd item times out on a lock: 200, items 1 and 3 rerun, 2 failed.

    The old API answered 503 "nothing was stored, retry later" although the first item
    had committed (and the third was never tried).
    """
    first, middle, last = succeeded_documents(client, "locked-rerun", 3)
    before = document_state(engine, middle)
    with holding(locker, "SELECT 1 FROM documents WHERE id = :id FOR UPDATE", id=middle):
        response = impatient_client.post(
            "/rerun", json={"ids": [first, middle, last], "from_stage": "index"}
        )
    assert response.status_code == 200, response.text
    report = response.json()
    items = by_id(report)
    assert items[first]["action"] == "rerun", items
    assert items[last]["action"] == "rerun", items
    assert items[middle]["action"] == "failed", items
    assert NOT.search(items[middle]["detail"]), items[middle]
    assert report["failed"] == 1, report
    assert report["skipped"] == 0, report
    assert generation(engine, first) == 2
    assert generation(engine, last) == 2
    assert document_state(engine, middle) == before
    for document_id in (first, last):
        assert wait_for_document(client, document_id, timeout=60)["status"] == "succeeded"


def test_bulk_replay_with_a_locked_middle_item_reports_it_failed(
    client: TestClient[Any],
    impatient_client: TestClient[Any],
    engine: Engine,
    locker: Engine,
    faults: FaultPlan,
    worker: Any,
) -> None:
    """A replay whose 2nd letter's document is locked past the timeout: a per-item report.

    The old API answered 503 "nothing was stored, retry later" although the first letter
    had been replayed.
    """
    documents = failed_documents(client, faults, "locked-replay", 3)
    first, middle, last = dead_letter_ids(engine, documents)
    before = document_state(engine, documents[1])
    with holding(locker, "SELECT 1 FROM documents WHERE id = :id FOR UPDATE", id=documents[1]):
        response = impatient_client.post(
            "/dead-letters/replay", json={"ids": [str(first), str(middle), str(last)]}
        )
    assert response.status_code == 200, response.text
    report = response.json()
    items = by_id(report)
    assert items[str(first)]["action"] == "replayed", items
    assert items[str(last)]["action"] == "replayed", items
    assert items[str(middle)]["action"] == "failed", items
    assert NOT.search(items[str(middle)]["detail"]), items[str(middle)]
    assert report["failed"] == 1, report
    assert report["skipped"] == 0, report
    letters = {
        row["id"]: row
        for row in rows(
            engine,
            "SELECT id, status, replay_count FROM dead_letters WHERE id = ANY(:ids)",
            ids=[first, middle, last],
        )
    }
    assert (letters[first]["status"], letters[first]["replay_count"]) == ("replayed", 1)
    assert (letters[last]["status"], letters[last]["replay_count"]) == ("replayed", 1)
    assert (letters[middle]["status"], letters[middle]["replay_count"]) == ("dead", 0)
    assert document_state(engine, documents[1]) == before
    for document_id in (documents[0], documents[2]):
        assert wait_for_document(client, document_id, timeout=60)["status"] == "succeeded"


# -- item 7: paced jobs and the stale-job sweep ------------------------------------------------


def test_a_paced_job_is_never_failed_by_the_stale_sweep_while_it_runs(
    client: TestClient[Any],
    engine: Engine,
    locker: Engine,
    broker: dramatiq.Broker,
    settings: Settings,
    worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job pausing 5 s between items while STALE_JOB is 3 s and a reconciler sweeps.

    The old job wrote its heartbeat only after an item, so the sweep failed it during
    its pause; the runner then carried on and overwrote ``failed`` with ``succeeded``.
    """
    monkeypatch.setattr(jobs, "STALE_JOB", timedelta(seconds=3))
    ids = succeeded_documents(client, "paced-job", 3)
    # Its own connections: the sweeps must not compete with the job for the worker's pool.
    reconciler = Wiring(settings, engine=locker, dispatcher=Dispatcher(broker)).reconciler
    stop = threading.Event()
    errors: list[BaseException] = []

    def sweep() -> None:
        while not stop.is_set():
            try:
                reconciler.sweep()
            except BaseException as error:  # reported by the test, not lost in a thread
                errors.append(error)
                return
            stop.wait(0.2)

    sweeper = threading.Thread(target=sweep, name="sweeper", daemon=True)
    sweeper.start()
    try:
        job_id = queue_rerun_job(client, ids, rate=0.2)  # 5 s between items
        seen: list[str] = []

        def finished() -> bool:
            status = str(job_row(engine, job_id)["status"])
            if not seen or seen[-1] != status:
                seen.append(status)
            return status in ("succeeded", "failed")

        wait_until(finished, 45, "the paced job to finish", interval=0.05)
    finally:
        stop.set()
        sweeper.join(timeout=30)
    assert not errors, errors
    job = job_row(engine, job_id)
    assert "failed" not in seen, (seen, job)
    assert job["status"] == "succeeded", job
    assert (job["total"], job["done"], job["skipped"]) == (3, 3, 0), job
    assert [generation(engine, document_id) for document_id in ids] == [2, 2, 2]


def test_a_running_job_marked_failed_stops_before_its_next_item(
    client: TestClient[Any],
    engine: Engine,
    worker: Any,
) -> None:
    """A job marked failed during its pause (as the stale sweep does) does nothing more.

    The old runner never looked at its own status: it did the remaining items and then
    overwrote ``failed`` with ``succeeded``.
    """
    ids = succeeded_documents(client, "stopped-job", 3)
    job_id = queue_rerun_job(client, ids, rate=0.4)  # 2.5 s between items
    wait_until(lambda: job_row(engine, job_id)["done"] >= 1, 30, "the job's first item")
    later = {document_id: document_state(engine, document_id) for document_id in ids[1:]}
    error = "marked failed by the test, as the stale-job sweep does"
    with engine.begin() as conn:
        marked = conn.execute(
            text(
                "UPDATE operation_jobs SET status = 'failed', finished_at = now(), "
                "error = :error WHERE id = :id AND status = 'running'"
            ),
            {"id": job_id, "error": error},
        ).rowcount
    assert marked == 1, job_row(engine, job_id)

    def went_on() -> dict[str, Any] | None:
        generations = {document_id: generation(engine, document_id) for document_id in ids}
        job = job_row(engine, job_id)
        if job["status"] != "failed" or any(generations[i] != 1 for i in ids[1:]):
            return {"job": job, "generations": generations}
        return None

    # Give the old runner its 2.5 s pause and more: it must not reach its next item.
    assert_never(went_on, 2.5 + 4.0, "the job went on after it was marked failed")
    job = job_row(engine, job_id)
    assert job["status"] == "failed", job
    assert job["error"] == error, job
    assert job["done"] == 1, job
    assert generation(engine, ids[0]) == 2
    for document_id, state in later.items():
        assert document_state(engine, document_id) == state


# -- also: a failed job is not a poison message ----------------------------------------------


@pytest.mark.slow
def test_a_failed_job_is_marked_failed_and_not_dead_lettered(
    settings: Settings,
    engine: Engine,
    locker: Engine,
    broker: dramatiq.Broker,
    tmp_path: Path,
) -> None:
    """A real worker whose job's selection query fails: job ``failed``, no poison letter.

    The selection (documents a filter matches) times out on a table lock. The old
    runner marked the job failed and re-raised; Dramatiq then gave up on the message
    and the dead-letter middleware stored the job's message as a poison dead letter.
    """
    namespace = f"{settings.broker.namespace}-ops-{uuid.uuid4().hex[:6]}"
    stack_settings = with_lock_timeout(settings, 500).replace(broker={"namespace": namespace})
    env = {
        "DATABASE_URL": stack_settings.database.url,
        "REDIS_URL": settings.broker.url,
        "PIPELINE_REDIS_NAMESPACE": namespace,
        "PIPELINE_DB_POOL_SIZE": "4",
    }
    processes = Processes({**os.environ, **env}, tmp_path)
    current = dramatiq.get_broker()
    private = make_broker(stack_settings)
    dramatiq.set_broker(current)  # make_broker made the private broker the global one
    # A filter that matches nothing, so the job would be harmless had its query run.
    request = RerunRequest(
        from_stage="index", filter=DocumentFilter(since=datetime(2999, 1, 1, tzinfo=UTC))
    )
    with engine.begin() as conn:
        job_id = create_job(conn, "rerun", request, ME, "default")
    message = job_message(job_id)
    try:
        processes.worker("--stage", "validate", "--operations", "--metrics-port", "0")
        # Dramatiq's consumers register in this set when they first fetch: the worker is
        # up. Only then is the table locked, and only for as long as the job takes.
        heartbeats = f"{namespace}:__heartbeats__"
        try:
            wait_until(lambda: private.client.zcard(heartbeats) > 0, 90, "the worker to start")
            with holding(locker, "LOCK TABLE documents IN ACCESS EXCLUSIVE MODE"):
                Dispatcher(private).send(message)
                wait_until(
                    lambda: job_row(engine, job_id)["status"] in ("failed", "succeeded"),
                    30,
                    "the job to finish",
                )
        except AssertionError:
            print(processes.log("worker"))
            raise

        # The old middleware wrote the letter right after the job failed; allow it time.
        assert_never(
            lambda: poison_letters(engine, message.message_id, job_id),
            3.0,
            f"the failed job {job_row(engine, job_id)} was dead-lettered as poison",
        )
    finally:
        processes.stop_all()
        private.close()  # its keys go with the run's namespace, which this one extends
    job = job_row(engine, job_id)
    assert job["status"] == "failed", job
    assert isinstance(job["error"], str), job
    assert job["error"].strip(), job
    assert "Traceback" not in job["error"], job
    assert job["finished_at"] is not None, job


def poison_letters(engine: Engine, message_id: str, job_id: uuid.UUID) -> list[dict[str, Any]]:
    return rows(
        engine,
        "SELECT id, queue_name, error_type, error_message FROM dead_letters "
        "WHERE message_id = :m OR (queue_name = 'operations' AND message::text LIKE :job)",
        m=message_id,
        job=f"%{job_id}%",
    )


# -- also: default pacing ----------------------------------------------------------------------


class VirtualTime:
    """The services' clock and ``sleep``: time passes only when the pacer sleeps, so
    its pauses are exactly what its schedule asks for, however slow each item is."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def wait_all_failed(client: TestClient[Any], ids: list[str]) -> None:
    for document_id in ids:
        assert wait_for_document(client, document_id, timeout=60)["status"] == "failed"


def test_bulk_replay_is_paced_by_default_and_honours_a_higher_rate(
    client: TestClient[Any],
    engine: Engine,
    broker: dramatiq.Broker,
    settings: Settings,
    worker: Any,
) -> None:
    """A replay without ``rate`` is paced at the default 50/s; ``rate=1000`` at 1,000/s.

    The old replay sent as fast as it could when no rate was given (no pause at all).
    """
    ids = unsupported_documents(client, "default-rate-replay", 10)
    letters = dead_letter_ids(engine, ids)
    paced = VirtualTime()
    service = ReplayService(
        engine, Dispatcher(broker), settings, PIPELINE, sleep=paced.sleep, clock=paced.clock
    )
    result = service.replay(ReplayRequest(ids=letters), RUN)
    assert [item.action for item in result.items] == ["replayed"] * 10, result
    assert paced.sleeps == pytest.approx([1 / 50] * 9), "a replay without a rate was not paced"
    wait_all_failed(client, ids)  # the letters are dead again
    fast = VirtualTime()
    service = ReplayService(
        engine, Dispatcher(broker), settings, PIPELINE, sleep=fast.sleep, clock=fast.clock
    )
    result = service.replay(ReplayRequest(ids=letters, rate=1000), RUN)
    assert [item.action for item in result.items] == ["replayed"] * 10, result
    assert fast.sleeps == pytest.approx([1 / 1000] * 9)
    wait_all_failed(client, ids)


def test_bulk_rerun_is_paced_by_default_and_honours_a_higher_rate(
    client: TestClient[Any],
    engine: Engine,
    broker: dramatiq.Broker,
    settings: Settings,
    worker: Any,
) -> None:
    """A rerun without ``rate`` is paced at the default 50/s; ``rate=1000`` at 1,000/s.

    The old rerun bumped every document's generation back to back when no rate was given.
    """
    ids = unsupported_documents(client, "default-rate-rerun", 10)
    paced = VirtualTime()
    service = RerunService(
        engine, Dispatcher(broker), settings, PIPELINE, sleep=paced.sleep, clock=paced.clock
    )
    result = service.rerun(
        RerunRequest(from_stage="validate", ids=[uuid.UUID(i) for i in ids]), RUN
    )
    assert [item.action for item in result.items] == ["rerun"] * 10, result
    assert paced.sleeps == pytest.approx([1 / 50] * 9), "a rerun without a rate was not paced"
    wait_all_failed(client, ids)
    fast = VirtualTime()
    service = RerunService(
        engine, Dispatcher(broker), settings, PIPELINE, sleep=fast.sleep, clock=fast.clock
    )
    request = RerunRequest(from_stage="validate", ids=[uuid.UUID(i) for i in ids], rate=1000)
    result = service.rerun(request, RUN)
    assert [item.action for item in result.items] == ["rerun"] * 10, result
    assert fast.sleeps == pytest.approx([1 / 1000] * 9)
    wait_all_failed(client, ids)


# -- also: undecodable imports are audited ---------------------------------------------------


def test_importing_an_undecodable_letter_writes_an_imported_event(
    engine: Engine,
    settings: Settings,
    broker: dramatiq.Broker,
    replay_service: ReplayService,
) -> None:
    """An undecodable body in ``validate.XQ`` is imported *and* leaves an audit event.

    The old import wrote the letter but no event when the body named no known document.
    """
    key = f"{settings.broker.namespace}:validate.XQ"
    redis_client = broker.client  # type: ignore[attr-defined]
    redis_id = str(uuid.uuid4())
    redis_client.zadd(key, {redis_id: int(time.time() * 1000)})
    redis_client.hset(f"{key}.msgs", redis_id, b"\xffnot json at all {")
    try:
        result = replay_service.import_from_redis(redis_client, ME, queues=["validate"])
    finally:
        redis_client.zrem(key, redis_id)
        redis_client.hdel(f"{key}.msgs", redis_id)
    mine = [item for item in result.items if item.message_id == redis_id]
    assert [item.action for item in mine] == ["imported"], result
    (letter,) = rows(
        engine,
        "SELECT id FROM dead_letters WHERE queue_name = 'validate' AND message_id = :m",
        m=redis_id,
    )
    letter_id = str(letter["id"])
    found = rows(
        engine,
        "SELECT document_id, event, detail FROM stage_events "
        "WHERE event = 'imported' AND detail::text LIKE :letter",
        letter=f"%{letter_id}%",
    )
    assert len(found) == 1, found
    (event,) = found
    assert event["document_id"] is None, event
    assert ME.name in msgspec.json.encode(event["detail"]).decode(), event
