"""Progress reports are throttled, the last one always goes through, and nothing leaks."""

from __future__ import annotations

from pipeline.progress import report_progress, reporting_to


def test_reports_are_throttled_but_the_final_one_is_written() -> None:
    written: list[tuple[int, int]] = []
    with reporting_to(lambda current, total: written.append((current, total)), min_interval=60):
        for i in range(1, 11):
            report_progress(i, 10)
    assert written == [(1, 10), (10, 10)]


def test_outside_an_attempt_reporting_does_nothing() -> None:
    report_progress(1, 2)  # no reporter installed: no error, no effect
    written: list[tuple[int, int]] = []
    with reporting_to(lambda current, total: written.append((current, total))):
        pass
    report_progress(1, 2)
    assert written == []
