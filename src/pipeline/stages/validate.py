"""validate: sniff the real type from the bytes, check size and type policy."""

from __future__ import annotations

from typing import Any

from pipeline.processing.validate import ValidationPolicy, validate
from pipeline.stages.artifacts import UPLOAD, VALIDATION
from pipeline.stages.spec import Compute, Inputs, Outputs, StageContext, StagePolicy, StageSpec


def build(context: StageContext) -> Compute:
    policy = ValidationPolicy(
        max_bytes=context.settings.limits.max_upload_bytes,
        max_image_pixels=context.settings.ocr.max_image_pixels,
    )

    def compute(inputs: Inputs) -> Outputs:
        return Outputs({VALIDATION: validate(inputs[UPLOAD].data, policy)})

    return compute


def summarize(outputs: Outputs) -> dict[str, Any]:
    result = outputs[VALIDATION]
    return {"kind": result.kind, "mime": result.mime, "encoding": result.encoding}


SPEC = StageSpec(
    name="validate",
    reads=(UPLOAD,),
    writes=(VALIDATION,),
    policy=StagePolicy(time_limit_ms=15_000, claim_first=False),
    build=build,
    summarize=summarize,
    description="sniff the real type from the bytes; size and type policy",
)
