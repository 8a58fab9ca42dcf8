"""The tests' own layout: helpers live in ``tests/support``, and nothing else is imported.

A test module that imports from a conftest or from a sibling test module couples two
files that pytest loads on their own terms (a conftest is a plugin, a test module is
collected): a helper belongs in the ``tests.support`` package. This test reads every
file under ``tests/`` with :mod:`ast` and names each import that breaks the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
SUPPORT = "tests.support"


def module_name(path: Path) -> str:
    """The dotted name of ``path`` as imported from the project root."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module ``node`` imports from (a relative import resolved)."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")[: -node.level]
    return ".".join([*package, *([node.module] if node.module else [])])


def imported(path: Path, tree: ast.Module) -> list[tuple[int, str]]:
    """Every module ``tree`` imports, with its line (``from m import n`` gives ``m.n``
    too: ``n`` may be a module)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = resolve(path, node)
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def loose_modules() -> set[str]:
    """Names under which a file of ``tests/`` outside the support package could be
    imported: its dotted name, and its bare stem (pytest puts a folder without
    ``__init__.py`` on ``sys.path``)."""
    names: set[str] = set()
    for path in TESTS.rglob("*.py"):
        name = module_name(path)
        if path.name == "__init__.py" or name.startswith(SUPPORT):
            continue
        names.update({name, path.stem})
    return names


def offence(name: str, loose: set[str]) -> str | None:
    """Why importing ``name`` breaks the layout, or None."""
    last = name.rsplit(".", 1)[-1]
    if last == "conftest":
        return "imports from a conftest"
    if last.startswith("test_"):
        return "imports from a test module"
    if name in loose:
        return "imports a helper from outside tests.support"
    return None


def layout_errors() -> list[str]:
    loose = loose_modules()
    errors = []
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        for line, name in imported(path, tree):
            if (why := offence(name, loose)) is not None:
                errors.append(f"{path.relative_to(ROOT)}:{line}: {why} ({name})")
    return sorted(set(errors))


def test_helpers_are_imported_from_tests_support_only() -> None:
    errors = layout_errors()
    assert not errors, "\n".join(errors)


def test_the_check_sees_each_kind_of_offence() -> None:
    loose = {"tests.hostile", "hostile", "processing_golden"}
    path = TESTS / "integration" / "test_example.py"
    source = (
        "from .conftest import upload\n"
        "from . import conftest\n"
        "from .test_http import assert_problem\n"
        "import tests.integration.test_http\n"
        "from tests import hostile\n"
        "from processing_golden import FIXTURES\n"
        "from tests.support.api import upload\n"
        "from pipeline.stages import STAGES\n"
    )
    found = {
        line: why
        for line, name in imported(path, ast.parse(source))
        if (why := offence(name, loose)) is not None
    }
    assert found == {
        1: "imports from a conftest",
        2: "imports from a conftest",
        3: "imports from a test module",
        4: "imports from a test module",
        5: "imports a helper from outside tests.support",
        6: "imports a helper from outside tests.support",
    }
