"""Definitions a deployment could get wrong; each is refused when a process starts."""

from __future__ import annotations

from pipeline.stages import Pipeline
from pipeline.stages.builtin import CHUNK, EMBED, EXTRACT, INDEX, VALIDATE
from tests.support.acme.ingest import LANGUAGE_STAGE

READ_TOO_EARLY = Pipeline(
    version="broken-1",
    stages=(VALIDATE, LANGUAGE_STAGE, EXTRACT, CHUNK, EMBED, INDEX),
)
