"""A worker module for the end-to-end benchmark whose stages do no work.

The executor, stage rows, events and messages are the real ones; only the stages are
replaced by no-ops (same names, nothing read, nothing written), so the benchmark
measures what the pipeline adds to a raw chain.
"""

from __future__ import annotations

from pipeline.actors import declare_actors
from pipeline.broker import make_broker
from pipeline.settings import Settings
from pipeline.stages import Inputs, Outputs, Pipeline, StageSpec
from pipeline.stages.builtin import PIPELINE
from pipeline.wiring import Wiring


def nothing(inputs: Inputs) -> Outputs:
    return Outputs({})


NOOP = Pipeline(
    version="noop",
    stages=tuple(
        StageSpec(name=spec.name, reads=(), writes=(), policy=spec.policy, compute=nothing)
        for spec in PIPELINE
    ),
)

settings = Settings.from_env()
broker = make_broker(settings)
wiring = Wiring(settings, broker=broker, definition=NOOP)
actors = declare_actors(broker, wiring.executor, wiring.policies)
