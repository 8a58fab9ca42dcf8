"""The end-to-end floor: a raw Dramatiq chain of five actors that only send the next message.

Same RedisBroker, encoder and middleware as the pipeline (``pipeline.broker``); no
Postgres at all. The last actor counts finished chains in Redis; in latency mode
(``BENCH_FLOOR_NOTIFY=1``, set by ``bench/latency.py``) it also publishes the chain's
``document_id`` on ``{namespace}:floor-done``, so a waiting client sees the end of each
chain the moment it happens instead of polling for it.
"""

from __future__ import annotations

import os

import dramatiq

from pipeline.broker import make_broker
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE

STAGES = PIPELINE.names

settings = Settings.from_env()
broker = make_broker(settings)
COUNTER = f"{settings.broker.namespace}:floor-done"
NOTIFY = os.environ.get("BENCH_FLOOR_NOTIFY") == "1"
actors: dict[str, dramatiq.Actor[[dict[str, object]], None]] = {}


def _declare(position: int) -> None:
    stage = STAGES[position]

    def step(payload: dict[str, object]) -> None:
        if position + 1 < len(STAGES):
            actors[STAGES[position + 1]].send({**payload, "stage": STAGES[position + 1]})
        else:
            broker.client.incr(COUNTER)
            if NOTIFY:
                broker.client.publish(COUNTER, str(payload.get("document_id", "")))

    step.__name__ = f"floor_{stage}"
    actors[stage] = dramatiq.actor(actor_name=stage, queue_name=stage, broker=broker)(step)


for _position in range(len(STAGES)):
    _declare(_position)
