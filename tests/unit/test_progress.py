"""Progress reports are throttled, the last one always goes through, and nothing leaks."""

from __future__ import annotations

from unittest import mock

from pipeline.progress import report_progress, reporting_to


def test_quick_work_writes_nothing() -> None:
    written: list[tuple[int, int]] = []
    with reporting_to(lambda current, total: written.append((current, total)), min_interval=60):
        for i in range(1, 11):
            report_progress(i, 10)
    assert written == []


def test_long_work_writes_as_it_goes_and_its_last_report() -> None:
    written: list[tuple[int, int]] = []
    clock = [0.0]

    def now() -> float:
        return clock[0]

    with (
        mock.patch("pipeline.progress.time.monotonic", new=now),
        reporting_to(lambda current, total: written.append((current, total)), min_interval=1.0),
    ):
        for i in range(1, 11):
            clock[0] += 0.3  # a report every 0.3 s: written about every third
            report_progress(i, 10)
    assert written == [(4, 10), (8, 10), (10, 10)]


def test_outside_an_attempt_reporting_does_nothing() -> None:
    report_progress(1, 2)  # no reporter installed: no error, no effect
    written: list[tuple[int, int]] = []
    with reporting_to(lambda current, total: written.append((current, total))):
        pass
    report_progress(1, 2)
    assert written == []
