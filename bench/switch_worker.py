"""``pipeline.actors.worker`` with a 1 ms GIL switch interval (Python's default is 5 ms).

A measurement for ``bench/latency.py`` only: whether a thread woken by I/O (a consumer
handed a wake-up notice, a worker thread handed a message) waits for the GIL long
enough to show in one document's latency.
"""

from __future__ import annotations

import sys

sys.setswitchinterval(0.001)

from pipeline.actors.worker import *  # noqa: E402, F403 - the worker module, re-exported
