"""The module ``dramatiq`` loads in every worker process.

Dramatiq imports this module by name in each child process, so this is the one place
where settings are read from the environment on import: the broker is built first,
then the executor, then the actors bound to both.
"""

from __future__ import annotations

from pipeline.actors import declare_actors
from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.services.dispatch import Dispatcher
from pipeline.services.executor import StageExecutor
from pipeline.services.handlers import make_handlers
from pipeline.settings import Settings

settings = Settings.from_env()
broker = make_broker(settings)
executor = StageExecutor(
    make_engine(settings),
    Dispatcher(broker),
    make_handlers(settings),
    settings,
)
actors = declare_actors(broker, executor, settings)
