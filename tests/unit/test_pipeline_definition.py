"""Pipeline definitions: what a valid one is, and the one-line reason an invalid one gets."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from tests.support.acme.ingest import LANGUAGE_STAGE
from tests.support.acme.ingest import PIPELINE as ACME

from pipeline.settings import Settings
from pipeline.stages import (
    Artifact,
    DefinitionError,
    Inputs,
    Outputs,
    Pipeline,
    StageSpec,
    UnknownStage,
    load_definition,
)
from pipeline.stages.builtin import CHUNK, EMBED, EXTRACT, INDEX, PIPELINE, TEXT, VALIDATE
from pipeline.wiring import Wiring


class Other(msgspec.Struct):
    value: int


def nothing(inputs: Inputs) -> Outputs:
    return Outputs({})


def spec(name: str, reads: tuple[Artifact[Any], ...] = (), **kwargs: Any) -> StageSpec:
    return StageSpec(name=name, reads=reads, writes=kwargs.pop("writes", ()), compute=nothing)


def test_the_built_in_definition() -> None:
    assert PIPELINE.names == ("validate", "extract", "ocr", "chunk", "embed", "index")
    assert [[a.name for a in s.reads] for s in PIPELINE] == [
        ["upload"],
        ["upload", "validation"],
        ["upload", "validation", "text"],
        ["text"],
        ["chunks"],
        ["chunks", "vectors"],
    ]
    assert PIPELINE.spec("embed").policy.time_limit_ms == 900_000
    assert [a.name for a in PIPELINE.spec("ocr").writes] == ["text"]  # it revises the text


def test_a_definition_with_a_stage_between_extract_and_chunk() -> None:
    assert ACME.names == ("validate", "extract", "ocr", "language", "chunk", "embed", "index")
    assert ACME.artifact("language").type.__name__ == "Language"


@pytest.mark.parametrize(
    ("stages", "reason"),
    [
        ((), "it has no stages"),
        ((VALIDATE, EXTRACT, EXTRACT), "two stages are named 'extract'"),
        (
            (VALIDATE, LANGUAGE_STAGE, EXTRACT),
            "stage 'language' reads the 'text' artifact before any stage writes it "
            "(only extract, later, writes it)",
        ),
        ((spec("ocr", (Artifact("scan", Other),)),), "reads the 'scan' artifact before any"),
        (
            (VALIDATE, EXTRACT, spec("again", writes=(TEXT,))),
            "stage 'again' writes the 'text' artifact, which stage 'extract' already writes",
        ),
        (
            (VALIDATE, EXTRACT, spec("odd", (TEXT,), writes=(Artifact("text", Other),))),
            "stage 'odd' writes 'text' as Other, but it is written as Extracted",
        ),
        (
            (VALIDATE, EXTRACT, spec("odd", (Artifact("text", Other),))),
            "stage 'odd' reads 'text' as Other, but it is written as Extracted",
        ),
        ((spec("operations"),), "the stage name 'operations' is reserved"),
    ],
)
def test_invalid_definitions_are_refused_with_the_reason(
    stages: tuple[StageSpec, ...], reason: str
) -> None:
    with pytest.raises(DefinitionError, match=r"^pipeline 'bad': ") as raised:
        Pipeline(version="bad", stages=stages)
    assert reason in raised.value.reason
    assert "\n" not in raised.value.reason


def test_a_stage_may_revise_an_artifact_it_reads() -> None:
    redact = spec("redact", (TEXT,), writes=(TEXT,))
    revised = Pipeline(version="ok", stages=(VALIDATE, EXTRACT, redact, CHUNK, EMBED, INDEX))
    assert revised.names[2] == "redact"


def test_stage_and_artifact_names_are_checked() -> None:
    with pytest.raises(ValueError, match="stage name 'OCR!'"):
        spec("OCR!")
    with pytest.raises(ValueError, match="artifact name 'a b'"):
        Artifact("a b", Other)
    with pytest.raises(ValueError, match="exactly one of compute= or build="):
        StageSpec(name="x", reads=(), writes=())


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("no-colon", "must look like package.module:NAME"),
        ("tests.support.acme.nowhere:PIPELINE", "cannot import 'tests.support.acme.nowhere'"),
        ("tests.support.acme.ingest:NOPE", "'tests.support.acme.ingest' has no 'NOPE'"),
        ("tests.support.acme.ingest:LANGUAGE", "is a Artifact, not a pipeline.stages.Pipeline"),
        ("tests.support.acme.broken:READ_TOO_EARLY", "reads the 'text' artifact before any stage"),
    ],
)
def test_loading_a_definition(reference: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as raised:
        load_definition(reference)
    assert reason in raised.value.reason
    assert load_definition("tests.support.acme.ingest:PIPELINE") is ACME


def test_unknown_stages_and_overrides_are_refused() -> None:
    unknown = "unknown stage 'translate': the pipeline 'builtin-2' has"
    with pytest.raises(UnknownStage, match=unknown):
        PIPELINE.check(("extract", "translate"))
    wiring = Wiring(Settings.from_env({"PIPELINE_LANGUAGE_MAX_RETRIES": "1"}))
    with pytest.raises(DefinitionError, match="'language', which is no stage"):
        _ = wiring.definition
    acme = Wiring(
        Settings.from_env(
            {
                "PIPELINE_DEFINITION": "tests.support.acme.ingest:PIPELINE",
                "PIPELINE_LANGUAGE_MAX_RETRIES": "1",
            }
        )
    )
    assert acme.policies["language"].max_retries == 1
    assert acme.policies["language"].time_limit_ms == LANGUAGE_STAGE.policy.time_limit_ms
    assert acme.policies["chunk"] == CHUNK.policy


def test_faults_must_name_a_stage_of_the_definition() -> None:
    env = {
        "PIPELINE_FAULTS": '[{"stage": "language", "permanent": true}]',
        "PIPELINE_FAULT_INJECTION": "enabled-for-testing",
    }
    with pytest.raises(DefinitionError, match="PIPELINE_FAULTS names 'language'"):
        _ = Wiring(Settings.from_env(env)).faults
    assert Wiring(
        Settings.from_env({**env, "PIPELINE_DEFINITION": "tests.support.acme.ingest:PIPELINE"})
    )


def test_outputs_must_be_what_a_stage_declares() -> None:
    from pipeline.engine.artifacts import Artifacts, InvalidOutputs

    artifacts = Artifacts(PIPELINE)
    with pytest.raises(InvalidOutputs, match="returned \\[\\]; it declares it writes \\['text'\\]"):
        artifacts.check(EXTRACT, Outputs({}))
    with pytest.raises(InvalidOutputs, match="returned a Other as 'text', which is a Extracted"):
        artifacts.check(EXTRACT, Outputs({TEXT: Other(1)}))
    with pytest.raises(InvalidOutputs, match="returned a dict, not Outputs"):
        artifacts.check(EMBED, {})
    assert INDEX.name == "index"
