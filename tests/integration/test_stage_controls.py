"""Pausing a stage and cancelling a document, with real worker and reconciler processes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from pipeline.operations.cancel import CancelRequest
from pipeline.operations.common import Operator, RunContext
from pipeline.operations.requests import RerunRequest
from pipeline.settings import Settings
from pipeline.wiring import Wiring
from tests.support.api import bearer, make_key
from tests.support.processes import ProcessStack, stack_maker, wait_until

pytestmark = pytest.mark.slow

CLI = RunContext(operator=Operator(name="tests@here", via="cli"))


class Stack(ProcessStack):
    def rows(self, document_id: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            found = conn.execute(
                text("SELECT stage, status FROM stage_runs WHERE document_id = :id"),
                {"id": document_id},
            ).all()
        return {row.stage: row.status for row in found}

    def events(self, document_id: str, name: str, stage: str | None = None) -> list[Any]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT stage, detail FROM stage_events WHERE document_id = :id "
                        "AND event = :name AND (CAST(:stage AS text) IS NULL OR stage = :stage) "
                        "ORDER BY id"
                    ),
                    {"id": document_id, "name": name, "stage": stage},
                ).all()
            )


@pytest.fixture
def make_stack(settings: Settings, engine: Engine, tmp_path: Path, api_key: str) -> Iterator[Any]:
    with stack_maker(settings, engine, tmp_path, api_key, Stack) as make:
        yield make


def test_a_paused_stage_holds_its_rows_and_a_resume_drains_them(
    make_stack: Any, controls: Any
) -> None:
    # Queued rows are overdue after 1 s: the reconciler would re-send them if it did
    # not know that they wait on purpose.
    stack: Stack = make_stack(PIPELINE_QUEUED_GRACE_S="1")
    stack.processes.worker()
    stack.processes.reconciler()
    paused = controls.pause("chunk", CLI, "maintenance")
    assert paused.paused
    assert paused.reason == "maintenance"
    ids = [stack.upload(f"paused-{n}.txt") for n in range(4)]
    wait_until(
        lambda: all(stack.rows(i)["chunk"] == "queued" for i in ids), 30, "rows waiting at chunk"
    )
    time.sleep(3)  # several sweeps, and every row's deadline long past
    for document_id in ids:
        rows = stack.rows(document_id)
        assert rows["ocr"] == "succeeded"
        assert rows["chunk"] == "queued"
        assert rows["embed"] == "pending"
        assert stack.events(document_id, "resent", "chunk") == []
        dropped = stack.events(document_id, "dropped", "chunk")
        assert dropped
        assert "paused" in dropped[0].detail["reason"]
    status = subprocess.run(
        [sys.executable, "-m", "pipeline", "status"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "chunk (PAUSED)" in status.stdout, status.stdout + status.stderr

    controls.resume("chunk", CLI)
    wait_until(lambda: all(stack.status(i) == "succeeded" for i in ids), 60, "the drain")
    for document_id in ids:
        resent = stack.events(document_id, "resent", "chunk")
        assert [row.detail["why"] for row in resent] == ["resumed"]  # exactly once

    def forgotten() -> bool:  # nothing waits any more: later sweeps stop looking
        with stack.engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT resumed_at IS NULL FROM stage_controls WHERE stage = 'chunk'")
                ).scalar()
            )

    wait_until(forgotten, 10, "the drained resume forgotten")
    with stack.engine.connect() as conn:
        audit = conn.execute(
            text(
                "SELECT event, detail FROM stage_events WHERE document_id IS NULL "
                "AND stage = 'chunk' AND event IN ('paused', 'resumed') ORDER BY id"
            )
        ).all()
    assert [row.event for row in audit][-2:] == ["paused", "resumed"]
    assert audit[-2].detail == {"by": "cli:tests@here", "reason": "maintenance"}


def test_a_cancelled_document_stops_mid_stage_and_a_rerun_restarts_it(
    make_stack: Any, settings: Settings, engine: Engine
) -> None:
    stack: Stack = make_stack([{"stage": "chunk", "match": "cancel-*", "sleep_s": 3}])
    stack.processes.worker()
    document_id = stack.upload("cancel-me.txt")
    wait_until(lambda: stack.rows(document_id)["chunk"] == "running", 30, "chunk running")
    wiring = Wiring(stack.settings, engine=engine)  # the stack's Redis namespace
    request = CancelRequest(ids=[uuid.UUID(document_id)], reason="wrong file")
    report = wiring.cancel.cancel(request, CLI)
    assert [item.action for item in report.items] == ["cancelled"]
    assert stack.status(document_id) == "failed"
    time.sleep(4)  # the chunk attempt finishes its sleep and tries to complete
    rows = stack.rows(document_id)
    assert rows["chunk"] == "failed"
    assert rows["embed"] == "pending"
    assert stack.events(document_id, "claimed", "embed") == []
    assert stack.events(document_id, "superseded", "chunk")  # its completion was refused
    with engine.connect() as conn:
        reason, chunks = conn.execute(
            text(
                "SELECT failure_reason, (SELECT count(*) FROM chunks WHERE document_id = d.id) "
                "FROM documents d WHERE id = :id"
            ),
            {"id": document_id},
        ).one()
    assert reason == "cancelled by cli:tests@here: wrong file"
    assert chunks == 0
    again = wiring.cancel.cancel(request, CLI)
    assert again.items[0].action == "skipped"  # already failed
    rerun = RerunRequest(ids=[uuid.UUID(document_id)], from_stage="chunk")
    assert wiring.rerun.rerun(rerun, CLI).items[0].action == "rerun"
    wait_until(lambda: stack.status(document_id) == "succeeded", 60, "the rerun")


def test_over_http_only_the_operator_tenant_pauses_and_a_document_cancels(
    client: Any, engine: Engine, controls: Any
) -> None:
    other = make_key(engine, tenant=f"not-operator-{uuid.uuid4().hex[:6]}")
    refused = client.post("/stages/embed/pause", json={}, headers=bearer(other))
    assert refused.status_code == 403
    assert "PIPELINE_OPERATOR_TENANT" in refused.json()["detail"]
    assert client.post("/stages/nosuch/pause", json={}).status_code == 404
    paused = client.post("/stages/embed/pause", json={"reason": "model upgrade"})
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    stages = {row["stage"]: row for row in client.get("/stages").json()["stages"]}
    assert stages["embed"]["paused"] is True
    assert stages["chunk"]["paused"] is False
    resumed = client.post("/stages/embed/resume")
    assert resumed.json()["paused"] is False
    missing = client.post(f"/documents/{uuid.uuid4()}/cancel", json={})
    assert missing.status_code == 404
