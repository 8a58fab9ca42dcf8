"""Golden-file helpers for the processing unit tests.

Each case is ``tests/fixtures/<stage>/<case>.<ext>`` with a committed expected
output ``<case>.expected.json`` (and ``<case>.expected.txt`` for extracted text).
Tests compare exactly. With ``PIPELINE_UPDATE_FIXTURES=1`` the helpers *write*
the expected files instead of comparing, so a deliberate behaviour change can be
recorded; review the diff of every rewritten file before committing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec

from pipeline.errors import PipelineError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
UPDATE = os.environ.get("PIPELINE_UPDATE_FIXTURES") == "1"
_EXPECTED_SUFFIXES = (".expected.json", ".expected.txt")


def case_files(stage: str, *, exclude_suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Input files of ``stage``, sorted (expected outputs and helpers excluded)."""
    directory = FIXTURES / stage
    return sorted(
        path
        for path in directory.iterdir()
        if path.is_file()
        and not path.name.endswith(_EXPECTED_SUFFIXES + exclude_suffixes)
        and path.name != "README.md"
    )


def expected_path(case: Path, suffix: str) -> Path:
    """``dir/<case>.expected<suffix>`` for input ``dir/<case>.<ext>``."""
    stem = case.name.split(".", 1)[0]
    return case.with_name(f"{stem}.expected{suffix}")


def error_result(exc: PipelineError) -> dict[str, str]:
    """The comparable form of a raised pipeline error."""
    return {"error": type(exc).__name__, "reason": exc.reason}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(msgspec.to_builtins(value)))


def check_json(path: Path, actual: Any) -> None:
    """Compare ``actual`` (structs allowed) to the JSON at ``path``, or write it."""
    actual = _plain(actual)
    if UPDATE:
        path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", "utf-8")
        return
    assert path.exists(), f"{path} missing: run with PIPELINE_UPDATE_FIXTURES=1 and review it"
    assert actual == json.loads(path.read_text("utf-8"))


def check_text(path: Path, actual: str) -> None:
    """Compare ``actual`` to the text at ``path`` (stored with one final newline)."""
    if UPDATE:
        path.write_bytes(actual.encode("utf-8") + b"\n")
        return
    assert path.exists(), f"{path} missing: run with PIPELINE_UPDATE_FIXTURES=1 and review it"
    assert actual == path.read_bytes().decode("utf-8").removesuffix("\n")
