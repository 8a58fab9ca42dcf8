"""Pausing and resuming a stage, for the whole deployment.

While a stage is paused no worker claims its rows: a message that arrives finds the
claim refused, is dropped with the reason recorded, and the row waits in Postgres as it
was (``queued``, or ``retrying``). Work already running finishes. The reconciler leaves
a paused stage's rows alone (they are waiting on purpose, not stranded). Resuming
notifies the active reconciler, which at once sends every row that waited a message of
its own (``Reconciler.resend_waited``), so the backlog drains without waiting for any
deadline.

Stages are shared by every tenant, so a pause is the deployment's operators' to make:
the CLI may, and over HTTP an ``admin`` key of the operator tenant
(``PIPELINE_OPERATOR_TENANT``). Every pause and resume is an event of its own in
``stage_events`` (no document), with who and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Engine, select, text

from pipeline.db.models import StageControl
from pipeline.engine import transitions
from pipeline.engine.reconciler import STAGES_CHANNEL
from pipeline.errors import PipelineError
from pipeline.operations.common import RunContext
from pipeline.stages import Pipeline


class StageState(msgspec.Struct, frozen=True):
    stage: str
    paused: bool
    paused_by: str | None = None
    paused_at: datetime | None = None
    reason: str | None = None


class NotOperator(PipelineError):
    """A tenant's key asked to pause or resume a stage every tenant shares."""

    def __init__(self, tenant: str, operator_tenant: str) -> None:
        super().__init__(
            f"stages are shared by every tenant: only an admin key of the operator tenant "
            f"{operator_tenant!r} (PIPELINE_OPERATOR_TENANT) may pause or resume one, "
            f"not one of {tenant!r}"
        )


class StageControls:
    def __init__(self, engine: Engine, definition: Pipeline, operator_tenant: str) -> None:
        self.engine = engine
        self.definition = definition
        self.operator_tenant = operator_tenant

    def pause(self, stage: str, run: RunContext, reason: str | None = None) -> StageState:
        self._check(stage, run)
        by = _by(run)
        with self.engine.begin() as conn:
            was = conn.execute(
                select(StageControl.paused).where(StageControl.stage == stage)
            ).scalar()
            conn.execute(transitions.pause_stage(stage, by, reason))
            if not was:
                detail = {"by": by, "reason": reason}
                conn.execute(transitions.stage_event(stage, "paused", detail))
        return self.state(stage)

    def resume(self, stage: str, run: RunContext) -> StageState:
        self._check(stage, run)
        by = _by(run)
        with self.engine.begin() as conn:
            resumed = conn.execute(transitions.resume_stage(stage, by)).first()
            if resumed is not None:
                conn.execute(transitions.stage_event(stage, "resumed", {"by": by}))
                conn.execute(text(f"NOTIFY {STAGES_CHANNEL}"))  # delivered at commit
        return self.state(stage)

    def states(self) -> list[StageState]:
        """Every stage of the definition, in order, paused or not (a plain read)."""
        with self.engine.connect() as conn:
            rows = {row.stage: row for row in conn.execute(_CONTROLS)}
        return [_state(name, rows.get(name)) for name in self.definition.names]

    def state(self, stage: str) -> StageState:
        with self.engine.connect() as conn:
            row = conn.execute(_CONTROLS.where(StageControl.stage == stage)).first()
        return _state(stage, row)

    def _check(self, stage: str, run: RunContext) -> None:
        self.definition.spec(stage)  # raises UnknownStage
        if run.tenant is not None and run.tenant != self.operator_tenant:
            raise NotOperator(run.tenant, self.operator_tenant)


def _by(run: RunContext) -> str:
    return f"{run.operator.via}:{run.operator.name}"


_CONTROLS = select(
    StageControl.stage,
    StageControl.paused,
    StageControl.paused_by,
    StageControl.paused_at,
    StageControl.reason,
)


def _state(stage: str, row: Any) -> StageState:
    if row is None or not row.paused:
        return StageState(stage=stage, paused=False)
    return StageState(
        stage=stage,
        paused=True,
        paused_by=row.paused_by,
        paused_at=row.paused_at,
        reason=row.reason,
    )
