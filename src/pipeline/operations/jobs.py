"""Background operation jobs: bulk replays, discards and reruns accepted over HTTP.

The API records the request in ``operation_jobs`` and answers ``202`` at once; a
worker consuming the ``operations`` queue carries it out with the same services the
CLI uses, updating the job's counters as it goes, so a client can poll its progress.

A running job proves it is alive: every item, and every ``STALE_JOB / 3`` while a
paced job waits, moves its heartbeat. Each of those writes is conditional on the job
still running, so a job the stale sweep (or anyone) marked failed stops before its
next item and stays failed. A job's row is only ever written in transactions of its
own: last in the lock order of ``engine.transitions``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

import dramatiq
import msgspec
from sqlalchemy import Connection, Engine, func, insert, select, update

from pipeline.db.models import OperationJob
from pipeline.engine.dispatch import Dispatcher
from pipeline.errors import PipelineError
from pipeline.operations.common import ItemOutcome, OperationReport, Operator, RunContext
from pipeline.operations.queue import OPERATIONS_QUEUE
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import (
    DiscardRequest,
    OperationRequest,
    ReplayRequest,
    RerunRequest,
)
from pipeline.operations.rerun import RerunService
from pipeline.statuses import JobKind, JobStatus

logger = logging.getLogger(__name__)

JOB_ACTOR = "run_operation_job"
REQUEST_TYPES: dict[JobKind, type[OperationRequest]] = {
    "replay": ReplayRequest,
    "discard": DiscardRequest,
    "rerun": RerunRequest,
}


_VIA: dict[str, Literal["api", "console"]] = {"api": "api", "console": "console"}
"""How a job's ``requested_by`` names the entry point that recorded it (else the CLI)."""


class JobView(msgspec.Struct, frozen=True):
    """A job as its tenant sees it."""

    id: uuid.UUID
    kind: JobKind
    status: JobStatus
    requested_by: str
    total: int | None
    done: int
    skipped: int
    failed: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    request: dict[str, Any]


def create_job(
    conn: Connection,
    kind: JobKind,
    request: OperationRequest,
    operator: Operator,
    tenant: str,
) -> uuid.UUID:
    """Record a job for ``tenant``: it will act on that tenant's items only."""
    job_id = uuid.uuid4()
    conn.execute(
        insert(OperationJob).values(
            id=job_id,
            tenant=tenant,
            kind=kind,
            request=msgspec.to_builtins(request),
            requested_by=f"{operator.via}:{operator.name}",
        )
    )
    return job_id


def job_message(job_id: uuid.UUID) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=OPERATIONS_QUEUE,
        actor_name=JOB_ACTOR,
        args=(str(job_id),),
        kwargs={},
        options={},
    )


def get_job(conn: Connection, job_id: uuid.UUID, tenant: str | None = None) -> JobView | None:
    """The job; another tenant's job is, to this tenant, no job at all."""
    conditions = [OperationJob.id == job_id]
    if tenant is not None:
        conditions.append(OperationJob.tenant == tenant)
    row = conn.execute(
        select(
            OperationJob.id,
            OperationJob.kind,
            OperationJob.status,
            OperationJob.requested_by,
            OperationJob.total,
            OperationJob.done,
            OperationJob.skipped,
            OperationJob.failed,
            OperationJob.error,
            OperationJob.created_at,
            OperationJob.started_at,
            OperationJob.finished_at,
            OperationJob.request,
        ).where(*conditions)
    ).one_or_none()
    return JobView(**row._asdict()) if row else None


class JobRunner:
    """Carries out one queued job; a job that already ran is not run again."""

    def __init__(self, engine: Engine, replay: ReplayService, rerun: RerunService) -> None:
        self.engine = engine
        self.replay = replay
        self.rerun = rerun

    def run(self, job_id: uuid.UUID) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(
                update(OperationJob)
                .where(OperationJob.id == job_id, OperationJob.status == "queued")
                .values(status="running", started_at=func.now(), heartbeat_at=func.now())
                .returning(
                    OperationJob.kind,
                    OperationJob.request,
                    OperationJob.requested_by,
                    OperationJob.tenant,
                )
            ).one_or_none()
        if row is None:
            logger.info("operation job %s is not queued; nothing to do", job_id)
            return
        via, _, name = row.requested_by.partition(":")
        operator = Operator(name=name, via=_VIA.get(via, "cli"))
        try:
            # Checked again with today's bounds: a job recorded before a bound was
            # tightened (or written by hand) fails here, before any item, with what
            # is wrong with it — not in the pacer after the first item.
            request = msgspec.convert(row.request, REQUEST_TYPES[row.kind])
        except msgspec.ValidationError as error:
            logger.warning("operation job %s has an invalid request: %s", job_id, error)
            self._finish(job_id, "failed", error=f"the job's request is not valid: {error}")
            return
        watch = _JobWatch(self.engine, job_id)
        # A job acts for the tenant whose key made it, and no other.
        run = RunContext(
            operator=operator,
            tenant=row.tenant,
            progress=watch.handled,
            on_selected=watch.selected,
            heartbeat=watch,
        )
        try:
            result = self._carry_out(request, run)
        except JobStopped:
            logger.warning("operation job %s was marked failed while it ran; stopped", job_id)
            return
        except PipelineError as error:
            # A deliberate refusal: its reason is a sentence written for the operator.
            logger.warning("operation job %s refused: %s", job_id, error.reason)
            self._finish(job_id, "failed", error=error.reason)
            return
        except Exception:
            # Items are each done or untouched, and the counters say how far it got; the
            # traceback is for the logs, not for the operator's screen.
            logger.exception("operation job %s failed", job_id)
            self._finish(
                job_id,
                "failed",
                error="the job stopped on an internal error (logged by the worker); "
                "see done/skipped/failed and submit the rest again",
            )
            return
        self._finish(job_id, "succeeded", total=result.matched)

    def _carry_out(self, request: OperationRequest, run: RunContext) -> OperationReport:
        match request:
            case ReplayRequest():
                return self.replay.replay(request, run)
            case DiscardRequest():
                return self.replay.discard(request, run)
            case RerunRequest():
                return self.rerun.rerun(request, run)

    def _finish(
        self,
        job_id: uuid.UUID,
        status: JobStatus,
        *,
        total: int | None = None,
        error: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            values: dict[str, Any] = {"status": status, "finished_at": func.now(), "error": error}
            if total is not None:
                values["total"] = total
            conn.execute(
                update(OperationJob)
                .where(OperationJob.id == job_id, OperationJob.status == "running")
                .values(**values)
            )


class _JobWatch:
    """A running job's observer: counts each item on the job's row, records the total,
    and beats while a paced job waits (a :class:`~pipeline.operations.common.Heartbeat`)."""

    def __init__(self, engine: Engine, job_id: uuid.UUID) -> None:
        self.engine = engine
        self.job_id = job_id
        self.interval_s = STALE_JOB.total_seconds() / 3

    def __call__(self) -> None:
        self._touch()

    def selected(self, total: int) -> None:
        self._touch(total=total)

    def handled(self, item: ItemOutcome) -> None:
        skipped = int(item.action == "skipped")
        failed = int(item.action == "failed")
        self._touch(
            done=OperationJob.done + 1 - skipped - failed,
            skipped=OperationJob.skipped + skipped,
            failed=OperationJob.failed + failed,
        )

    def _touch(self, **values: Any) -> None:
        """Move the heartbeat (and counters) of a job that is still running, else stop it."""
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(OperationJob)
                .where(OperationJob.id == self.job_id, OperationJob.status == "running")
                .values(heartbeat_at=func.now(), **values)
            ).rowcount
        if moved != 1:
            raise JobStopped(self.job_id)


class JobStopped(PipelineError):
    """The job is no longer ``running`` (marked failed while it ran): stop at once."""

    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"operation job {job_id} is no longer running")


STALE_JOB = timedelta(minutes=10)
"""A running job with no progress for this long lost its worker."""


def sweep_jobs(conn: Connection, grace: timedelta) -> tuple[list[uuid.UUID], int]:
    """Find queued jobs whose message may be lost, and fail running jobs that stopped.

    Returns the ids of queued jobs to send again (marked dispatched now) and how many
    stalled jobs were failed. A stalled job is not restarted: a rerun done twice would
    bump generations twice, so the operator resubmits what is left, with its counters
    to go by.
    """
    resend = list(
        conn.execute(
            update(OperationJob)
            .where(OperationJob.status == "queued", OperationJob.dispatched_at < func.now() - grace)
            .values(dispatched_at=func.now())
            .returning(OperationJob.id)
        ).scalars()
    )
    stalled = conn.execute(
        update(OperationJob)
        .where(
            OperationJob.status == "running",
            func.coalesce(OperationJob.heartbeat_at, OperationJob.started_at)
            < func.now() - STALE_JOB,
        )
        .values(
            status="failed",
            finished_at=func.now(),
            error=f"the worker running this job stopped (no progress for "
            f"{STALE_JOB.total_seconds():g} s); see done/skipped/failed and submit the rest again",
        )
    ).rowcount
    return resend, stalled


class JobSweep:
    """The reconciler's sweep of jobs: re-send those whose message was lost, fail those
    that stalled."""

    def __init__(self, engine: Engine, dispatcher: Dispatcher, grace: timedelta) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.grace = grace

    def __call__(self) -> dict[str, int]:
        with self.engine.begin() as conn:
            resend, stalled = sweep_jobs(conn, self.grace)
        for job_id in resend:
            self.dispatcher.send_after_commit(job_message(job_id))
        return {"jobs_resent": len(resend), "jobs_failed": stalled}
