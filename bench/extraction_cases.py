"""The quality fixture set's layout: which types have cases, each case's input and reference.

    tests/fixtures/quality/<type>/<case>.<ext>           the input document
    tests/fixtures/quality/<type>/<case>.expected.txt    the reference text

Shared by ``bench/extraction.py`` and ``tests/unit/test_extraction_quality.py`` (which
loads it by path: bench/ is a folder of scripts, not a package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

QUALITY: Final = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quality"
TYPES: Final = ("pdf", "docx", "html", "markdown", "text", "image")
_REFERENCE: Final = ".expected.txt"


def types(root: Path = QUALITY) -> list[str]:
    """The document types that have cases under ``root``, in :data:`TYPES` order."""
    return [kind for kind in TYPES if cases(kind, root)]


def cases(kind: str, root: Path = QUALITY) -> list[Path]:
    """The input files of ``kind`` under ``root`` (the fixture set by default), sorted."""
    folder = root / kind
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.endswith(_REFERENCE)
        and path.name not in {"README.md", "SOURCES.md"}
    )


def reference_of(case: Path) -> Path:
    """``<case>.expected.txt`` beside the input ``<case>.<ext>``."""
    return case.with_name(case.name.split(".", 1)[0] + _REFERENCE)
