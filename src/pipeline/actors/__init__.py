"""Stage actors: thin Dramatiq declarations over the stage executor.

Each stage of the definition gets one actor on its own queue (queue name = stage
name), so a worker group started with ``--stage extract`` consumes extract messages
and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import dramatiq
from dramatiq.middleware import CurrentMessage

from pipeline.engine.executor import StageExecutor
from pipeline.messages import Delivery
from pipeline.operations.jobs import JOB_ACTOR, JobRunner
from pipeline.operations.queue import OPERATIONS_QUEUE
from pipeline.stages import StagePolicy


def declare_stage_actor(
    broker: dramatiq.Broker, stage: str, executor: StageExecutor, policy: StagePolicy
) -> dramatiq.Actor[[object], None]:
    """Declare ``stage``'s actor with its own retry policy and time limit."""

    def run(payload: object) -> None:
        message = CurrentMessage.get_current_message()
        if message is None:  # only when called directly, outside a worker
            raise RuntimeError("stage actors run inside a Dramatiq worker")
        executor.execute(stage, payload, Delivery.from_message(message))

    run.__name__ = run.__qualname__ = f"{stage}_stage"
    declare = dramatiq.actor(
        actor_name=stage,
        queue_name=stage,
        broker=broker,
        max_retries=policy.max_retries,
        min_backoff=policy.min_backoff_ms,
        max_backoff=policy.max_backoff_ms,
        time_limit=policy.time_limit_ms,
    )
    return declare(run)


def declare_actors(
    broker: dramatiq.Broker, executor: StageExecutor, policies: Mapping[str, StagePolicy]
) -> dict[str, dramatiq.Actor[[object], None]]:
    """One actor per stage of ``policies`` (the definition's stages, in order)."""
    return {
        stage: declare_stage_actor(broker, stage, executor, policy)
        for stage, policy in policies.items()
    }


OPERATIONS_TIME_LIMIT_MS = 24 * 3600 * 1000
"""A bulk replay at a low rate can run for hours; it is paced, not stuck."""


def declare_operations_actor(
    broker: dramatiq.Broker, runner: JobRunner
) -> dramatiq.Actor[[str], None]:
    """The actor that carries out bulk operator jobs accepted over HTTP.

    No retries: a job that fails is marked failed with its error, and the operator
    decides whether to submit it again (its items are each done or untouched).
    """

    def run(job_id: str) -> None:
        runner.run(uuid.UUID(job_id))

    run.__name__ = run.__qualname__ = JOB_ACTOR
    declare = dramatiq.actor(
        actor_name=JOB_ACTOR,
        queue_name=OPERATIONS_QUEUE,
        broker=broker,
        max_retries=0,
        time_limit=OPERATIONS_TIME_LIMIT_MS,
    )
    return declare(run)
