"""``uv run pytest`` (the whole suite) runs the unit tests beside the integration tests.

With no paths on the command line, this session starts a second pytest process for
``tests/unit`` (the same options), deselects those tests here and runs the integration
tests, in order, in this process: they share the real Postgres and Redis, and some flush
Redis, while the unit tests touch neither. At the end it prints the unit run's output
and fails the session if that run failed. Two cores do both in about the integration
tests' time. Given paths (``uv run pytest tests/unit/test_ocr.py``), or with
``PIPELINE_TESTS_IN_ONE_PROCESS=1``, everything runs here as usual.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import pytest
from _pytest.config import Config

_CHILD = "PIPELINE_TESTS_IN_ONE_PROCESS"
_UNIT = Path(__file__).resolve().parent.parent / "unit"


class UnitRun:
    """The unit tests' pytest process and the file its output goes to."""

    def __init__(self, config: pytest.Config) -> None:
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        args = [sys.executable, "-m", "pytest", str(_UNIT), *config.invocation_params.args]
        self.process = subprocess.Popen(
            args,
            cwd=config.invocation_params.dir,
            env={**os.environ, _CHILD: "1"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def finish(self) -> tuple[int, str]:
        code = self.process.wait()
        self.log.seek(0)
        output = self.log.read().decode("utf-8", "replace")
        self.log.close()
        return code, output


def configure(config: pytest.Config) -> None:
    whole_suite = config.args_source == Config.ArgsSource.TESTPATHS
    if not whole_suite or os.environ.get(_CHILD) or config.option.collectonly:
        return
    if getattr(config, "workerinput", None) is not None:
        return
    config.stash[_RUN] = UnitRun(config)


def deselect(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _RUN not in config.stash:
        return
    unit = [item for item in items if _UNIT in Path(item.path).parents]
    if unit:
        config.hook.pytest_deselected(items=unit)
        items[:] = [item for item in items if _UNIT not in Path(item.path).parents]


def finish(session: pytest.Session) -> None:
    run = session.config.stash.get(_RUN, None)
    if run is None:
        return
    code, output = run.finish()
    reporter: Any = session.config.pluginmanager.get_plugin("terminalreporter")
    write = reporter.write if reporter is not None else sys.stdout.write
    write(f"\n{'=' * 20} unit tests (run beside the integration tests) {'=' * 20}\n")
    write(output)
    if code != 0 and session.exitstatus == 0:
        session.exitstatus = code


_RUN = pytest.StashKey[UnitRun]()
