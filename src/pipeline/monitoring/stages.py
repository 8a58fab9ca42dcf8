"""What an operator scales on: per-stage queue depth, work in flight, outcomes, latency.

Queue depths come from Redis (Dramatiq's lists and sets); everything else from the
stage rows in Postgres, through indexed queries that touch only unfinished rows and
rows finished inside the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
from sqlalchemy import Connection, func, select

from pipeline.db.models import Document, StageControl, StageRun
from pipeline.statuses import DOCUMENT_STATUSES, UNFINISHED_STAGE_STATUSES, DocumentStatus

WINDOW: Final = timedelta(minutes=5)


class QueueDepth(msgspec.Struct, frozen=True):
    ready: int
    delayed: int
    dead: int
    """Messages in Dramatiq's own Redis dead-letter set (``<queue>.XQ``)."""


class StageStats(msgspec.Struct, frozen=True):
    stage: str
    queue: QueueDepth
    queued: int
    """Stage rows waiting for a worker (Postgres' view of the queue)."""
    in_flight: int
    retrying: int
    succeeded_5m: int
    failed_5m: int
    """Attempts that failed in the window (retried or dead)."""
    p50_ms: float | None
    p95_ms: float | None
    oldest_waiting_s: float | None
    paused: bool = False
    """An operator paused the stage: its rows wait (``pipeline stages resume``)."""


class Overview(msgspec.Struct, frozen=True):
    generated_at: datetime
    window_s: int
    stages: list[StageStats]
    documents: dict[DocumentStatus, int]


def queue_depths(client: Any, namespace: str, stages: Sequence[str]) -> dict[str, QueueDepth]:
    with client.pipeline(transaction=False) as pipe:
        for stage in stages:
            pipe.llen(f"{namespace}:{stage}")
            pipe.llen(f"{namespace}:{stage}.DQ")
            pipe.zcard(f"{namespace}:{stage}.XQ")
        values = pipe.execute()
    return {
        stage: QueueDepth(*(int(v) for v in values[i * 3 : i * 3 + 3]))
        for i, stage in enumerate(stages)
    }


def overview(conn: Connection, depths: dict[str, QueueDepth], stages: Sequence[str]) -> Overview:
    """Every stage of ``stages`` (the active definition's), then any other stage that
    documents accepted under an earlier definition still wait in."""
    now = conn.execute(select(func.now())).scalar_one()
    unfinished: dict[tuple[str, str], tuple[int, datetime | None]] = {
        (row.stage, row.status): (row.n, row.oldest)
        for row in conn.execute(
            select(
                StageRun.stage,
                StageRun.status,
                func.count().label("n"),
                func.min(StageRun.queued_at).label("oldest"),
            )
            .where(StageRun.status.in_(UNFINISHED_STAGE_STATUSES))
            .group_by(StageRun.stage, StageRun.status)
        )
    }
    recent = {
        row.stage: row
        for row in conn.execute(
            select(
                StageRun.stage,
                func.count().filter(StageRun.status == "succeeded").label("succeeded"),
                func.count().filter(StageRun.status.in_(("dead", "retrying"))).label("failed"),
                func.percentile_cont(0.5)
                .within_group(StageRun.duration_ms)
                .filter(StageRun.status == "succeeded")
                .label("p50"),
                func.percentile_cont(0.95)
                .within_group(StageRun.duration_ms)
                .filter(StageRun.status == "succeeded")
                .label("p95"),
            )
            .where(StageRun.finished_at > now - WINDOW)
            .group_by(StageRun.stage)
        )
    }
    names = list(stages) + sorted({stage for stage, _ in unfinished} - set(stages))
    paused = set(conn.execute(select(StageControl.stage).where(StageControl.paused)).scalars())
    rows = []
    for stage in names:
        queued, oldest = unfinished.get((stage, "queued"), (0, None))
        window = recent.get(stage)
        rows.append(
            StageStats(
                stage=stage,
                queue=depths.get(stage, QueueDepth(0, 0, 0)),
                queued=queued,
                in_flight=unfinished.get((stage, "running"), (0, None))[0],
                retrying=unfinished.get((stage, "retrying"), (0, None))[0],
                succeeded_5m=window.succeeded if window else 0,
                failed_5m=window.failed if window else 0,
                p50_ms=_round(window.p50) if window else None,
                p95_ms=_round(window.p95) if window else None,
                oldest_waiting_s=round((now - oldest).total_seconds(), 3) if oldest else None,
                paused=stage in paused,
            )
        )
    counts = dict(
        conn.execute(select(Document.status, func.count()).group_by(Document.status)).all()
    )
    documents = {status: int(counts.get(status, 0)) for status in DOCUMENT_STATUSES}
    return Overview(
        generated_at=now,
        window_s=int(WINDOW.total_seconds()),
        stages=rows,
        documents=documents,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)
