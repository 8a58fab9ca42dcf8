"""Test-only fault injection: wraps stage handlers to fail or stall on demand."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from pipeline.db.models import Document
from pipeline.errors import PermanentError, TransientError
from pipeline.stages.builtin import AnyHandler


@dataclass
class Fault:
    kind: str  # "transient" | "permanent" | "sleep"
    times: int
    seconds: float = 0.0


@dataclass
class FaultPlan:
    """Faults keyed by (stage, filename); each fires a set number of times.

    Keyed by filename because a test plans the fault before the upload gives the
    document an id.
    """

    faults: dict[tuple[str, str], Fault] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, stage: str, filename: str, fault: Fault) -> None:
        with self.lock:
            self.faults[(stage, filename)] = fault

    def take(self, stage: str, filename: str) -> Fault | None:
        with self.lock:
            fault = self.faults.get((stage, filename))
            if fault is None or fault.times <= 0:
                return None
            fault.times -= 1
            return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()


class FaultyHandler:
    """Delegates to a real handler, firing planned faults before it computes."""

    def __init__(self, stage: str, inner: AnyHandler, plan: FaultPlan) -> None:
        self.stage = stage
        self.inner = inner
        self.plan = plan

    def load(self, conn: Connection, document_id: uuid.UUID) -> Any:
        filename = conn.execute(
            select(Document.filename).where(Document.id == document_id)
        ).scalar_one()
        fault = self.plan.take(self.stage, filename)
        return (fault, self.inner.load(conn, document_id))

    def compute(self, data: Any) -> Any:
        fault, inner_data = data
        if fault is not None:
            if fault.kind == "transient":
                raise TransientError("injected transient failure")
            if fault.kind == "permanent":
                raise PermanentError("injected permanent failure")
            # Small sleeps: Dramatiq's soft limit interrupts Python code between
            # bytecodes, not a single long C-level sleep.
            deadline = time.monotonic() + fault.seconds
            while time.monotonic() < deadline:
                time.sleep(0.05)
        return self.inner.compute(inner_data)

    def summarize(self, result: Any) -> dict[str, Any]:
        return self.inner.summarize(result)

    def store(self, conn: Connection, document_id: uuid.UUID, generation: int, result: Any) -> None:
        self.inner.store(conn, document_id, generation, result)
