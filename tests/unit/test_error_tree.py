"""The tree in ``pipeline.errors``' docstring is the tree of ``PipelineError``'s subclasses.

Every module of the package is imported in a child process (some set up logging or a
Dramatiq broker on import, which this test session must not inherit), which reports
each ``PipelineError`` subclass the package defines, with its module and its base, and
each public exception class the package defines outside that tree.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

import pipeline.errors

CHILD = r"""
import importlib, inspect, json, pkgutil

import pipeline
from litestar.exceptions import HTTPException
from pipeline.errors import PipelineError

modules = [pipeline.errors]
for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
    if info.name != "pipeline.__main__":  # ``python -m pipeline``: it runs the CLI
        modules.append(importlib.import_module(info.name))


def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


tree = [
    {
        "name": cls.__name__,
        "module": cls.__module__,
        "bases": [base.__name__ for base in cls.__bases__ if issubclass(base, PipelineError)],
    }
    for cls in subclasses(PipelineError)
    if cls.__module__.split(".")[0] == "pipeline"  # not a test's or a benchmark's
]
outside = sorted(
    f"{module.__name__}.{name}"
    for module in modules
    for name, cls in vars(module).items()
    if inspect.isclass(cls)
    and issubclass(cls, BaseException)
    and cls.__module__ == module.__name__
    and not name.startswith("_")  # private control flow
    and not issubclass(cls, PipelineError | HTTPException)  # an HTTP response, not an error
)
print(json.dumps({"tree": tree, "outside": outside}))
"""

TREE_LINE = re.compile(
    r"^    (?P<rails>(?:[│ ]   )*)(?P<branch>[├└]── )?(?P<name>_?[A-Z]\w*)"
    r"(?: +(?P<module>[a-z_.]+))?$"
)


@pytest.fixture(scope="module")
def package() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=120
    )
    reported: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return reported


def documented_tree() -> dict[str, tuple[str | None, str]]:
    """Each class of the docstring's tree: its parent there, and its module."""
    entries: dict[str, tuple[str | None, str]] = {}
    ancestors: list[str] = []
    for line in (pipeline.errors.__doc__ or "").splitlines():
        found = TREE_LINE.match(line)
        if found is None:
            continue
        name = found["name"]
        depth = len(found["rails"]) // 4 + (1 if found["branch"] else 0)
        assert depth <= len(ancestors), f"{name} is indented past its parent"
        assert name not in entries, f"{name} is in the tree twice"
        del ancestors[depth:]
        module = f"pipeline.{found['module']}" if found["module"] else "pipeline.errors"
        entries[name] = (ancestors[-1] if ancestors else None, module)
        ancestors.append(name)
    return entries


def test_the_tree_starts_at_pipeline_error() -> None:
    roots = [name for name, (parent, _) in documented_tree().items() if parent is None]
    assert roots == ["PipelineError"]


def test_the_tree_names_every_pipeline_error_of_the_package_and_no_other(
    package: dict[str, Any],
) -> None:
    defined = {entry["name"] for entry in package["tree"]} | {"PipelineError"}
    documented = set(documented_tree())
    assert sorted(defined - documented) == [], "missing from the tree in pipeline/errors.py"
    assert sorted(documented - defined) == [], "in the tree, but no such PipelineError"


def test_each_class_sits_under_its_base_with_its_module(package: dict[str, Any]) -> None:
    tree = documented_tree()
    wrong = [
        f"{entry['name']}: documented {tree[entry['name']]}, "
        f"is {entry['module']} under {entry['bases']}"
        for entry in package["tree"]
        if entry["name"] in tree
        and (
            entry["bases"] != [tree[entry["name"]][0]] or entry["module"] != tree[entry["name"]][1]
        )
    ]
    assert wrong == []


def test_every_public_exception_of_the_package_is_a_pipeline_error(
    package: dict[str, Any],
) -> None:
    assert package["outside"] == []
