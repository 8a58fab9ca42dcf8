"""Torture run: documents through real processes while the machinery around them breaks.

    uv run python bench/torture.py [--documents 300] [--kills 20] [--flushes 3]
        [--terminations 5] [--reruns 30] [--pauses 8] [--duration 90] [--seed S] [--json]
        [--redis-db N]

N documents are uploaded through the real HTTP app (in-process, with an API key) to
real ``pipeline worker`` process groups and a ``pipeline reconciler``, while, at random
times, worker groups are SIGKILLed and restarted, the run's Redis keys are flushed
(every key of its namespace; with ``--redis-db N``, ``FLUSHDB`` of that database, which
must be empty and dedicated to the run), the workers' Postgres backends are terminated,
documents are re-run from random stages, dead letters are replayed, and stages are
paused and resumed (each for 0.3-3 s; every stage is resumed when the chaos ends). Some documents
hit transient faults (``PIPELINE_FAULTS``), so ``retrying`` rows exist during the chaos,
and one worker group runs a "bad deploy" that fails some documents permanently (rolled
back when the chaos ends), so there are dead letters to replay.

Then the chaos stops and the run settles: dead letters left are replayed, and it waits
until every document is terminal. It checks that every document succeeded with exactly
the chunks a calm run gives (computed from the pure functions of
``pipeline.processing``), no chunk twice, no stage applied twice in one generation, no
``dead`` letter left for a succeeded document, and every stage row succeeded at its
document's generation (one more than the document's reruns). Prints a summary table (or
JSON with ``--json``) and exits 1 if anything was lost, wrong or stray, if a rerun or
replay raised instead of reporting its item, or if the run did not settle in time.

Creates and drops its own database on ``DATABASE_URL``'s server and uses its own Redis
namespace on ``REDIS_URL``. ``tests/integration/test_torture.py`` runs a short version
of the same driver (:class:`Torture`) in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import redis
from litestar.testing import TestClient
from sqlalchemy import text

from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.operations.common import Operator, RunContext
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import ReplayRequest, RerunRequest
from pipeline.operations.rerun import RerunService
from pipeline.operations.stage_controls import StageControls
from pipeline.processing.chunk import ChunkPolicy, chunk
from pipeline.processing.extract import extract
from pipeline.processing.validate import ValidationPolicy, validate
from pipeline.settings import Settings
from pipeline.stages import DEFAULT_DEFINITION, load_definition
from pipeline.stages.extract import extract_limits

ROOT = Path(__file__).resolve().parents[1]
"""The repository (on PYTHONPATH, so a definition in ``tests.support`` can be imported)."""
RUN = RunContext(operator=Operator(name="torture", via="cli"))
PIPELINE = [sys.executable, "-m", "pipeline"]
WORDS = [
    *("river", "delta", "harbour", "glacier", "tide", "estuary", "basin", "current"),
    *("marsh", "lagoon", "reef", "dune", "cliff", "meadow", "canyon", "plateau"),
    *("valley", "summit", "ridge", "fjord", "inlet", "spring", "brook", "forest"),
]

FAULTS: list[dict[str, Any]] = [
    # transient failures on the first attempts: ``retrying`` rows during the chaos
    {"stage": "extract", "match": "flaky-extract-*", "transient_attempts": 2},
    {"stage": "embed", "match": "flaky-embed-*", "transient_attempts": 1},
    # slow on every attempt: kills and terminations find these mid-stage
    {"stage": "chunk", "match": "slow-*", "sleep_s": 1.0, "sleep_attempts": 1_000},
]
BAD_DEPLOY: dict[str, Any] = {"stage": "embed", "match": "doomed-*", "permanent": True}
"""Only the first worker group has this fault, until the chaos ends (a bad deploy, rolled
back): documents it fails are dead-lettered, and replaying them later succeeds."""


@dataclass(frozen=True)
class Plan:
    """What to break, how often, and for how long."""

    documents: int = 300
    kills: int = 20
    flushes: int = 3
    terminations: int = 5
    reruns: int = 30
    pauses: int = 8
    duration_s: float = 90.0
    """Length of the chaos; uploads take its first 60 %."""
    settle_timeout_s: float = 300.0
    groups: int = 3
    threads: int = 2
    seed: int = 0
    flaky_share: float = 0.25
    slow_share: float = 0.2
    doomed_share: float = 0.15
    definition: str = DEFAULT_DEFINITION
    """The pipeline definition every process runs (``PIPELINE_DEFINITION``)."""


def torture_env(
    database_url: str,
    redis_url: str,
    namespace: str,
    *,
    time_limit_s: float = 6.0,
    definition: str = DEFAULT_DEFINITION,
) -> dict[str, str]:
    """The environment of every process of the run: short recovery settings, faults on."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PIPELINE_REDIS_NAMESPACE": namespace,
        "PIPELINE_QUEUED_GRACE_S": "3",
        "PIPELINE_RUNNING_SLACK_S": "1",
        "PIPELINE_RECONCILER_INTERVAL_S": "0.5",
        "PIPELINE_DB_POOL_SIZE": "4",
        "PIPELINE_CHUNK_TARGET_TOKENS": "60",
        "PIPELINE_CHUNK_OVERLAP_TOKENS": "12",
        "PIPELINE_INGEST_RATE_PER_S": "0",
        "PIPELINE_FAULTS": json.dumps(FAULTS),
        "PIPELINE_FAULT_INJECTION": "enabled-for-testing",
        "PIPELINE_DEFINITION": definition,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    for stage in load_definition(definition).names:
        prefix = f"PIPELINE_{stage.upper()}_"
        env[prefix + "MIN_BACKOFF_S"] = "0.5"
        env[prefix + "MAX_BACKOFF_S"] = "2"
        env[prefix + "MAX_RETRIES"] = "12"
        env[prefix + "TIME_LIMIT_S"] = str(time_limit_s)
    return env


def namespace_flusher(redis_url: str, namespace: str) -> Callable[[], int]:
    """Deletes every key of ``namespace`` (and nothing else); returns how many."""

    def flush() -> int:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(f"{namespace}:*", count=1000))
            return int(client.delete(*keys)) if keys else 0
        finally:
            client.close()

    return flush


def flushdb_flusher(redis_url: str) -> Callable[[], int]:
    """``FLUSHDB`` of the database in ``redis_url`` (one dedicated to the run)."""

    def flush() -> int:
        client = redis.Redis.from_url(redis_url)
        try:
            size = int(client.dbsize())
            client.flushdb()
            return size
        finally:
            client.close()

    return flush


# -- documents -----------------------------------------------------------------------------


@dataclass
class Doc:
    filename: str
    body: bytes
    content_type: str
    expected: list[str]
    id: str | None = None


def make_body(rng: random.Random, index: int, markdown: bool) -> str:
    paragraphs = []
    for p in range(rng.randint(1, 9)):
        sentences = []
        for _ in range(rng.randint(1, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 16))]
            sentences.append(" ".join(words).capitalize() + rng.choice(".!?"))
        paragraph = " ".join(sentences)
        if markdown and p % 3 == 0:
            paragraph = f"## Part {p}\n\n{paragraph}"
        paragraphs.append(paragraph)
    return f"Document {index}. " + "\n\n".join(paragraphs) + "\n"


def expected_chunks(data: bytes, settings: Settings) -> list[str]:
    """The chunk texts a calm run stores for ``data``: the stages' pure functions."""
    checked = validate(data, ValidationPolicy(max_bytes=settings.limits.max_upload_bytes))
    extracted = extract(data, checked.kind, checked.encoding, extract_limits(settings))
    policy = ChunkPolicy(
        target_tokens=settings.stages.chunk_target_tokens,
        overlap_tokens=settings.stages.chunk_overlap_tokens,
    )
    return [piece.text for piece in chunk(extracted.text, policy)]


def make_documents(plan: Plan, settings: Settings, rng: random.Random) -> list[Doc]:
    docs = []
    for i in range(plan.documents):
        roll = rng.random()
        if roll < plan.flaky_share / 2:
            prefix = "flaky-extract"
        elif roll < plan.flaky_share:
            prefix = "flaky-embed"
        elif roll < plan.flaky_share + plan.slow_share:
            prefix = "slow"
        elif roll < plan.flaky_share + plan.slow_share + plan.doomed_share:
            prefix = "doomed"
        else:
            prefix = "doc"
        markdown = rng.random() < 0.3
        body = make_body(rng, i, markdown).encode()
        suffix, kind = (".md", "text/markdown") if markdown else (".txt", "text/plain")
        docs.append(
            Doc(f"{prefix}-{i}{suffix}", body, kind, expected_chunks(body, settings)),
        )
    return docs


# -- processes -----------------------------------------------------------------------------


class Group:
    """One process group (``pipeline worker`` or ``pipeline reconciler``), restartable."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = logs / f"{name}.log"
        self.offset = 0

    def ready(self) -> bool:
        """Running, and its Dramatiq worker process said it is ready (since this start)."""
        if self.process is None or not self.log_path.exists():
            return False
        with self.log_path.open("rb") as log:
            log.seek(self.offset)
            return b"ready for action" in log.read()

    def start(self) -> None:
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*PIPELINE, *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: signals reach dramatiq's children
            )

    @property
    def running(self) -> bool:
        return self.process is not None

    def signal(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        if self.process is None:
            return
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the main process only (as ``docker stop`` does), then SIGKILL."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        self.kill()  # sweeps children that outlive their parent too

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# -- the report ----------------------------------------------------------------------------


@dataclass
class Report:
    documents: int = 0
    uploaded: int = 0
    upload_errors: int = 0
    kills: int = 0
    flushes: int = 0
    flushed_keys: int = 0
    terminations: int = 0
    pauses: int = 0
    backends_terminated: int = 0
    reruns: int = 0
    reruns_skipped: int = 0
    reruns_failed: int = 0
    replays: int = 0
    replays_skipped: int = 0
    replays_failed: int = 0
    operator_errors: int = 0
    """Rerun or replay calls that raised instead of reporting their item."""
    driver_errors: int = 0
    retrying_rows_max: int = 0
    retrying_events: int = 0
    lost: int = 0
    wrong: int = 0
    duplicate_chunks: int = 0
    stray_dead_letters: int = 0
    applied_twice: int = 0
    bad_stage_rows: int = 0
    settled: bool = False
    chaos_s: float = 0.0
    settle_s: float = 0.0
    seed: int = 0
    logs: str = ""
    examples: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.settled
            and self.uploaded == self.documents
            and not (
                self.lost
                or self.operator_errors
                or self.wrong
                or self.duplicate_chunks
                or self.stray_dead_letters
                or self.applied_twice
                or self.bad_stage_rows
            )
        )

    def example(self, kind: str, item: Any, keep: int = 5) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < keep:
            found.append(item)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def table(self) -> str:
        rows = [
            ("documents (uploaded)", f"{self.documents} ({self.uploaded})"),
            ("worker groups SIGKILLed", self.kills),
            ("stage pauses (each resumed)", self.pauses),
            ("Redis flushes (keys)", f"{self.flushes} ({self.flushed_keys})"),
            (
                "Postgres terminations (backends)",
                f"{self.terminations} ({self.backends_terminated})",
            ),
            (
                "reruns (skipped, failed)",
                f"{self.reruns} ({self.reruns_skipped}, {self.reruns_failed})",
            ),
            (
                "replays (skipped, failed)",
                f"{self.replays} ({self.replays_skipped}, {self.replays_failed})",
            ),
            ("rerun/replay calls that raised", self.operator_errors),
            ("other driver errors", self.driver_errors),
            (
                "retrying rows (max seen; events)",
                f"{self.retrying_rows_max}; {self.retrying_events}",
            ),
            ("lost (not succeeded)", self.lost),
            ("wrong (chunks differ)", self.wrong),
            ("duplicate chunks", self.duplicate_chunks),
            ("stray dead letters", self.stray_dead_letters),
            ("stage applied twice in a generation", self.applied_twice),
            ("stage rows not succeeded at their document's generation", self.bad_stage_rows),
            ("chaos s", f"{self.chaos_s:.1f}"),
            (
                "settle s (chaos stop to all done)",
                f"{self.settle_s:.1f}" + ("" if self.settled else " (did NOT settle)"),
            ),
            ("seed", self.seed),
            ("verdict", "OK" if self.ok else "FAILED"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = ["| what | count |", "|---|---|"]
        lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
        for kind, items in self.examples.items():
            lines.append(f"\n{kind} (first {len(items)}):")
            lines += [f"  {item}" for item in items]
        lines.append(f"\nlogs: {self.logs}")
        return "\n".join(lines)


# -- the driver ----------------------------------------------------------------------------


class Torture:
    """Runs one torture run against a migrated database (``env``'s ``DATABASE_URL``)."""

    def __init__(
        self,
        plan: Plan,
        env: dict[str, str],
        api_key: str,
        logs: Path,
        flush: Callable[[], int],
        *,
        out: TextIO | None = None,
    ) -> None:
        self.plan = plan
        self.env = env
        self.api_key = api_key
        self.logs = logs
        self.flush = flush
        self.out = out or sys.stderr
        self.rng = random.Random(plan.seed)
        self.settings = Settings.from_env(env)
        self.definition = load_definition(self.settings.stages.definition)
        self.stages = self.definition.names
        self.report = Report(documents=plan.documents, seed=plan.seed, logs=str(logs))
        self.started = self.stopped = 0.0
        self.sequence = itertools.count()
        self.workers = [
            Group(
                f"worker-{g}",
                [
                    "worker",
                    "--processes",
                    "1",
                    "--threads",
                    str(plan.threads),
                    "--metrics-port",
                    "0",
                    "--shutdown-timeout",
                    "2",
                ],
                env,
                logs,
            )
            for g in range(plan.groups)
        ]
        self.reconciler = Group("reconciler", ["reconciler"], env, logs)
        self.workers[0].env = {**env, "PIPELINE_FAULTS": json.dumps([*FAULTS, BAD_DEPLOY])}

    def log(self, what: str) -> None:
        at = time.monotonic() - self.started if self.started else 0.0
        print(f"[torture {at:7.1f}s] {what}", file=self.out, flush=True)

    # -- the run -------------------------------------------------------------------------

    def run(self) -> Report:
        self.logs.mkdir(parents=True, exist_ok=True)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upload otherwise
        docs = make_documents(self.plan, self.settings, self.rng)
        engine = make_engine(self.settings, application_name="torture")
        dispatcher = Dispatcher(make_broker(self.settings))
        self.rerun_service = RerunService(engine, dispatcher, self.settings, self.definition)
        self.replay_service = ReplayService(engine, dispatcher, self.settings, self.definition)
        self.controls = StageControls(engine, self.definition, "default")
        self.engine = engine
        client = TestClient(create_app(self.settings))
        client.__enter__()
        client.headers.update({"Authorization": f"Bearer {self.api_key}"})
        try:
            for group in [*self.workers, self.reconciler]:
                group.start()
            self.wait_ready()
            self.started = time.monotonic()
            self.chaos(client, docs)
            self.report.chaos_s = self.stopped - self.started
            self.settle(docs)
            self.check(docs)
        finally:
            with contextlib.suppress(Exception):  # whatever happened, nothing stays paused
                for stage in self.definition.names:
                    self.controls.resume(stage, RUN)
            for group in [*self.workers, self.reconciler]:
                try:
                    group.stop()
                except Exception as error:  # keep stopping the others
                    self.log(f"could not stop {group.name}: {error!r}")
            client.__exit__(None, None, None)
            engine.dispose()
        return self.report

    def wait_ready(self, timeout: float = 90.0) -> None:
        """The chaos starts once every worker group is up (booting takes seconds)."""
        deadline = time.monotonic() + timeout
        while not all(group.ready() for group in self.workers):
            if time.monotonic() > deadline:
                tails = "\n".join(group.tail(10) for group in self.workers)
                raise RuntimeError(f"worker groups not ready after {timeout:.0f} s:\n{tails}")
            time.sleep(0.2)
        self.log("every worker group is ready")

    def schedule(self) -> list[tuple[float, int, str, Any]]:
        plan, rng = self.plan, self.rng
        span = plan.duration_s
        events: list[tuple[float, int, str, Any]] = []
        # Uploads come in bursts over the first 60 % of the chaos, so that work queues up
        # and kills, flushes and terminations find stages in flight.
        bursts = max(1, min(plan.documents, round(plan.documents / 10)))
        starts = sorted(rng.uniform(0, 0.6 * span) for _ in range(bursts))
        for i in range(plan.documents):
            at = starts[i * bursts // plan.documents] + 0.02 * (i % 10)
            events.append((at, next(self.sequence), "upload", i))
        for kind, count, low, high in (
            ("kill", plan.kills, 0.05, 0.95),
            ("flush", plan.flushes, 0.1, 0.9),
            ("terminate", plan.terminations, 0.05, 0.95),
            ("rerun", plan.reruns, 0.1, 1.0),
            ("pause", plan.pauses, 0.05, 0.9),
        ):
            for _ in range(count):
                events.append((span * rng.uniform(low, high), next(self.sequence), kind, None))
        for tick in range(int(span * 2)):
            events.append((tick / 2, next(self.sequence), "sample", None))
            if tick and tick % 6 == 0:
                events.append((tick / 2, next(self.sequence), "replay", None))
        events.append((span, next(self.sequence), "end", None))
        heapq.heapify(events)
        return events

    def chaos(self, client: TestClient[Any], docs: list[Doc]) -> None:
        events = self.schedule()
        while events:
            at, _, kind, arg = heapq.heappop(events)
            wait = self.started + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # a timetable, not synchronisation
            if kind == "end":
                behind = (
                    self.report.kills < self.plan.kills
                    or self.report.terminations < self.plan.terminations
                )
                if behind and at < 1.5 * self.plan.duration_s + 10:
                    # kills and terminations deferred while every group was booting
                    heapq.heappush(events, (at + 0.5, next(self.sequence), "end", None))
                    continue
                break
            try:
                self.act(kind, arg, client, docs, events)
            except Exception as error:
                # Operator actions report per item; one that raises breaks that contract.
                if kind in ("rerun", "replay"):
                    self.report.operator_errors += 1
                else:
                    self.report.driver_errors += 1
                self.report.example(f"{kind} raised", repr(error)[:300])
                self.log(f"{kind} raised {error!r}")
        self.stopped = time.monotonic()
        for stage in self.definition.names:  # a resume still queued behind the end
            self.controls.resume(stage, RUN)
        self.log("chaos over; every stage resumed; rolling back worker-0's bad deploy")
        bad = self.workers[0]
        bad.stop(timeout=10)
        bad.env = self.env
        for group in self.workers:  # the settle runs with every group up
            if not group.running:
                group.start()

    def act(
        self,
        kind: str,
        arg: Any,
        client: TestClient[Any],
        docs: list[Doc],
        events: list[tuple[float, int, str, Any]],
    ) -> None:
        report = self.report
        if kind == "upload":
            self.upload(client, docs[arg])
        elif kind == "kill":
            # A group that is still booting has no stage in flight: kill a ready one, or
            # try again in a moment.
            alive = [group for group in self.workers if group.ready()]
            if not alive:
                later = time.monotonic() - self.started + 0.5
                heapq.heappush(events, (later, next(self.sequence), "kill", None))
                return
            group = self.rng.choice(alive)
            group.kill()
            report.kills += 1
            restart_at = time.monotonic() - self.started + self.rng.uniform(0.3, 3.0)
            heapq.heappush(events, (restart_at, next(self.sequence), "restart", group))
            self.log(f"SIGKILL {group.name}")
        elif kind == "restart":
            if not arg.running:
                arg.start()
        elif kind == "flush":
            report.flushed_keys += self.flush()
            report.flushes += 1
            self.log("flushed Redis")
        elif kind == "terminate":
            with self.engine.connect() as conn:
                count = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'pipeline-worker:%' "
                        "AND datname = current_database()"
                    )
                ).scalar_one()
            if not count:  # every group booting or idle: no connection to drop yet
                later = time.monotonic() - self.started + 0.5
                heapq.heappush(events, (later, next(self.sequence), "terminate", None))
                return
            report.terminations += 1
            report.backends_terminated += int(count)
            self.log(f"terminated {count} worker backend(s)")
        elif kind == "rerun":
            if not self.rerun(docs):  # nothing uploaded yet
                later = time.monotonic() - self.started + 1.0
                heapq.heappush(events, (later, next(self.sequence), "rerun", None))
        elif kind == "replay":
            self.replay_dead(docs)
        elif kind == "pause":
            stage = self.rng.choice(self.definition.names)
            self.controls.pause(stage, RUN, "torture")
            report.pauses += 1
            resume_at = time.monotonic() - self.started + self.rng.uniform(0.3, 3.0)
            heapq.heappush(events, (resume_at, next(self.sequence), "resume", stage))
            self.log(f"paused {stage}")
        elif kind == "resume":
            self.controls.resume(arg, RUN)
            self.log(f"resumed {arg}")
        elif kind == "sample":
            self.sample(docs)

    def sample(self, docs: list[Doc]) -> None:
        """How many of the run's stage rows are ``retrying`` right now (the max is kept)."""
        ids = [uuid.UUID(d.id) for d in docs if d.id]
        if ids:
            with self.engine.connect() as conn:
                retrying = conn.execute(
                    text(
                        "SELECT count(*) FROM stage_runs WHERE status = 'retrying' "
                        "AND document_id = ANY(:ids)"
                    ),
                    {"ids": ids},
                ).scalar_one()
            self.report.retrying_rows_max = max(self.report.retrying_rows_max, int(retrying))

    def upload(self, client: TestClient[Any], doc: Doc) -> None:
        for _ in range(5):
            response = client.post(
                "/documents", files={"file": (doc.filename, doc.body, doc.content_type)}
            )
            if response.status_code == 202:
                doc.id = str(response.json()["id"])
                self.report.uploaded += 1
                return
            self.report.upload_errors += 1
            self.report.example("upload errors", f"{response.status_code} {response.text[:200]}")
            time.sleep(0.2)

    def rerun(self, docs: list[Doc]) -> bool:
        """Rerun one random document from a random stage it can be re-run from (False:
        no document uploaded yet)."""
        uploaded = [d for d in docs if d.id]
        if not uploaded:
            return False
        statuses_now = self.statuses(uploaded)
        in_flight = [
            d for d in uploaded if statuses_now.get(str(d.id)) in ("pending", "processing")
        ]
        for _ in range(5):  # a document whose earlier stages have not succeeded: another
            # Half the reruns hit a document in flight, racing its running stages.
            pool = in_flight if in_flight and self.rng.random() < 0.5 else uploaded
            doc = self.rng.choice(pool)
            with self.engine.connect() as conn:
                statuses = list(
                    conn.execute(
                        text(
                            "SELECT status FROM stage_runs WHERE document_id = :id "
                            "ORDER BY position"
                        ),
                        {"id": doc.id},
                    ).scalars()
                )
            eligible = 0  # from any stage whose earlier stages all succeeded
            for status in statuses:
                if status != "succeeded" or eligible == len(self.stages) - 1:
                    break
                eligible += 1
            stage = self.stages[self.rng.randint(0, eligible)]
            result = self.rerun_service.rerun(
                RerunRequest(from_stage=stage, ids=[uuid.UUID(doc.id)], reason="torture"), RUN
            )
            actions = [item.action for item in result.items]
            if "rerun" in actions:
                self.report.reruns += 1
                self.log(f"rerun {doc.filename} from {stage} ({'/'.join(statuses)})")
                return True
            if "failed" in actions:
                self.report.reruns_failed += 1
            else:
                self.report.reruns_skipped += 1
        return True

    def dead_letters(self, docs: list[Doc]) -> list[uuid.UUID]:
        ids = [uuid.UUID(d.id) for d in docs if d.id]
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT id FROM dead_letters WHERE status = 'dead' "
                        "AND document_id = ANY(:ids) ORDER BY failed_at"
                    ),
                    {"ids": ids},
                ).scalars()
            )

    def replay_dead(self, docs: list[Doc]) -> int:
        """Replay the run's ``dead`` letters; returns how many were replayed."""
        letters = self.dead_letters(docs)
        if not letters:
            return 0
        result = self.replay_service.replay(ReplayRequest(ids=letters, reason="torture"), RUN)
        replayed = 0
        for item in result.items:
            action = str(item.action)  # the fixed engine adds "failed"
            if action == "replayed":
                replayed += 1
            elif action == "failed":
                self.report.replays_failed += 1
            else:
                self.report.replays_skipped += 1
        self.report.replays += replayed
        if replayed:
            self.log(f"replayed {replayed} dead letter(s)")
        return replayed

    # -- the end ---------------------------------------------------------------------------

    def statuses(self, docs: list[Doc]) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, status FROM documents WHERE id = ANY(:ids)"),
                {"ids": [uuid.UUID(d.id) for d in docs if d.id]},
            ).all()
        return {str(row.id): row.status for row in rows}

    def settle(self, docs: list[Doc]) -> None:
        """Replay what is dead and wait until every document is terminal (bounded)."""
        stop = self.stopped  # the settle time counts from the end of the chaos
        deadline = time.monotonic() + self.plan.settle_timeout_s
        last_replay = 0.0
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            statuses = self.statuses(docs)
            self.sample(docs)
            if all(status == "succeeded" for status in statuses.values()):
                self.report.settled = True
                break
            now = time.monotonic()
            replayed = 0
            if now - last_replay > 2.0:
                try:
                    replayed = self.replay_dead(docs)
                except Exception as error:
                    self.report.operator_errors += 1
                    self.report.example("replay raised", repr(error)[:300])
                last_replay = now
            terminal = all(s in ("succeeded", "failed") for s in statuses.values())
            if terminal and not replayed:
                # Failed documents with nothing left to replay: wait a little for a
                # replay's effect, then give up on them (they are lost).
                quiet_since = quiet_since or now
                if now - quiet_since > 10.0:
                    self.report.settled = True
                    break
            else:
                quiet_since = None
            time.sleep(0.5)
        self.report.settle_s = time.monotonic() - stop
        if not self.report.settled:
            self.log(f"did not settle within {self.plan.settle_timeout_s:.0f} s")
            for group in [*self.workers, self.reconciler]:
                self.report.example(
                    "log tails", f"{group.name}:\n{group.tail(15)}", keep=len(self.workers) + 1
                )
        else:
            self.log(f"settled after {self.report.settle_s:.1f} s")

    def check(self, docs: list[Doc]) -> None:
        report = self.report
        ids = [uuid.UUID(d.id) for d in docs if d.id]
        with self.engine.connect() as conn:
            documents = {
                str(row.id): row
                for row in conn.execute(
                    text("SELECT id, status, generation FROM documents WHERE id = ANY(:ids)"),
                    {"ids": ids},
                )
            }
            stage_rows: dict[str, list[Any]] = {}
            for row in conn.execute(
                text(
                    "SELECT document_id, stage, position, status, generation, attempts "
                    "FROM stage_runs WHERE document_id = ANY(:ids) ORDER BY position"
                ),
                {"ids": ids},
            ):
                stage_rows.setdefault(str(row.document_id), []).append(row)
            chunks: dict[str, list[Any]] = {}
            for row in conn.execute(
                text(
                    "SELECT document_id, ordinal, text FROM chunks WHERE document_id = ANY(:ids) "
                    "ORDER BY ordinal, id"
                ),
                {"ids": ids},
            ):
                chunks.setdefault(str(row.document_id), []).append(row)
            reruns: dict[str, list[tuple[int, int]]] = {}
            for row in conn.execute(
                text(
                    "SELECT document_id, stage, generation FROM stage_events "
                    "WHERE event = 'rerun' AND document_id = ANY(:ids)"
                ),
                {"ids": ids},
            ):
                position = self.stages.index(row.stage)
                reruns.setdefault(str(row.document_id), []).append((position, row.generation))
            twice = conn.execute(
                text(
                    "SELECT document_id, stage, generation, count(*) AS n FROM stage_events "
                    "WHERE event = 'succeeded' AND document_id = ANY(:ids) "
                    "GROUP BY document_id, stage, generation HAVING count(*) > 1"
                ),
                {"ids": ids},
            ).all()
            stray = conn.execute(
                text(
                    "SELECT l.document_id, l.stage, l.generation, l.error_type, l.error_message "
                    "FROM dead_letters l JOIN documents d ON d.id = l.document_id "
                    "WHERE l.status = 'dead' AND d.status = 'succeeded' "
                    "AND l.document_id = ANY(:ids)"
                ),
                {"ids": ids},
            ).all()
            report.retrying_events = conn.execute(
                text(
                    "SELECT count(*) FROM stage_events WHERE event = 'retrying' "
                    "AND document_id = ANY(:ids)"
                ),
                {"ids": ids},
            ).scalar_one()

        for doc in docs:
            if doc.id is None:
                continue
            document = documents[doc.id]
            rows = stage_rows.get(doc.id, [])
            if document.status != "succeeded":
                report.lost += 1
                report.example(
                    "lost",
                    f"{doc.filename} {doc.id} {document.status}: "
                    + ", ".join(
                        f"{r.stage}={r.status}/g{r.generation}/a{r.attempts}" for r in rows
                    ),
                )
                continue
            got = chunks.get(doc.id, [])
            ordinals = [row.ordinal for row in got]
            if len(set(ordinals)) != len(ordinals):
                report.duplicate_chunks += len(ordinals) - len(set(ordinals))
            if ordinals != list(range(len(doc.expected))) or [r.text for r in got] != doc.expected:
                report.wrong += 1
                report.example(
                    "wrong",
                    f"{doc.filename} {doc.id}: expected {len(doc.expected)} chunks, "
                    f"got ordinals {ordinals[:12]}",
                )
            # Each rerun moves the document and every one of its rows to a new generation.
            expected = max((generation for _, generation in reruns.get(doc.id, [])), default=1)
            bad = [
                f"{r.stage}={r.status}/g{r.generation} (want g{expected})"
                for r in rows
                if r.status != "succeeded" or r.generation != expected
            ]
            if len(rows) != len(self.stages) or document.generation != expected:
                bad.append(f"document g{document.generation}, {len(rows)} stage rows")
            if bad:
                report.bad_stage_rows += 1
                report.example("bad stage rows", f"{doc.filename} {doc.id}: {', '.join(bad)}")
        report.applied_twice = len(twice)
        for row in twice:
            report.example(
                "applied twice", f"{row.document_id} {row.stage} g{row.generation} x{row.n}"
            )
        report.stray_dead_letters = len(stray)
        for row in stray:
            report.example(
                "stray dead letters",
                f"{row.document_id} {row.stage} g{row.generation} {row.error_type}: "
                f"{row.error_message[:120]}",
            )


# -- the benchmark -------------------------------------------------------------------------


def _with_db(redis_url: str, db: int) -> str:
    base = redis_url.split("?", 1)[0].rstrip("/")
    scheme, _, rest = base.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/{db}"


@contextlib.contextmanager
def _bench_database() -> Iterator[str]:
    from common import scratch_database  # bench/common.py, beside this file

    with scratch_database("torture") as database_url:
        yield database_url


def main() -> None:
    if str(ROOT) not in sys.path:  # a definition may live in the repository's tests.support
        sys.path.append(str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Plan()
    parser.add_argument("--documents", type=int, default=defaults.documents)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--flushes", type=int, default=defaults.flushes)
    parser.add_argument("--terminations", type=int, default=defaults.terminations)
    parser.add_argument("--reruns", type=int, default=defaults.reruns)
    parser.add_argument("--pauses", type=int, default=defaults.pauses)
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="chaos, s")
    parser.add_argument("--settle-timeout", type=float, default=defaults.settle_timeout_s)
    parser.add_argument("--groups", type=int, default=defaults.groups)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--redis-db",
        type=int,
        default=None,
        help="a Redis database dedicated to the run (must be empty): flushes are FLUSHDB",
    )
    parser.add_argument(
        "--definition",
        default=DEFAULT_DEFINITION,
        help="the pipeline definition to torture (e.g. tests.support.acme.ingest:PIPELINE)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.randrange(1 << 32)
    plan = Plan(
        documents=options.documents,
        kills=options.kills,
        flushes=options.flushes,
        terminations=options.terminations,
        reruns=options.reruns,
        pauses=options.pauses,
        duration_s=options.duration,
        settle_timeout_s=options.settle_timeout,
        groups=options.groups,
        threads=options.threads,
        seed=seed,
        definition=options.definition,
    )
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    namespace = f"bench-torture-{uuid.uuid4().hex[:8]}"
    if options.redis_db is not None:
        redis_url = _with_db(redis_url, options.redis_db)
        if redis.Redis.from_url(redis_url).dbsize():
            parser.error(f"Redis database {options.redis_db} is not empty: not flushing it")
        flush = flushdb_flusher(redis_url)
    else:
        flush = namespace_flusher(redis_url, namespace)
    logs = Path(f"/tmp/bench-torture-{seed}-{uuid.uuid4().hex[:4]}")
    with _bench_database() as database_url:
        env = torture_env(database_url, redis_url, namespace, definition=plan.definition)
        api_key = os.environ["PIPELINE_API_KEY"]  # scratch_database's key, every scope
        try:
            report = Torture(plan, env, api_key, logs, flush).run()
        finally:
            namespace_flusher(redis_url, namespace)()
    if options.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(report.table())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
