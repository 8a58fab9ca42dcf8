"""The operations queue's name: light enough for ``pipeline worker`` to import."""

from __future__ import annotations

from typing import Final

OPERATIONS_QUEUE: Final = "operations"
"""Where bulk operator jobs (replays over HTTP) wait for a worker."""
