"""Loading a benchmark script as a module, so that a test and the benchmark share one copy
of its code (``bench/`` is a folder of scripts, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(filename: str) -> ModuleType:
    """``bench/<filename>`` as the module ``bench_<stem>`` (loaded once per process)."""
    name = f"bench_{Path(filename).stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / filename)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses and msgspec look their module up while
    # building their classes.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
