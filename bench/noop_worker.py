"""A worker module for the end-to-end benchmark whose stages do no work.

The executor, stage rows, events and messages are the real ones; only the handlers are
replaced by no-ops, so the benchmark measures what the pipeline adds to a raw chain.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection

from pipeline.actors import declare_actors
from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.engine.executor import StageExecutor
from pipeline.settings import Settings
from pipeline.stages import STAGES


class NoopHandler:
    def load(self, conn: Connection, document_id: uuid.UUID) -> None:
        return None

    def compute(self, data: None) -> None:
        return None

    def summarize(self, result: None) -> dict[str, Any]:
        return {}

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, result: None
    ) -> None:
        return None


settings = Settings.from_env()
broker = make_broker(settings)
executor = StageExecutor(
    make_engine(settings), Dispatcher(broker), dict.fromkeys(STAGES, NoopHandler()), settings
)
actors = declare_actors(broker, executor, settings)
