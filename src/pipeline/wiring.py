"""The composition root: the object graph every process builds, built in one place.

A worker, the API, each CLI command and the tests ask a :class:`Wiring` for what they
need (``wiring.executor``, ``wiring.rerun``, ...); each part is built on first use and
then shared, so a CLI command that only reads dead letters never loads the embedding
model, and no process builds two brokers or two fault injectors. The pipeline
definition is loaded and checked here, once, before anything runs: an invalid one (or
a policy override naming no stage of it) stops the process with a one-line error.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from functools import cached_property

import dramatiq
from sqlalchemy import Engine

from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine.artifacts import Artifacts
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import Observer, RunnableStage, StageExecutor
from pipeline.engine.reconciler import Reconciler, Sweep
from pipeline.engine.sandbox import Sandbox, SandboxLimits
from pipeline.faults import Faults
from pipeline.lifecycle.deletion import DeletionService
from pipeline.lifecycle.retention import RetentionSweep
from pipeline.operations.cancel import CancelService
from pipeline.operations.jobs import JobRunner, JobSweep
from pipeline.operations.replay import ReplayService
from pipeline.operations.rerun import RerunService
from pipeline.operations.stage_controls import StageControls
from pipeline.settings import Settings
from pipeline.stages import DefinitionError, Pipeline, StageContext, StagePolicy
from pipeline.stages.pipeline import checked_definition
from pipeline.webhooks.delivery import DeliveryService
from pipeline.webhooks.dispatch import CHANNEL as WEBHOOKS_CHANNEL
from pipeline.webhooks.dispatch import WebhookDispatch
from pipeline.webhooks.endpoints import WebhookEndpoints
from pipeline.webhooks.sender import WebhookSender


def make_sandbox(settings: Settings) -> Sandbox:
    limits = SandboxLimits(
        seconds=settings.limits.parser_time_limit_ms / 1000,
        memory_mb=settings.limits.parser_memory_mb,
    )
    return Sandbox(limits)


class Wiring:
    """Builds each part of the object graph once, on first use.

    Anything given to the constructor is used instead of being built: tests hand in
    their broker, their fault plan or a definition of their own.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        definition: Pipeline | None = None,
        broker: dramatiq.Broker | None = None,
        dispatcher: Dispatcher | None = None,
        faults: Faults | None = None,
        engine: Engine | None = None,
        application_name: str = "pipeline",
        worker_id: str | None = None,
        observer: Observer | None = None,
        sandbox: bool = True,
    ) -> None:
        self.settings = settings
        self._definition = definition
        self._broker = broker if broker is not None or dispatcher is None else dispatcher.broker
        self._dispatcher = dispatcher
        self._faults = faults
        self._engine = engine
        self.application_name = application_name
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.observer = observer
        self.sandboxed = sandbox

    # -- the definition ------------------------------------------------------------------

    @cached_property
    def definition(self) -> Pipeline:
        return checked_definition(self.settings, self._definition)

    @cached_property
    def policies(self) -> dict[str, StagePolicy]:
        """Each stage's policy: its spec's default with the deployment's overrides."""
        return {
            spec.name: self.settings.stages.policy(spec.name, spec.policy)
            for spec in self.definition
        }

    # -- infrastructure ------------------------------------------------------------------

    @cached_property
    def faults(self) -> Faults:
        if self._faults is not None:
            return self._faults
        for spec in self.settings.faults:
            if spec.stage != "upload" and spec.stage not in self.definition:
                raise DefinitionError(
                    f"PIPELINE_FAULTS names {spec.stage!r}, which is no stage of the "
                    f"pipeline {self.definition.version!r}"
                )
        return Faults(self.settings.faults)

    @cached_property
    def broker(self) -> dramatiq.Broker:
        return self._broker if self._broker is not None else make_broker(self.settings)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher if self._dispatcher is not None else Dispatcher(self.broker)

    @cached_property
    def engine(self) -> Engine:
        if self._engine is not None:
            return self._engine
        return make_engine(self.settings, application_name=self.application_name)

    # -- the stage engine ----------------------------------------------------------------

    @cached_property
    def artifacts(self) -> Artifacts:
        return Artifacts(self.definition)

    @cached_property
    def stages(self) -> dict[str, RunnableStage]:
        """Every stage of the definition, built (models loaded, sandbox ready)."""
        context = StageContext(
            settings=self.settings,
            faults=self.faults,
            isolation=make_sandbox(self.settings) if self.sandboxed else None,
        )
        return {
            spec.name: RunnableStage(
                spec, spec.make(context), self.policies[spec.name], spec.make_skip(context)
            )
            for spec in self.definition
        }

    @cached_property
    def executor(self) -> StageExecutor:
        return StageExecutor(
            self.engine,
            self.dispatcher,
            self.stages,
            self.artifacts,
            self.settings,
            self.faults,
            worker_id=self.worker_id,
            observer=self.observer,
        )

    @cached_property
    def reconciler(self) -> Reconciler:
        grace = timedelta(milliseconds=self.settings.stages.queued_grace_ms)
        sweeps: list[Sweep] = [
            JobSweep(self.engine, self.dispatcher, grace),
            self.webhook_dispatch,
            self.retention,
        ]
        # The outbox trigger notifies: new deliveries go out at once, not at the next sweep.
        wakers = {WEBHOOKS_CHANNEL: self.webhook_dispatch}
        return Reconciler(self.engine, self.dispatcher, self.settings, sweeps, wakers=wakers)

    # -- webhooks ------------------------------------------------------------------------

    @cached_property
    def webhook_dispatch(self) -> WebhookDispatch:
        grace = timedelta(milliseconds=self.settings.stages.queued_grace_ms)
        return WebhookDispatch(
            self.engine, self.dispatcher, grace, self.settings.reconciler.batch_size
        )

    @cached_property
    def webhook_sender(self) -> WebhookSender:
        config = self.settings.webhooks
        return WebhookSender(
            timeout_s=config.timeout_ms / 1000,
            max_response_bytes=config.max_response_bytes,
            allow_private=config.allow_private,
        )

    @cached_property
    def webhook_delivery(self) -> DeliveryService:
        return DeliveryService(self.engine, self.dispatcher, self.settings, self.webhook_sender)

    @cached_property
    def webhook_endpoints(self) -> WebhookEndpoints:
        return WebhookEndpoints(self.engine, self.settings)

    # -- operations ----------------------------------------------------------------------

    @cached_property
    def replay(self) -> ReplayService:
        return ReplayService(self.engine, self.dispatcher, self.settings, self.definition)

    @cached_property
    def rerun(self) -> RerunService:
        return RerunService(self.engine, self.dispatcher, self.settings, self.definition)

    @cached_property
    def retention(self) -> RetentionSweep:
        return RetentionSweep(self.engine, self.settings.retention)

    @cached_property
    def deletion(self) -> DeletionService:
        return DeletionService(self.engine)

    @cached_property
    def stage_controls(self) -> StageControls:
        return StageControls(self.engine, self.definition, self.settings.access.operator_tenant)

    @cached_property
    def cancel(self) -> CancelService:
        return CancelService(self.engine)

    @cached_property
    def jobs(self) -> JobRunner:
        return JobRunner(self.engine, self.replay, self.rerun)
