"""Functions the sandbox tests run in a child process.

They must be importable top-level functions: the child unpickles them by reference
(as ``tests.support.sandbox_targets.<name>``). The project root is on the ``sys.path``
pytest gives the tests, and the sandbox's forkserver starts with that ``sys.path``.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import sys
import time
from typing import Any

MIB = 1024 * 1024


def child_info() -> dict[str, Any]:
    """How the child was started, what it has imported, and its limits."""
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "start_method": multiprocessing.get_start_method(),
        "preloaded": all(
            name in sys.modules for name in ("pipeline.processing.extract", "pypdfium2", "lxml")
        ),
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS),
        "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU),
        "rlimit_core": resource.getrlimit(resource.RLIMIT_CORE),
    }


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * MIB))


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


def exit_without_answer(code: int) -> None:
    os._exit(code)


def fail(message: str) -> None:
    raise ValueError(message)


class _Unpicklable(Exception):
    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} {second}")


def fail_unpicklable() -> None:
    raise _Unpicklable("needs", "two arguments")


def recurse(depth: int) -> int:
    """Recurse without end: stands in for a parser walking absurdly nested input."""
    return recurse(depth + 1) + 1
