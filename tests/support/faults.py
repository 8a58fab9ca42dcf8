"""Test-only fault injection: a plan of faults the executor fires before stages compute."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import StageExecutor
from pipeline.errors import PermanentError, TransientError
from pipeline.faults import Faults
from pipeline.settings import Settings
from pipeline.stages import Compute, Pipeline
from pipeline.wiring import Wiring


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

    def has(self, stage: str, filename: str) -> bool:
        with self.lock:
            fault = self.faults.get((stage, filename))
            return fault is not None and fault.times > 0

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()


class PlannedFaults(Faults):
    """The executor's fault hook, firing a :class:`FaultPlan`'s faults before a stage
    computes (where ``PIPELINE_FAULTS`` fire in production builds)."""

    def __init__(self, plan: FaultPlan) -> None:
        super().__init__()
        self.plan = plan

    def __bool__(self) -> bool:
        return True

    def touches(self, stage: str, filename: str) -> bool:
        return self.plan.has(stage, filename)

    def before_compute(self, stage: str, filename: str, attempt: int) -> None:
        fault = self.plan.take(stage, filename)
        if fault is None:
            return
        if fault.kind == "transient":
            raise TransientError("injected transient failure")
        if fault.kind == "permanent":
            raise PermanentError("injected permanent failure")
        # Small sleeps: Dramatiq's soft limit interrupts Python code between
        # bytecodes, not a single long C-level sleep.
        deadline = time.monotonic() + fault.seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)


def build_executor(
    settings: Settings,
    dispatcher: Dispatcher,
    *,
    engine: Engine,
    faults: Faults | None = None,
    worker_id: str,
    sandbox: bool = True,
    wrap: Callable[[str, Compute], Compute] | None = None,
    definition: Pipeline | None = None,
) -> StageExecutor:
    """A stage executor as the composition root builds it, with each stage's compute
    optionally wrapped (``wrap(stage, compute)``) by a test's instrument."""
    wiring = Wiring(
        settings,
        dispatcher=dispatcher,
        engine=engine,
        faults=faults,
        worker_id=worker_id,
        sandbox=sandbox,
        definition=definition,
    )
    stages = {
        name: dataclasses.replace(stage, compute=wrap(name, stage.compute)) if wrap else stage
        for name, stage in wiring.stages.items()
    }
    return StageExecutor(
        engine,
        dispatcher,
        stages,
        wiring.artifacts,
        settings,
        wiring.faults,
        worker_id=worker_id,
    )
