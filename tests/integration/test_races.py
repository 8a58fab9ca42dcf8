"""Lock order under concurrency (issue 11, item 1): operators, workers and the reconciler.

Every transaction that writes a document's stage rows, dead letters or stage events must
take its locks in one order (the document row ``FOR NO KEY UPDATE`` first, then stage rows,
then dead letters), or two of them deadlock: an operator holding the document ``FOR UPDATE``
waits for a stage row that a claim, a completion or a reconciler sweep holds, while that one
waits for the ``KEY SHARE`` lock its stage event's foreign key takes on the document.

The races (a sweep, a claim, a replay, a discard against a rerun) are made to meet
deterministically: the rerun is parked right after it locked the document (a third
connection holds a stage row the rerun resets), the other side runs until it waits for a
lock or finishes, and then the row is released. Besides "nothing raised", they read
Postgres's own count of broken deadlocks (``pg_stat_database.deadlocks``), so a deadlock
that some layer caught, retried or turned into a lost hold still fails the test.

Dry runs must take no locks at all: they answer while a third connection holds the locks a
live FK insert, completion or replay holds. Last, a bounded soak: real worker and reconciler
processes, and an operator issuing reruns, replays, discards and dry runs all the while.

Documents of the races are uploaded through an API on a Redis namespace no worker reads,
and each stage is delivered by a :class:`StageExecutor` of this module's own, so nothing
runs unless the test delivers it.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from functools import partial
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from litestar.testing import TestClient
from sqlalchemy import Connection, Engine, text

from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import StageExecutor
from pipeline.http.app import create_app
from pipeline.messages import Delivery, StageMessage
from pipeline.operations.common import ItemOutcome, OperationReport, Operator, RunContext
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import DiscardRequest, ReplayRequest, RerunRequest
from pipeline.operations.rerun import RerunService
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE
from pipeline.wiring import Wiring
from tests.support.api import bearer, upload
from tests.support.faults import Fault, FaultPlan, PlannedFaults, build_executor
from tests.support.processes import Processes, stack_env, wait_until

STAGES = PIPELINE.names

RUN = RunContext(operator=Operator(name="races@tests", via="cli"))
BODY = (
    b"Lock order test document. Otters float in kelp forests and hold hands while asleep.\n\n"
    b"A second paragraph, so that the chunker has more than one piece of text to cut.\n\n"
    b"A third paragraph about glaciers, which move slowly and carve valleys over time."
)
TERMINAL = ("succeeded", "failed")
BROKEN = "Postgres broke a deadlock between them (whether or not someone retried it)"
ROLES = ("rerun", "replay", "sweep", "claim", "holder")
"""Each actor of a race gets an engine of its own, told apart by ``application_name``."""


# -- a pipeline that only moves when the test delivers a stage ---------------------------


class Private:
    """An API on an unread Redis namespace, an executor and per-role engines."""

    def __init__(
        self,
        settings: Settings,
        client: TestClient[Any],
        dispatcher: Dispatcher,
        engines: dict[str, Engine],
        executor: StageExecutor,
        tag: str,
    ) -> None:
        self.settings = settings
        self.client = client
        self.dispatcher = dispatcher
        self.engines = engines
        self.executor = executor
        self.tag = tag

    def app(self, role: str) -> str:
        return f"races-{self.tag}-{role}"

    def upload(self, filename: str, body: bytes = BODY) -> uuid.UUID:
        response = upload(self.client, body, filename)
        assert response.status_code == 202, response.text
        return uuid.UUID(response.json()["id"])

    def rerun_service(self) -> RerunService:
        return RerunService(self.engines["rerun"], self.dispatcher, self.settings, PIPELINE)

    def replay_service(self) -> ReplayService:
        return ReplayService(self.engines["replay"], self.dispatcher, self.settings, PIPELINE)


@pytest.fixture(scope="module")
def private(
    settings: Settings, broker: dramatiq.Broker, api_key: str, faults: FaultPlan
) -> Iterator[Private]:
    tag = uuid.uuid4().hex[:6]
    # Under the run's namespace, so the run's cleanup removes these keys too.
    own = settings.replace(broker={"namespace": f"{settings.broker.namespace}-{tag}"})
    own_broker = make_broker(own)
    dramatiq.set_broker(broker)  # make_broker made its broker the global one: put it back
    dispatcher = Dispatcher(own_broker)
    engines = {role: make_engine(own, application_name=f"races-{tag}-{role}") for role in ROLES}
    executor = build_executor(
        own,
        dispatcher,
        engine=engines["claim"],
        faults=PlannedFaults(faults),
        worker_id=f"races-{tag}",
    )
    client = TestClient(create_app(own, dispatcher=dispatcher))
    client.__enter__()
    client.headers.update(bearer(api_key))
    dramatiq.set_broker(broker)
    try:
        yield Private(own, client, dispatcher, engines, executor, tag)
    finally:
        client.__exit__(None, None, None)
        for engine in engines.values():
            engine.dispose()


def deliver(private: Private, document_id: uuid.UUID, stage: str) -> Any:
    """Deliver the message the stage row waits for (its own message id), as a worker would."""
    with private.engines["holder"].connect() as conn:
        row = conn.execute(
            text(
                "SELECT generation, message_id FROM stage_runs "
                "WHERE document_id = :id AND stage = :stage"
            ),
            {"id": document_id, "stage": stage},
        ).one()
    envelope = stage_envelope(document_id, stage, row.generation, row.message_id)
    return private.executor.execute(stage, envelope.args[0], Delivery.from_message(envelope))  # type: ignore[arg-type]


def stage_envelope(
    document_id: uuid.UUID, stage: str, generation: int, message_id: str | None
) -> dramatiq.Message[Any]:
    message = StageMessage(document_id, stage, generation)  # type: ignore[arg-type]
    return dramatiq.Message(
        queue_name=stage,
        actor_name=stage,
        args=(message.to_args(),),
        kwargs={},
        options={},
        message_id=message_id or str(uuid.uuid4()),
    )


def drive(private: Private, document_id: uuid.UUID, timeout: float = 30.0) -> str:
    """Deliver whatever stage the document waits for until it is succeeded or failed."""
    deadline = time.monotonic() + timeout
    while True:
        with private.engines["holder"].connect() as conn:
            status = conn.execute(
                text("SELECT status FROM documents WHERE id = :id"), {"id": document_id}
            ).scalar_one()
            waiting = list(
                conn.execute(
                    text(
                        "SELECT r.stage FROM stage_runs r JOIN documents d "
                        "ON d.id = r.document_id AND d.generation = r.generation "
                        "WHERE r.document_id = :id AND r.status IN ('queued', 'retrying') "
                        "ORDER BY r.position"
                    ),
                    {"id": document_id},
                ).scalars()
            )
        if status in TERMINAL and not waiting:
            return str(status)
        if time.monotonic() > deadline:
            raise AssertionError(f"document {document_id} still {status}, waiting: {waiting}")
        for stage in waiting:
            # dramatiq.Retry: the old executor's way to ask for a redelivery; deliver again.
            with contextlib.suppress(dramatiq.Retry):
                deliver(private, document_id, stage)
        time.sleep(0.02)  # a retry may not be due yet


# -- observing and holding locks ----------------------------------------------------------


def blockers(engine: Engine, application_name: str) -> set[int]:
    """The backends that the role's waiting backends wait for (empty: it waits for nobody)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pg_blocking_pids(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :app "
                "AND wait_event_type = 'Lock'"
            ),
            {"app": application_name},
        ).scalars()
        return {pid for pids in rows for pid in pids}


class Holder:
    """A third connection holding row locks in an open transaction until released."""

    def __init__(self, engine: Engine, *statements: tuple[str, dict[str, Any]]) -> None:
        self.conn: Connection = engine.connect()
        self.tx = self.conn.begin()
        try:
            self.pid = int(self.conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            for sql, params in statements:
                assert self.conn.execute(text(sql), params).all(), f"nothing to lock: {sql}"
        except BaseException:
            self.conn.close()
            raise

    def release(self) -> None:
        if self.tx.is_active:
            self.tx.rollback()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
        self.conn.close()


def stage_row_lock(document_id: uuid.UUID, stage: str) -> tuple[str, dict[str, Any]]:
    return (
        "SELECT 1 FROM stage_runs WHERE document_id = :id AND stage = :stage FOR NO KEY UPDATE",
        {"id": document_id, "stage": stage},
    )


def park(private: Private, role: str, holder: Holder) -> None:
    """Wait until the role's transaction waits for the holder's lock."""
    wait_until(
        lambda: holder.pid in blockers(private.engines["holder"], private.app(role)),
        10,
        f"the {role} to wait for the held row lock",
        interval=0.02,
    )


def run_until_it_waits_or_ends(private: Private, role: str, future: Future[Any]) -> None:
    """Let the second side run until it waits for a lock or finishes."""
    wait_until(
        lambda: future.done() or bool(blockers(private.engines["holder"], private.app(role))),
        10,
        f"the {role} to wait for a lock or finish",
        interval=0.02,
    )


def outcomes(futures: dict[str, Future[Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Results by name, and the errors (``repr``) of the calls that raised."""
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, future in futures.items():
        error = future.exception(timeout=30)
        if error is not None:
            errors[name] = repr(error)
        else:
            results[name] = future.result()
    return results, errors


# -- reading the state ----------------------------------------------------------------------


def rows(engine: Engine, document_id: uuid.UUID) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT * FROM stage_runs WHERE document_id = :id ORDER BY position"),
            {"id": document_id},
        ).mappings()
        return [dict(row) for row in found]


def document(engine: Engine, document_id: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT * FROM documents WHERE id = :id"), {"id": document_id}
        ).mappings()
        return dict(found.one())


def letters(engine: Engine, document_id: uuid.UUID) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT * FROM dead_letters WHERE document_id = :id ORDER BY failed_at, id"),
            {"id": document_id},
        ).mappings()
        return [dict(row) for row in found]


def stage_events(engine: Engine, document_id: uuid.UUID) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT * FROM stage_events WHERE document_id = :id ORDER BY id"),
            {"id": document_id},
        ).mappings()
        return [dict(row) for row in found]


def snapshot(
    engine: Engine, document_ids: list[uuid.UUID], *, drops: bool = True
) -> dict[str, Any]:
    """The documents' rows in every table (``drops=False``: without ``dropped`` events,
    which a late duplicate delivery writes whatever the operators do)."""
    events = "" if drops else "AND event <> 'dropped' "
    tables = {
        "documents": "SELECT * FROM documents WHERE id = ANY(:ids) ORDER BY id",
        "stage_runs": "SELECT * FROM stage_runs WHERE document_id = ANY(:ids) "
        "ORDER BY document_id, position",
        "stage_events": f"SELECT * FROM stage_events WHERE document_id = ANY(:ids) {events}"
        "ORDER BY id",
        "dead_letters": "SELECT * FROM dead_letters WHERE document_id = ANY(:ids) ORDER BY id",
        "chunks": "SELECT id, document_id, ordinal, text FROM chunks "
        "WHERE document_id = ANY(:ids) ORDER BY id",
    }
    with engine.connect() as conn:
        return {
            name: [dict(r) for r in conn.execute(text(sql), {"ids": document_ids}).mappings()]
            for name, sql in tables.items()
        }


def assert_every_row_at_the_document_generation(engine: Engine, document_id: uuid.UUID) -> None:
    """Every row is at the document's generation (a rerun carries the succeeded rows
    before its stage over to the new generation)."""
    generation = document(engine, document_id)["generation"]
    found = {row["stage"]: row["generation"] for row in rows(engine, document_id)}
    assert found == dict.fromkeys(STAGES, generation), (generation, found)


def assert_chunks_once(engine: Engine, document_id: uuid.UUID) -> None:
    problem = chunk_problems(engine, document_id)
    assert not problem, problem


def mentions_deadlock(value: object) -> bool:
    return "deadlock" in json.dumps(value, default=str).lower()


def deadlocks(engine: Engine) -> int:
    """How many deadlocks Postgres has broken in this database (whoever retried them)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        )


def deadlocks_since(engine: Engine, before: int, engines: list[Engine]) -> int:
    """Deadlocks counted since ``before``. A backend reports its statistics when it goes
    idle or exits, so the engines that raced are closed first and the count is given a
    moment to move."""
    for raced in engines:
        raced.dispose()
    with contextlib.suppress(AssertionError):
        wait_until(lambda: deadlocks(engine) > before, 1.5, "a deadlock to be counted")
    return deadlocks(engine) - before


# -- the races: a rerun parked just after it locked the document ------------------------------


def race_a_parked_rerun(
    private: Private,
    engine: Engine,
    document_id: uuid.UUID,
    from_stage: str,
    role: str,
    other: Callable[[], Any],
) -> tuple[ItemOutcome, Any]:
    """Rerun the document from ``from_stage`` while a third connection holds its chunk row
    (a row the rerun resets), so that the rerun stops right after its first lock; start
    ``other`` and let it run until it waits for a lock or ends; then release the row.

    Neither may raise, and Postgres may not have broken a deadlock between them."""
    before = deadlocks(engine)
    request = RerunRequest(ids=[document_id], from_stage=from_stage, reason="races")  # type: ignore[arg-type]
    with (
        ThreadPoolExecutor(2) as pool,
        Holder(private.engines["holder"], stage_row_lock(document_id, "chunk")) as holder,
    ):
        rerun = private.rerun_service()
        reran = pool.submit(rerun.rerun, request, RUN)
        park(private, "rerun", holder)
        raced = pool.submit(other)
        run_until_it_waits_or_ends(private, role, raced)
        holder.release()
        results, errors = outcomes({"rerun": reran, role: raced})
    assert not errors, errors
    assert deadlocks_since(engine, before, list(private.engines.values())) == 0, BROKEN
    [item] = results["rerun"].items
    return item, results[role]


def dead_document(private: Private, faults: FaultPlan, name: str) -> tuple[uuid.UUID, Any]:
    """A document whose extract died once (a permanent fault), and its dead letter."""
    faults.add("extract", name, Fault("permanent", 1))
    document_id = private.upload(name)
    assert drive(private, document_id) == "failed"
    [letter] = letters(private.engines["holder"], document_id)
    assert letter["status"] == "dead"
    return document_id, letter["id"]


# -- 1. reconciler vs rerun ------------------------------------------------------------------


def test_a_sweep_resending_an_overdue_row_and_a_rerun_do_not_deadlock(
    private: Private, engine: Engine
) -> None:
    """The sweep locks an overdue stage row, then its ``resent`` event's FK wants the
    document; the rerun holds the document and then wants that row. Old code: one of them
    dies with DeadlockDetected."""
    document_id = private.upload("races-sweep.txt")  # validate queued; nobody reads its message
    with engine.begin() as conn:  # its message was lost: the row is past its grace
        conn.execute(
            text(
                "UPDATE stage_runs SET deadline_at = now() - interval '1 minute' "
                "WHERE document_id = :id AND stage = 'validate'"
            ),
            {"id": document_id},
        )
    reconciler = Wiring(
        private.settings, engine=private.engines["sweep"], dispatcher=private.dispatcher
    ).reconciler
    item, _ = race_a_parked_rerun(
        private, engine, document_id, "validate", "sweep", reconciler.sweep
    )
    assert item.action in ("rerun", "skipped"), item
    assert item.detail, item
    assert not mentions_deadlock(item.detail), item
    assert_every_row_at_the_document_generation(engine, document_id)
    if item.action == "rerun":
        assert document(engine, document_id)["generation"] == 2
    assert drive(private, document_id) == "succeeded"
    assert_every_row_at_the_document_generation(engine, document_id)
    assert_chunks_once(engine, document_id)


# -- 2. claim vs rerun ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "status"),
    [("extract", "processing"), ("validate", "pending")],
    ids=["extract-of-a-processing-document", "validate-of-a-pending-document"],
)
def test_a_claim_and_a_rerun_from_its_stage_do_not_deadlock(
    private: Private, engine: Engine, stage: str, status: str
) -> None:
    """A claim locks its stage row, then wants the document a rerun holds (its ``claimed``
    event's FK; for validate also the document's move to ``processing``); the rerun then
    wants the claimed row. Old code: the claim dies with DeadlockDetected (and Dramatiq
    burns a retry on it). The validate case also deadlocks a rerun that only switched to
    ``FOR NO KEY UPDATE``: the claim must lock the document first."""
    document_id = private.upload(f"races-claim-{stage}.txt")
    if stage == "extract":
        deliver(private, document_id, "validate")
    assert document(engine, document_id)["status"] == status
    [row] = [row for row in rows(engine, document_id) if row["stage"] == stage]
    assert row["status"] == "queued"
    envelope = stage_envelope(document_id, stage, row["generation"], row["message_id"])
    delivery = Delivery.from_message(envelope)
    item, _ = race_a_parked_rerun(
        private,
        engine,
        document_id,
        stage,
        "claim",
        partial(private.executor.execute, stage, envelope.args[0], delivery),  # type: ignore[arg-type]
    )
    assert item.action in ("rerun", "skipped"), item
    assert not mentions_deadlock(item.detail), item
    failures = [
        (event["event"], event["detail"])
        for event in stage_events(engine, document_id)
        if event["stage"] == stage and event["event"] in ("retrying", "dead")
    ]
    assert failures == [], failures  # no fault was planned: a failure here is the race's
    assert drive(private, document_id) == "succeeded"
    assert_every_row_at_the_document_generation(engine, document_id)
    assert_chunks_once(engine, document_id)
    assert letters(engine, document_id) == []


# -- 3. replay (or discard) vs rerun ---------------------------------------------------------


def test_a_replay_and_a_rerun_of_one_document_do_not_deadlock(
    private: Private, engine: Engine, faults: FaultPlan
) -> None:
    """The replay locks the letter, then the stage row and the document; the rerun locks
    the document, then the stage rows, then the letters. Old code: DeadlockDetected.
    Fixed: one of them wins, the other is skipped with a reason."""
    document_id, letter_id = dead_document(private, faults, "races-replay-rerun.txt")
    replay = private.replay_service()
    rerun_item, report = race_a_parked_rerun(
        private,
        engine,
        document_id,
        "validate",
        "replay",
        partial(replay.replay, ReplayRequest(ids=[letter_id], reason="races"), RUN),
    )
    items: list[ItemOutcome] = [rerun_item, report.items[0]]
    winners = [item for item in items if item.action != "skipped"]
    losers = [item for item in items if item.action == "skipped"]
    assert len(winners) == 1, items
    assert len(losers) == 1, items
    assert winners[0].action in ("rerun", "replayed"), items
    assert losers[0].detail, items
    assert not mentions_deadlock(losers[0].detail), items
    assert_every_row_at_the_document_generation(engine, document_id)
    assert letters(engine, document_id)[0]["status"] in ("replayed", "discarded")
    assert document(engine, document_id)["status"] == "processing"
    assert drive(private, document_id) == "succeeded"  # the fault fired once
    assert_every_row_at_the_document_generation(engine, document_id)
    assert [row["status"] for row in letters(engine, document_id)] in (
        ["replayed"],
        ["discarded"],
    )
    assert_chunks_once(engine, document_id)


def test_a_discard_and_a_rerun_of_one_document_do_not_deadlock(
    private: Private, engine: Engine, faults: FaultPlan
) -> None:
    """The discard locks the letter, then its ``discarded`` event's FK wants the document
    the rerun holds; the rerun then wants the letter (to settle it). Old code:
    DeadlockDetected. Fixed: the rerun (first to the document) settles the letter."""
    document_id, letter_id = dead_document(private, faults, "races-discard-rerun.txt")
    replay = private.replay_service()
    rerun_item, report = race_a_parked_rerun(
        private,
        engine,
        document_id,
        "validate",
        "replay",
        partial(replay.discard, DiscardRequest(ids=[letter_id], reason="races"), RUN),
    )
    [discard_item] = report.items
    assert rerun_item.action == "rerun", rerun_item
    assert discard_item.action in ("discarded", "skipped"), discard_item
    assert discard_item.detail, discard_item
    assert not mentions_deadlock(discard_item.detail), discard_item
    assert_every_row_at_the_document_generation(engine, document_id)
    assert [row["status"] for row in letters(engine, document_id)] == ["discarded"]
    assert drive(private, document_id) == "succeeded"
    assert_every_row_at_the_document_generation(engine, document_id)
    assert_chunks_once(engine, document_id)


# -- 4. dry runs take no locks ---------------------------------------------------------------


def dry_run_behind(
    engine: Engine,
    locks: list[tuple[str, dict[str, Any]]],
    call: Callable[[], OperationReport],
) -> tuple[bool, OperationReport]:
    """Run ``call`` while a third connection holds ``locks``: (did it wait > 2 s, report)."""
    with ThreadPoolExecutor(1) as pool, Holder(engine, *locks) as holder:
        future = pool.submit(call)
        wait_for_futures([future], timeout=2.0)
        waited = not future.done()
        holder.release()
        report: OperationReport = future.result(timeout=30)
    return waited, report


def test_dry_runs_wait_for_no_lock_and_change_nothing(
    private: Private, engine: Engine, faults: FaultPlan
) -> None:
    """A dry run takes no row locks: it answers while a live FK insert holds ``KEY SHARE``
    on the document, or a live completion/replay holds the stage row and the letter.
    Old code: the dry runs lock ``FOR UPDATE`` and wait behind both."""
    name = "races-dry.txt"
    faults.add("extract", name, Fault("permanent", 1))
    document_id = private.upload(name)
    assert drive(private, document_id) == "failed"
    [letter] = letters(engine, document_id)
    before = snapshot(engine, [document_id])
    rerun, replay = private.rerun_service(), private.replay_service()
    ids = [document_id]
    letter_ids = [letter["id"]]
    calls: dict[str, Callable[[], OperationReport]] = {
        "rerun from extract": partial(
            rerun.rerun, RerunRequest(ids=ids, from_stage="extract", dry_run=True), RUN
        ),
        "rerun from chunk": partial(
            rerun.rerun, RerunRequest(ids=ids, from_stage="chunk", dry_run=True), RUN
        ),
        "replay": partial(replay.replay, ReplayRequest(ids=letter_ids, dry_run=True), RUN),
        "discard": partial(replay.discard, DiscardRequest(ids=letter_ids, dry_run=True), RUN),
    }
    key_share = ("SELECT 1 FROM documents WHERE id = :id FOR KEY SHARE", {"id": document_id})
    letter_lock = (
        "SELECT 1 FROM dead_letters WHERE id = :id FOR NO KEY UPDATE",
        {"id": letter["id"]},
    )
    held = {
        "FOR KEY SHARE on the document": [key_share],
        "FOR NO KEY UPDATE on the stage row and the letter": [
            stage_row_lock(document_id, "extract"),
            letter_lock,
        ],
    }
    blocked: dict[str, list[str]] = {lock: [] for lock in held}
    found: list[dict[str, OperationReport]] = []
    for lock, statements in held.items():
        reports = {}
        for name, call in calls.items():
            waited, reports[name] = dry_run_behind(private.engines["holder"], statements, call)
            if waited:
                blocked[lock].append(name)
        found.append(reports)
    assert not any(blocked.values()), f"dry runs still waiting after 2 s: {blocked}"
    for reports in found:
        assert reports["rerun from extract"].items[0].action == "would rerun"
        refused = reports["rerun from chunk"].items[0]
        assert refused.action == "skipped"
        assert "extract has not succeeded" in refused.detail
        assert reports["replay"].items[0].action == "would replay"
        assert reports["discard"].items[0].action == "would discard"
    assert snapshot(engine, [document_id]) == before


# -- 5. a soak with real processes ------------------------------------------------------------


SOAK_S = 15.0
SOAK_FAULTS: list[dict[str, Any]] = [
    {"stage": "extract", "match": "soak-dead-*", "permanent": True},
    {"stage": "chunk", "match": "soak-flaky-*", "transient_attempts": 1},
    {"stage": "embed", "match": "soak-lost-*", "drop_send": True},
]
"""Documents that die (letters to replay and discard), retry, or lose a send (the
reconciler resends it); ``soak-ok-*`` documents just flow."""


def soak_env(settings: Settings) -> dict[str, str]:
    """The process stacks' environment (a namespace of its own, short deadlines), with
    the soak's faults and a quicker grace and sweep."""
    return stack_env(
        settings,
        SOAK_FAULTS,
        PIPELINE_QUEUED_GRACE_S="1",
        PIPELINE_RECONCILER_INTERVAL_S="0.3",
    )


class Operators:
    """The soak's operator: random reruns, replays, discards and dry runs, all recorded."""

    def __init__(
        self,
        engine: Engine,
        rerun: RerunService,
        replay: ReplayService,
        live: list[uuid.UUID],
        still: list[uuid.UUID],
        rng: random.Random,
    ) -> None:
        self.engine = engine
        self.rerun = rerun
        self.replay = replay
        self.live = live
        self.still = still
        self.rng = rng
        self.still_letters = self.dead_letters(still)
        self.results: list[tuple[bool, OperationReport]] = []
        self.errors: list[str] = []
        self.counts: Counter[str] = Counter()

    def dead_letters(self, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT id FROM dead_letters WHERE document_id = ANY(:ids) "
                        "AND status = 'dead' ORDER BY id"
                    ),
                    {"ids": ids},
                ).scalars()
            )

    def step(self) -> None:
        rng = self.rng
        roll = rng.random()
        ids = rng.sample(self.live, rng.randint(1, 3))
        stage: Any = rng.choice(STAGES)
        dead = self.dead_letters(self.live)
        if roll < 0.35:
            rerun = RerunRequest(ids=ids, from_stage=stage, rate=500.0, reason="soak")
            self.act("rerun", partial(self.rerun.rerun, rerun, RUN))
        elif roll < 0.55 and dead:
            picked = rng.sample(dead, min(len(dead), rng.randint(1, 2)))
            replay = ReplayRequest(ids=picked, rate=500.0, reason="soak")
            self.act("replay", partial(self.replay.replay, replay, RUN))
        elif roll < 0.62 and dead:
            discard = DiscardRequest(ids=[rng.choice(dead)], reason="soak")
            self.act("discard", partial(self.replay.discard, discard, RUN))
        else:
            # Dry runs on documents in flight, and on finished ones nothing else touches.
            targets = [*ids, rng.choice(self.still)]
            letters_ = [*dead[:2], *self.still_letters]
            kind = rng.choice(("rerun", "replay", "discard"))
            if kind == "rerun":
                dry_rerun = RerunRequest(ids=targets, from_stage=stage, dry_run=True, reason="dry")
                self.act("dry rerun", partial(self.rerun.rerun, dry_rerun, RUN), dry=True)
            elif kind == "replay":
                dry_replay = ReplayRequest(ids=letters_, dry_run=True, reason="dry")
                self.act("dry replay", partial(self.replay.replay, dry_replay, RUN), dry=True)
            else:
                dry_discard = DiscardRequest(ids=letters_, dry_run=True, reason="dry")
                self.act("dry discard", partial(self.replay.discard, dry_discard, RUN), dry=True)

    def act(self, kind: str, call: Callable[[], OperationReport], *, dry: bool = False) -> None:
        self.counts[kind] += 1
        try:
            self.results.append((dry, call()))
        except Exception as error:  # every one of them is reported at the end
            self.errors.append(f"{kind}: {error!r}"[:600])

    def items(self, *, dry: bool) -> list[ItemOutcome]:
        return [item for was_dry, found in self.results if was_dry == dry for item in found.items]


def generation_problems(document_row: dict[str, Any], stage_rows: list[dict[str, Any]]) -> str:
    """Every row is at the document's generation (a rerun carries the stages before its
    own over), and a finished document has nothing in flight."""
    generation = document_row["generation"]
    ok = (
        all(row["generation"] == generation for row in stage_rows)
        and not [row for row in stage_rows if row["status"] in ("queued", "running", "retrying")]
        and (
            all(row["status"] == "succeeded" for row in stage_rows)
            if document_row["status"] == "succeeded"
            else [row["status"] for row in stage_rows].count("dead") == 1
        )
    )
    if ok:
        return ""
    shown = [(row["stage"], row["status"], row["generation"]) for row in stage_rows]
    return f"{document_row['filename']} {document_row['status']} at {generation}: {shown}"


def chunk_problems(engine: Engine, document_id: uuid.UUID) -> str:
    with engine.connect() as conn:
        count, distinct, span = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT ordinal), coalesce(max(ordinal) + 1, 0) "
                "FROM chunks WHERE document_id = :id"
            ),
            {"id": document_id},
        ).one()
    return "" if count == distinct == span else f"{document_id}: {(count, distinct, span)}"


def test_soak_operators_against_live_workers_and_reconciler(
    settings: Settings, engine: Engine, api_key: str, tmp_path: Path
) -> None:
    """Reruns, replays, discards and dry runs while a worker and a reconciler move the
    same documents: no deadlock anywhere, dry runs change nothing, and every document ends
    terminal with its chunks once and its stage rows at its generation."""
    env = soak_env(settings)
    own = Settings.from_env(env)
    processes = Processes(env, tmp_path)
    client = TestClient(create_app(own))
    operator_engine = make_engine(own, application_name="races-soak-operator")
    seed = random.randrange(2**32)
    print(f"soak seed {seed}")
    try:
        client.__enter__()
        client.headers.update(bearer(api_key))
        dispatcher = Dispatcher(make_broker(own))
        # No metrics server: its fixed default port may be taken, which stops the worker.
        processes.worker("--metrics-port", "0")
        processes.reconciler()

        def send(name: str) -> uuid.UUID:
            response = upload(client, BODY + f" {name}".encode(), name)
            assert response.status_code == 202, response.text
            return uuid.UUID(response.json()["id"])

        def unfinished(ids: list[uuid.UUID]) -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        text(
                            "SELECT count(*) FROM documents WHERE id = ANY(:ids) "
                            "AND status NOT IN ('succeeded', 'failed')"
                        ),
                        {"ids": ids},
                    ).scalar_one()
                )

        still = [send("soak-still-ok.txt"), send("soak-dead-still.txt")]
        live = [
            send(f"soak-{kind}-{i}.txt")
            for kind, count in (("ok", 4), ("dead", 2), ("flaky", 2), ("lost", 2))
            for i in range(count)
        ]
        everyone = still + live
        # Generous: a loaded machine can take many seconds to boot a worker.
        wait_until(lambda: unfinished(still) == 0, 60, "the dry-run documents to finish")
        before = snapshot(engine, still, drops=False)
        operators = Operators(
            operator_engine,
            RerunService(operator_engine, dispatcher, own, PIPELINE),
            ReplayService(operator_engine, dispatcher, own, PIPELINE),
            live,
            still,
            random.Random(seed),
        )
        assert len(operators.still_letters) == 1
        before_soak = deadlocks(engine)
        stop_at = time.monotonic() + SOAK_S
        while time.monotonic() < stop_at:
            operators.step()
            time.sleep(operators.rng.uniform(0, 0.02))
        print(f"soak operations: {dict(operators.counts)}")

        problems: dict[str, list[Any]] = {}
        try:
            wait_until(lambda: unfinished(everyone) == 0, 60, "every document to finish")
        except AssertionError as error:
            problems["not finished"] = [str(error)]
        logs = {name: processes.log(name) for name in ("worker", "reconciler")}
        broken = deadlocks_since(engine, before_soak, [operator_engine])
        with engine.connect() as conn:
            failures = conn.execute(
                text(
                    "SELECT stage, event, detail FROM stage_events "
                    "WHERE document_id = ANY(:ids) AND event IN ('retrying', 'dead') "
                    "AND detail::text ILIKE '%deadlock%'"
                ),
                {"ids": everyone},
            ).all()
            dry_events = conn.execute(
                text(
                    "SELECT event, detail FROM stage_events WHERE document_id = ANY(:ids) "
                    "AND detail->>'reason' = 'dry'"
                ),
                {"ids": everyone},
            ).all()
            audited = Counter(
                conn.execute(
                    text(
                        "SELECT event FROM stage_events WHERE document_id = ANY(:ids) "
                        "AND event IN ('rerun', 'replayed') AND detail->>'reason' = 'soak'"
                    ),
                    {"ids": live},
                ).scalars()
            )
        done = Counter(
            item.action
            for item in operators.items(dry=False)
            if item.action in ("rerun", "replayed")
        )
        items = operators.items(dry=False) + operators.items(dry=True)
        problems |= {
            "operator calls that raised": operators.errors,
            "deadlocks Postgres broke": [broken] if broken else [],
            "report items that failed": [item for item in items if str(item.action) == "failed"],
            "report items that mention a deadlock": [
                item for item in items if mentions_deadlock(item.detail)
            ],
            "dry-run items that acted": [
                item
                for item in operators.items(dry=True)
                if not (item.action.startswith("would ") or item.action == "skipped")
            ],
            "retrying/dead events that carry a deadlock": [tuple(row) for row in failures],
            "log lines that report a deadlock": [
                f"{name}: {line[:300]}"
                for name, log in logs.items()
                for line in log.splitlines()
                if "deadlock" in line.lower()
            ],
            "events written by dry runs": [tuple(row) for row in dry_events],
            "operator actions not audited exactly once": (
                [] if audited == done else [f"items {dict(done)}, events {dict(audited)}"]
            ),
            "dry-run documents that changed": [
                table
                for table, found in snapshot(engine, still, drops=False).items()
                if found != before[table]
            ],
            "stage rows off their document's generation": [
                problem
                for document_id in everyone
                if (
                    problem := generation_problems(
                        document(engine, document_id), rows(engine, document_id)
                    )
                )
            ],
            "chunks stored twice": [
                problem
                for document_id in everyone
                if (problem := chunk_problems(engine, document_id))
            ],
        }
        shown = {name: values[:3] for name, values in problems.items() if values}
        counts = {name: len(values) for name, values in problems.items() if values}
        assert not shown, f"seed {seed}, {counts}: {shown}"
    finally:
        processes.stop_all()
        client.__exit__(None, None, None)
        operator_engine.dispose()
