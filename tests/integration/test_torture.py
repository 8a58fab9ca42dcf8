"""Exactly once under chaos: a short torture run of real processes, nothing lost or doubled.

Runs the driver of ``bench/torture.py`` (loaded by path, so there is one copy of it) with
about thirty documents and half a minute of chaos: worker process groups SIGKILLed and
restarted, this run's Redis namespace flushed (only its own keys: the suite shares
Redis), the workers' Postgres backends terminated, documents re-run from random stages
and dead letters replayed, while some documents fail transiently and one worker group
(a bad deploy, rolled back at the end) dead-letters others. After the chaos every
document must have succeeded with exactly the chunks a calm run gives, no chunk twice,
no stage applied twice in a generation, no ``dead`` letter left for a succeeded document
and every stage row succeeded at its generation.

``TORTURE_SEED`` replays a run's random choices (the report prints the seed);
``TORTURE_LOGS`` keeps the processes' logs in a directory of your choosing.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from pipeline.settings import Settings
from tests.support.bench_modules import load_bench

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_short_torture_run_loses_and_doubles_nothing(
    settings: Settings, api_key: str, tmp_path: Path
) -> None:
    """Kills, flushes, terminated backends, reruns, replays and stage pauses racing live
    stages: every document ends succeeded once, with a calm run's chunks and no stray
    dead letter."""
    torture = load_bench("torture.py")
    seed = int(os.environ.get("TORTURE_SEED", "0")) or uuid.uuid4().int % 1_000_000
    plan = torture.Plan(
        documents=30,
        kills=6,
        flushes=2,
        terminations=2,
        reruns=10,
        pauses=4,
        duration_s=30.0,
        settle_timeout_s=75.0,
        groups=3,
        threads=2,
        seed=seed,
        flaky_share=0.2,
        slow_share=0.15,
        doomed_share=0.3,  # enough documents for the bad deploy to dead-letter some
    )
    namespace = f"{settings.broker.namespace}-torture-{uuid.uuid4().hex[:6]}"
    env = torture.torture_env(settings.database.url, settings.broker.url, namespace)
    flush = torture.namespace_flusher(settings.broker.url, namespace)
    try:
        logs = Path(os.environ.get("TORTURE_LOGS") or tmp_path)
        report = torture.Torture(plan, env, api_key, logs, flush, out=sys.stdout).run()
    finally:
        flush()
    print(report.table())
    assert report.uploaded == plan.documents, report.table()
    # Kills and terminations wait for a worker group that is up (a loaded machine boots
    # slowly), and the chaos is extended for them only so long.
    assert report.kills >= plan.kills // 2, report.table()
    assert report.terminations >= 1, report.table()
    assert report.flushes == plan.flushes, report.table()
    assert report.ok, report.table()
