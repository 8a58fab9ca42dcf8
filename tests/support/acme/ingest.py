"""Acme's ingestion pipeline: the built-in stages with language detection after OCR.

Point every process at it with ``PIPELINE_DEFINITION=tests.support.acme.ingest:PIPELINE``;
``pipeline worker --stage language`` runs the new stage on its own queue.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PermanentError
from pipeline.stages import Artifact, Inputs, Outputs, Pipeline, StagePolicy, StageSpec
from pipeline.stages.builtin import CHUNK, EMBED, EXTRACT, INDEX, OCR, TEXT, VALIDATE
from tests.support.acme.language import Language, NoWords, detect

LANGUAGE = Artifact("language", Language, "the language the text is written in")


def detect_language(inputs: Inputs) -> Outputs:
    try:
        return Outputs({LANGUAGE: detect(inputs[TEXT].text)})
    except NoWords as error:
        raise PermanentError(str(error)) from None


def summarize(outputs: Outputs) -> dict[str, Any]:
    language = outputs[LANGUAGE]
    return {"language": language.code, "confidence": language.confidence}


LANGUAGE_STAGE = StageSpec(
    name="language",
    reads=(TEXT,),
    writes=(LANGUAGE,),
    policy=StagePolicy(max_retries=3, min_backoff_ms=500, time_limit_ms=10_000),
    compute=detect_language,
    summarize=summarize,
    description="the language of the text, from its function words",
)

PIPELINE = Pipeline(
    version="acme-1",
    stages=(VALIDATE, EXTRACT, OCR, LANGUAGE_STAGE, CHUNK, EMBED, INDEX),
)
