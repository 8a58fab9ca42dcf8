"""Progress of a long stage (current/total), shown on its stage row.

Long work calls :func:`report_progress` as it goes (the embed handler between batches,
the PDF extractor per page); the executor installs, for the attempt it runs, a
reporter that writes the numbers to the stage row at most twice a second, and the
sandbox relays reports from its child process. With no reporter installed (unit
tests, the CLI) reporting does nothing, so pure functions may call it freely.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator

Reporter = Callable[[int, int], None]

_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar(
    "pipeline_progress", default=None
)


def report_progress(current: int, total: int) -> None:
    reporter = _reporter.get()
    if reporter is not None:
        reporter(current, total)


@contextlib.contextmanager
def reporting_to(write: Reporter, min_interval: float = 0.5) -> Iterator[None]:
    """Send progress reports to ``write``, at most once per ``min_interval``.

    A stage that finishes within ``min_interval`` writes nothing (its row says
    ``succeeded`` soon enough); a longer one writes as it goes, and its last report.
    """
    last = [time.monotonic()]
    wrote = [False]

    def throttled(current: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= min_interval or (current >= total and wrote[0]):
            last[0] = now
            wrote[0] = True
            write(current, total)

    token = _reporter.set(throttled)
    try:
        yield
    finally:
        _reporter.reset(token)
