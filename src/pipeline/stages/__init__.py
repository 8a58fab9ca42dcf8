"""The stage table: the order of the pipeline and each stage's default policy.

Adding a stage means one pure function (see ``pipeline.services.work``) and one entry
here. Everything else (queues, actors, stage rows, settings overrides) is derived.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import msgspec

StageName = Literal["validate", "extract", "chunk", "embed", "index"]

STAGES: Final[tuple[StageName, ...]] = get_args(StageName)
"""Every stage, in the order a document travels through them."""


class StagePolicy(msgspec.Struct, frozen=True):
    """How a stage's actor is retried and limited.

    ``max_retries`` counts re-deliveries after the first attempt, so a stage runs at
    most ``max_retries + 1`` times. Backoffs are Dramatiq's: exponential from
    ``min_backoff_ms``, capped at ``max_backoff_ms``, with jitter.
    """

    max_retries: int = 5
    min_backoff_ms: int = 1_000
    max_backoff_ms: int = 300_000
    time_limit_ms: int = 30_000

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1


DEFAULT_POLICIES: Final[dict[StageName, StagePolicy]] = {
    "validate": StagePolicy(time_limit_ms=15_000),
    # Parsing untrusted PDFs and DOCX files is the slowest and riskiest step.
    "extract": StagePolicy(time_limit_ms=60_000),
    "chunk": StagePolicy(time_limit_ms=30_000),
    # The model embeds ~25-35 chunks/s per worker thread on a CPU core (bench/embedding.py).
    # The largest text extract lets through (10M characters) chunks into ~12,200 chunks
    # of 200 tokens, ~400 s at 30/s; 900 s still fits it at half that rate (worker
    # threads sharing the cores). The cost of a long limit: an attempt whose worker
    # died is re-sent only after limit + slack (see Settings.running_slack_ms).
    "embed": StagePolicy(time_limit_ms=900_000),
    "index": StagePolicy(time_limit_ms=60_000),
}


def next_stage(stage: StageName) -> StageName | None:
    """The stage after ``stage``, or None for the last one."""
    position = STAGES.index(stage)
    return STAGES[position + 1] if position + 1 < len(STAGES) else None


def is_stage(name: str) -> bool:
    return name in STAGES
