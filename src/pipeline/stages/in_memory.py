"""Run a pipeline's stages one after another in memory: no database, no broker.

What the workers do, minus the engine: each stage's compute gets the artifacts it
reads and adds those it writes. For unit tests and fixtures of a stage (yours
included), and for trying a definition on a file.
"""

from __future__ import annotations

from typing import Any

from pipeline.stages.artifacts import UPLOAD, Upload
from pipeline.stages.pipeline import Pipeline
from pipeline.stages.spec import Inputs, Outputs, StageContext


class InMemoryPipeline:
    """The stages of ``pipeline``, built once for ``context``."""

    def __init__(self, pipeline: Pipeline, context: StageContext) -> None:
        self.stages = [(spec, spec.make(context)) for spec in pipeline]

    def run(self, upload: Upload, *, until: str | None = None) -> dict[str, Any]:
        """Every artifact by name after the stages ran (through ``until``, if given)."""
        artifacts: dict[str, Any] = {UPLOAD.name: upload}
        for spec, compute in self.stages:
            outputs: object = compute(Inputs({a.name: artifacts[a.name] for a in spec.reads}))
            if not isinstance(outputs, Outputs):
                kind = type(outputs).__name__
                raise TypeError(f"stage {spec.name!r} returned {kind}, not Outputs")
            artifacts.update({name: outputs.get(name) for name in outputs.names()})
            if spec.name == until:
                break
        return artifacts
