"""What a stage is: a spec (name, artifacts read and written, policy, pure work) and a
pipeline (specs in order, with a version).

The built-in stages live one per module beside this one (``validate``, ``extract``,
``chunk``, ``embed``, ``index``) and form :data:`pipeline.stages.builtin.PIPELINE`. A
deployment's own definition (``PIPELINE_DEFINITION=package.module:NAME``) reuses them
and adds stages of its own; see the README's "Writing a stage".
"""

from __future__ import annotations

from pipeline.stages.pipeline import (
    DEFAULT_DEFINITION,
    DefinitionError,
    Pipeline,
    UnknownStage,
    load_definition,
)
from pipeline.stages.spec import (
    Artifact,
    Compute,
    Inputs,
    Outputs,
    StageContext,
    StageName,
    StagePolicy,
    StageSpec,
)

__all__ = [
    "DEFAULT_DEFINITION",
    "Artifact",
    "Compute",
    "DefinitionError",
    "Inputs",
    "Outputs",
    "Pipeline",
    "StageContext",
    "StageName",
    "StagePolicy",
    "StageSpec",
    "UnknownStage",
    "load_definition",
]
