"""The failure model, with real processes: nothing lost, nothing applied twice.

Each test runs its own workers and reconcilers as subprocesses (``pipeline worker``,
``pipeline reconciler``) on a Redis namespace of its own, against the run's database,
with short deadlines so that recovery takes seconds.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from sqlalchemy import Engine, text

from pipeline.broker import make_broker
from pipeline.engine.dispatch import Dispatcher
from pipeline.messages import StageMessage
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE
from tests.support.documents import events
from tests.support.processes import ProcessStack, stack_maker, wait_until

pytestmark = pytest.mark.slow
BODY = b"Recovery test document. It has a few sentences.\n\nAnd a second paragraph of text."


class Stack(ProcessStack):
    body = BODY

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def stage_status(self, document_id: str, stage: str) -> str:
        return str(
            self.scalar(
                "SELECT status FROM stage_runs WHERE document_id = :id AND stage = :stage",
                id=document_id,
                stage=stage,
            )
        )

    def wait_done(self, ids: list[str], timeout: float = 60) -> None:
        def done() -> bool:
            with self.engine.connect() as conn:
                pending = conn.execute(
                    text(
                        "SELECT count(*) FROM documents WHERE id = ANY(:ids) "
                        "AND status NOT IN ('succeeded', 'failed')"
                    ),
                    {"ids": [uuid.UUID(i) for i in ids]},
                ).scalar_one()
            return pending == 0

        try:
            wait_until(done, timeout, f"{len(ids)} document(s) to finish")
        except AssertionError:
            print(self.processes.log("worker"), self.processes.log("reconciler"))
            raise

    def assert_applied_once(self, document_id: str) -> None:
        with self.engine.connect() as conn:
            chunks = conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT ordinal), coalesce(max(ordinal) + 1, 0) "
                    "FROM chunks WHERE document_id = :id"
                ),
                {"id": document_id},
            ).one()
            succeeded = conn.execute(
                text(
                    "SELECT stage, count(*) FROM stage_events WHERE document_id = :id "
                    "AND event = 'succeeded' GROUP BY stage"
                ),
                {"id": document_id},
            ).all()
        assert chunks[0] == chunks[1] == chunks[2] > 0, chunks
        assert dict(succeeded) == dict.fromkeys(PIPELINE.names, 1)


@pytest.fixture
def make_stack(settings: Settings, engine: Engine, tmp_path: Path, api_key: str) -> Iterator[Any]:
    with stack_maker(settings, engine, tmp_path, api_key, Stack) as make:
        yield make


def test_sigkill_mid_stage_still_succeeds_once(make_stack: Any) -> None:
    stack = make_stack([{"stage": "chunk", "match": "slow-*", "sleep_s": 60}])
    worker = stack.processes.worker()
    stack.processes.reconciler()
    document_id = stack.upload("slow-kill.txt")
    wait_until(lambda: stack.stage_status(document_id, "chunk") == "running", 20, "chunk to run")
    stack.processes.kill(worker)
    stack.processes.worker(name="worker-2")
    stack.wait_done([document_id])
    assert stack.status(document_id) == "succeeded"
    stack.assert_applied_once(document_id)
    history = [(e["stage"], e["event"]) for e in events(stack.engine, document_id)]
    assert ("chunk", "resent") in history
    assert (
        stack.scalar(
            "SELECT attempts FROM stage_runs WHERE document_id = :id AND stage = 'chunk'",
            id=document_id,
        )
        == 2
    )


def test_flushall_with_50_documents_in_flight(make_stack: Any) -> None:
    stack = make_stack()
    stack.processes.worker()
    stack.processes.reconciler()
    ids = [stack.upload(f"flush-{i}.txt", BODY + f" Number {i}.".encode()) for i in range(50)]
    redis.Redis.from_url(stack.settings.broker.url).flushall()
    stack.wait_done(ids, timeout=120)
    for document_id in ids:
        assert stack.status(document_id) == "succeeded"
        stack.assert_applied_once(document_id)


def test_workers_recover_when_postgres_drops_their_connections(make_stack: Any) -> None:
    stack = make_stack([{"stage": "extract", "match": "pg-*", "sleep_s": 0.3, "sleep_attempts": 9}])
    stack.processes.worker()
    stack.processes.reconciler()
    ids = [stack.upload(f"pg-{i}.txt", BODY + f" {i}".encode()) for i in range(10)]
    for _ in range(3):
        time.sleep(0.7)
        stack.scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'pipeline-worker:%'"
        )
    stack.wait_done(ids, timeout=90)
    for document_id in ids:
        assert stack.status(document_id) == "succeeded"
        stack.assert_applied_once(document_id)


def test_duplicate_and_stale_deliveries_leave_one_effect(make_stack: Any) -> None:
    stack = make_stack([{"stage": "upload", "match": "dup-*", "drop_send": True}])
    document_id = stack.upload("dup-1.txt")
    broker = make_broker(stack.settings)
    dispatcher = Dispatcher(broker)
    message = StageMessage(uuid.UUID(document_id), "validate", 1)
    envelope = dispatcher.build(message)
    with stack.engine.begin() as conn:  # point the row at our message, as the API would have
        conn.execute(
            text(
                "UPDATE stage_runs SET message_id = :m WHERE document_id = :id "
                "AND stage = 'validate'"
            ),
            {"m": envelope.message_id, "id": document_id},
        )
    dispatcher.send(envelope)
    dispatcher.send(envelope)  # the same message twice, as at-least-once delivery may
    # generations start at 1, so the one that does not match is a later one
    dispatcher.send(dispatcher.build(StageMessage(uuid.UUID(document_id), "validate", 2)))
    stack.processes.worker()
    stack.wait_done([document_id])
    assert stack.status(document_id) == "succeeded"
    stack.assert_applied_once(document_id)
    dropped = [
        e["detail"]["reason"] for e in events(stack.engine, document_id) if e["event"] == "dropped"
    ]
    assert len(dropped) == 2, dropped
    assert any(reason.startswith("duplicate") for reason in dropped)
    assert any(reason.startswith("stale message: generation 2") for reason in dropped)


def test_reconciler_recovers_sends_dropped_after_commit(make_stack: Any) -> None:
    stack = make_stack(
        [
            {"stage": "upload", "match": "lost-upload*", "drop_send": True},
            {"stage": "extract", "match": "lost-extract*", "drop_send": True},
        ]
    )
    stack.processes.worker()
    after_upload = stack.upload("lost-upload.txt")
    after_extract = stack.upload("lost-extract.txt")
    wait_until(
        lambda: stack.stage_status(after_extract, "extract") == "succeeded", 30, "extract to finish"
    )
    time.sleep(2.5)  # past the queued grace: without a reconciler both stay stuck
    assert stack.stage_status(after_upload, "validate") == "queued"
    # OCR has nothing to do for a text file: extract's completion skipped it, so the
    # lost send is chunk's.
    assert stack.stage_status(after_extract, "ocr") == "succeeded"
    assert stack.stage_status(after_extract, "chunk") == "queued"
    stack.processes.reconciler()
    stack.wait_done([after_upload, after_extract])
    for document_id, stage in ((after_upload, "validate"), (after_extract, "chunk")):
        assert stack.status(document_id) == "succeeded"
        stack.assert_applied_once(document_id)
        resent = [e for e in events(stack.engine, document_id) if e["event"] == "resent"]
        assert [e["stage"] for e in resent] == [stage]


def test_poison_messages_are_dead_lettered_and_the_worker_keeps_going(make_stack: Any) -> None:
    stack = make_stack()
    broker = make_broker(stack.settings)
    namespace = stack.settings.broker.namespace
    client = broker.client
    # 1. bytes that are not JSON, written the way Dramatiq's enqueue writes a message
    garbage_id = str(uuid.uuid4())
    client.hset(f"{namespace}:validate.msgs", garbage_id, b"\x80\x04not json at all")
    client.rpush(f"{namespace}:validate", garbage_id)
    # 2. a message for an actor nobody declared
    evil = broker.enqueue(
        dramatiq.Message(queue_name="validate", actor_name="evil", args=(1,), kwargs={}, options={})
    )
    # 3. a message for a document that does not exist
    missing = uuid.uuid4()
    unknown = Dispatcher(broker).build(StageMessage(missing, "validate", 1))
    Dispatcher(broker).send(unknown)
    stack.processes.worker()
    document_id = stack.upload("after-poison.txt")
    stack.wait_done([document_id])
    assert stack.status(document_id) == "succeeded"

    def letters() -> dict[str, Any]:
        """This test's letters (other tests dead-letter on validate too)."""
        with stack.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT error_type, error_message, queue_name, message FROM dead_letters "
                    "WHERE message_id = ANY(:ids) AND queue_name = 'validate'"
                ),
                {"ids": [garbage_id, evil.message_id, unknown.message_id]},
            ).all()
        return {row.error_type: row for row in rows}

    wait_until(
        lambda: {"UndecodableMessage", "UnknownActor", "UnknownDocument"} <= set(letters()),
        20,
        "three dead letters",
    )
    found = letters()
    assert "evil" in found["UnknownActor"].error_message
    assert str(missing) in found["UnknownDocument"].error_message
    assert "not json" in found["UndecodableMessage"].message["raw"]
    assert client.hget(f"{namespace}:validate.msgs", garbage_id) is None  # not re-delivered


def test_sigterm_lets_the_running_stage_finish(make_stack: Any) -> None:
    stack = make_stack([{"stage": "chunk", "match": "term-*", "sleep_s": 2}])
    worker = stack.processes.worker("--shutdown-timeout", "20")
    document_id = stack.upload("term-1.txt")
    wait_until(lambda: stack.stage_status(document_id, "chunk") == "running", 20, "chunk to run")
    # As docker stop or Kubernetes do: SIGTERM to the main process only. (Dramatiq takes a
    # second SIGTERM in a worker process as "kill now", so signalling the whole group is
    # not a graceful stop.)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    assert stack.stage_status(document_id, "chunk") == "succeeded"
    assert stack.stage_status(document_id, "embed") == "queued"
    stack.processes.worker(name="worker-2")
    # The stopped worker may have fetched embed's message while it shut down; Dramatiq
    # hands it on only when that worker's heartbeat expires (a minute). The reconciler
    # is what recovers it at once, as in a deployment.
    stack.processes.reconciler()
    stack.wait_done([document_id])
    assert stack.status(document_id) == "succeeded"
    stack.assert_applied_once(document_id)
    assert (
        stack.scalar(
            "SELECT attempts FROM stage_runs WHERE document_id = :id AND stage = 'chunk'",
            id=document_id,
        )
        == 1
    )


def test_only_one_reconciler_sweeps_and_the_other_takes_over(make_stack: Any) -> None:
    stack = make_stack()
    first = stack.processes.reconciler("--interval", "0.3", name="reconciler-1")
    second = stack.processes.reconciler("--interval", "0.3", name="reconciler-2")

    def holders() -> list[str]:
        with stack.engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                        "AND a.application_name LIKE 'pipeline-reconciler:%' "
                        "AND a.datname = current_database()"
                    )
                ).scalars()
            )

    wait_until(lambda: len(holders()) == 1, 20, "one reconciler to hold the lock")
    time.sleep(1.0)
    (leader,) = holders()
    active, standby = (first, second) if leader.endswith(f":{first.pid}") else (second, first)
    assert leader.endswith(f":{active.pid}")
    stack.processes.kill(active)
    wait_until(
        lambda: (
            holders() == [h for h in holders() if h.endswith(f":{standby.pid}")]
            and len(holders()) == 1
        ),
        20,
        "the standby to take over",
    )
    assert standby.poll() is None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        found.extend(int(child) for child in children)
    return found


def _descendants(pid: int) -> list[int]:
    pending, seen = [pid], []
    while pending:
        current = pending.pop()
        for child in _children(current):
            seen.append(child)
            pending.append(child)
    return seen


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_parser_that_never_returns_is_killed_at_the_hard_limit(make_stack: Any) -> None:
    stack = make_stack(
        [{"stage": "extract", "match": "hang-*", "hang_parser": True}],
        PIPELINE_PARSER_TIME_LIMIT_S="1.5",
        PIPELINE_EXTRACT_MAX_RETRIES="1",
    )
    worker = stack.processes.worker()
    page = b"<html><body><h1>Stuck</h1><p>This page hangs the parser.</p></body></html>"
    hung = stack.upload("hang-1.html", page)
    stack.wait_done([hung], timeout=40)
    assert stack.status(hung) == "failed"
    reason = stack.scalar("SELECT failure_reason FROM documents WHERE id = :id", id=hung)
    assert "did not finish within 1.5 s" in reason, reason
    assert (
        stack.scalar(
            "SELECT attempts FROM stage_runs WHERE document_id = :id AND stage = 'extract'", id=hung
        )
        == 2
    )
    retry = next(e for e in events(stack.engine, hung) if e["event"] == "retrying")
    assert retry["detail"]["error_type"] == "ParserTimeout"
    assert retry["detail"]["duration_ms"] < 5_000
    # the worker keeps serving, and no parser child outlives its deadline
    fine = stack.upload("fine.html", page.replace(b"hangs", b"does not hang"))
    stack.wait_done([fine])
    assert stack.status(fine) == "succeeded"
    servers = [pid for pid in _descendants(worker.pid) if "forkserver" in _cmdline(pid)]
    assert servers, "the sandbox runs through a forkserver"
    assert all(_children(server) == [] for server in servers)


def test_workers_export_prometheus_metrics_per_stage(make_stack: Any) -> None:
    import httpx

    from pipeline.local.embedded import free_port

    stack = make_stack()
    port = free_port()
    stack.processes.worker("--metrics-port", str(port))
    document_id = stack.upload("metrics.txt")
    stack.wait_done([document_id])

    def scraped() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return ""

    wait_until(lambda: "pipeline_stage_duration_seconds_bucket" in scraped(), 20, "worker metrics")
    text_ = scraped()
    for stage in PIPELINE.names:
        # A text file has nothing for OCR to do: its stage is skipped, and counted so.
        outcome = "skipped" if stage == "ocr" else "succeeded"
        assert f'pipeline_stage_outcomes_total{{outcome="{outcome}",stage="{stage}"}}' in text_
    assert "dramatiq_messages_total" in text_


def _max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = best = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def test_worker_groups_consume_only_their_stages_and_scale_one_stage(make_stack: Any) -> None:
    stack = make_stack(
        [{"stage": "chunk", "match": "scale-*", "sleep_s": 0.6, "sleep_attempts": 99}]
    )
    front = stack.processes.worker(
        "--stage",
        "validate",
        "--stage",
        "extract",
        "--stage",
        "ocr",
        "--threads",
        "1",
        name="front",
    )
    back = stack.processes.worker("--stage", "chunk", "--threads", "1", name="chunk-1")
    rest = stack.processes.worker("--stage", "embed", "--stage", "index", name="rest")

    def chunk_runs(ids: list[str]) -> list[Any]:
        with stack.engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT worker_id, started_at, finished_at FROM stage_runs "
                        "WHERE stage = 'chunk' AND document_id = ANY(:ids)"
                    ),
                    {"ids": [uuid.UUID(i) for i in ids]},
                )
            )

    def owners(stage: str, ids: list[str]) -> set[int]:
        with stack.engine.connect() as conn:
            workers = conn.execute(
                text(
                    "SELECT DISTINCT worker_id FROM stage_runs WHERE stage = :stage "
                    "AND document_id = ANY(:ids)"
                ),
                {"stage": stage, "ids": [uuid.UUID(i) for i in ids]},
            ).scalars()
            return {int(worker.rsplit(":", 1)[1]) for worker in workers}

    first = [stack.upload(f"scale-a{i}.txt", BODY + f" {i}".encode()) for i in range(6)]
    stack.wait_done(first)
    groups = {
        name: set(_descendants(p.pid))
        for name, p in (("front", front), ("chunk", back), ("rest", rest))
    }
    for stage, group in (
        ("validate", "front"),
        ("extract", "front"),
        ("ocr", "front"),
        ("chunk", "chunk"),
        ("embed", "rest"),
        ("index", "rest"),
    ):
        assert owners(stage, first) <= groups[group], (stage, owners(stage, first), groups)
    one_group = chunk_runs(first)
    assert _max_overlap([(run.started_at, run.finished_at) for run in one_group]) == 1

    second_group = stack.processes.worker("--stage", "chunk", "--threads", "1", name="chunk-2")
    wait_until(lambda: "ready for action" in stack.processes.log("chunk-2"), 30, "chunk-2")
    second = [stack.upload(f"scale-b{i}.txt", BODY + f" b{i}".encode()) for i in range(8)]
    stack.wait_done(second)
    two_groups = chunk_runs(second)
    assert _max_overlap([(run.started_at, run.finished_at) for run in two_groups]) == 2
    pids = {int(run.worker_id.rsplit(":", 1)[1]) for run in two_groups}
    assert pids & set(_descendants(back.pid))
    assert pids & set(_descendants(second_group.pid))
