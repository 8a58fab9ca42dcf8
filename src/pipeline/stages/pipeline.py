"""A pipeline definition: stages in order, checked once when a process starts.

The built-in definition is :data:`pipeline.stages.builtin.PIPELINE`; a deployment can
point every process at its own with ``PIPELINE_DEFINITION=package.module:NAME``. A
document follows the plan it was accepted with (its stage rows and their positions,
written at upload), so changing the definition affects new uploads and, when asked,
reruns; documents in flight finish as they started.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pipeline.errors import PipelineError
from pipeline.stages.artifacts import UPLOAD
from pipeline.stages.spec import NAME_PATTERN, Artifact, StageSpec

if TYPE_CHECKING:
    from pipeline.settings import Settings

RESERVED_NAMES: Final = frozenset({"operations", "upload", "webhooks"})
"""Queue and event names the engine uses itself: no stage may take them."""
DEFAULT_DEFINITION: Final = "pipeline.stages.builtin:PIPELINE"


class DefinitionError(PipelineError):
    """The pipeline definition cannot run: the reason names the stage or artifact at fault."""


class UnknownStage(PipelineError):
    """A stage name that the active pipeline definition does not have."""


@dataclass(frozen=True)
class Pipeline:
    """Ordered stages and a version (recorded on every document it plans).

    ``sources`` are the artifacts that exist before the first stage runs: the upload.
    """

    version: str
    stages: tuple[StageSpec, ...]
    sources: tuple[Artifact[Any], ...] = field(default=(UPLOAD,))

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise DefinitionError(f"pipeline {self.version!r}: {problem}")

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.stages)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def spec(self, name: str) -> StageSpec:
        """The stage called ``name``; raises :class:`UnknownStage`."""
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise UnknownStage(
            f"unknown stage {name!r}: the pipeline {self.version!r} has {', '.join(self.names)}"
        )

    def check(self, names: list[str] | tuple[str, ...]) -> None:
        """Refuse names that are not stages of this pipeline (``--stage`` options)."""
        for name in names:
            self.spec(name)

    def artifact(self, name: str) -> Artifact[Any]:
        """The artifact called ``name``, as its writer (or the sources) declares it."""
        for artifact in self.sources:
            if artifact.name == name:
                return artifact
        for spec in self.stages:
            for artifact in (*spec.writes, *spec.reads):
                if artifact.name == name:
                    return artifact
        raise KeyError(name)


def _problem(pipeline: Pipeline) -> str | None:
    if not pipeline.version.strip():
        return "the version is empty"
    if not pipeline.stages:
        return "it has no stages"
    written: dict[str, str] = {artifact.name: "the upload" for artifact in pipeline.sources}
    types: dict[str, type[Any]] = {artifact.name: artifact.type for artifact in pipeline.sources}
    seen: set[str] = set()
    for candidate in pipeline.stages:
        spec: object = candidate  # a user's definition may hold anything
        if not isinstance(spec, StageSpec):
            return f"{spec!r} is not a StageSpec"
        if spec.name in seen:
            return f"two stages are named {spec.name!r}"
        if spec.name in RESERVED_NAMES:
            return f"the stage name {spec.name!r} is reserved"
        seen.add(spec.name)
        for artifact in spec.reads:
            if artifact.name not in written:
                later = [s.name for s in pipeline.stages if artifact in s.writes]
                where = f" (only {later[0]}, later, writes it)" if later else ""
                return (
                    f"stage {spec.name!r} reads the {artifact.name!r} artifact "
                    f"before any stage writes it{where}"
                )
            if types[artifact.name] is not artifact.type:
                return (
                    f"stage {spec.name!r} reads {artifact.name!r} as "
                    f"{artifact.type.__name__}, but it is written as "
                    f"{types[artifact.name].__name__}"
                )
        reads = {artifact.name for artifact in spec.reads}
        for artifact in spec.writes:
            # A stage may revise an artifact it reads (OCR fills a text's empty pages, a
            # redaction rewrites it); writing one it does not read would hide the first.
            if artifact.name in written and artifact.name not in reads:
                return (
                    f"stage {spec.name!r} writes the {artifact.name!r} artifact, "
                    f"which {written[artifact.name]} already writes (a stage may only "
                    "rewrite an artifact it also reads)"
                )
            if artifact.name in types and types[artifact.name] is not artifact.type:
                return (
                    f"stage {spec.name!r} writes {artifact.name!r} as "
                    f"{artifact.type.__name__}, but it is written as "
                    f"{types[artifact.name].__name__}"
                )
            written[artifact.name] = f"stage {spec.name!r}"
            types[artifact.name] = artifact.type
    return None


def load_definition(reference: str) -> Pipeline:
    """Import ``package.module:NAME`` and return the :class:`Pipeline` it names.

    Every way this can fail is a :class:`DefinitionError` with a one-line reason.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise DefinitionError(
            f"PIPELINE_DEFINITION must look like package.module:NAME, not {reference!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except DefinitionError:
        raise
    except Exception as error:  # an import error or a definition that raised
        raise DefinitionError(
            f"cannot import {module_name!r} (PIPELINE_DEFINITION): {type(error).__name__}: {error}"
        ) from None
    found = getattr(module, attribute, None)
    if found is None:
        raise DefinitionError(f"{module_name!r} has no {attribute!r} (PIPELINE_DEFINITION)")
    if not isinstance(found, Pipeline):
        raise DefinitionError(
            f"{reference} is a {type(found).__name__}, not a pipeline.stages.Pipeline"
        )
    return found


def is_stage_name(name: str) -> bool:
    return bool(NAME_PATTERN.match(name))


def check_overrides(settings: Settings, definition: Pipeline) -> None:
    """Refuse ``PIPELINE_<STAGE>_…`` policy variables that name no stage: a typo (or a
    stage since removed) must not be silently ignored."""
    for stage in sorted(settings.stages.policy_overrides):
        if stage not in definition:
            raise DefinitionError(
                f"PIPELINE_{stage.upper()}_… sets a policy for {stage!r}, which is no stage "
                f"of the pipeline {definition.version!r} ({', '.join(definition.names)})"
            )


def checked_definition(settings: Settings, definition: Pipeline | None = None) -> Pipeline:
    """``definition`` (by default the one ``PIPELINE_DEFINITION`` names, loaded), with
    the deployment's policy overrides checked against it."""
    definition = definition or load_definition(settings.stages.definition)
    check_overrides(settings, definition)
    return definition
