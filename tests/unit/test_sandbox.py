"""The parser sandbox: results, errors, hard limits, and no child ever left behind."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dramatiq.middleware.time_limit import TimeLimitExceeded
from dramatiq.threading import raise_thread_exception
from tests.support.golden import FIXTURES
from tests.support.sandbox_targets import (
    MIB,
    allocate,
    child_info,
    exit_without_answer,
    fail,
    fail_unpicklable,
    segfault,
)

from pipeline.engine.sandbox import (
    ParserCrashed,
    ParserMemoryExceeded,
    ParserTimeout,
    Sandbox,
    SandboxLimits,
    never_returns,
)
from pipeline.errors import (
    ContentTooLarge,
    CorruptContent,
    PipelineError,
    TransientError,
)
from pipeline.processing.extract import Extracted, extract
from pipeline.processing.kinds import DocumentKind

EXTRACT = FIXTURES / "extract"
LIMITS = SandboxLimits(seconds=30, memory_mb=1024)


def _in_process(path: Path, kind: DocumentKind) -> Extracted | PipelineError:
    try:
        return extract(path.read_bytes(), kind, None)
    except PipelineError as exc:
        return exc


def _assert_gone(pid: int | None) -> None:
    """The child was killed and reaped: no process with its pid is left."""
    assert pid is not None
    assert all(child.pid != pid for child in multiprocessing.active_children())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_returns_the_result_of_extract() -> None:
    data = (EXTRACT / "pdf_multipage.pdf").read_bytes()
    result = Sandbox(LIMITS).run(extract, data, "pdf", None)
    assert isinstance(result, Extracted)
    assert result == extract(data, "pdf", None)


def test_child_comes_from_the_preloaded_forkserver_with_limits() -> None:
    box = Sandbox(SandboxLimits(seconds=2.5, memory_mb=300))
    info = box.run(child_info)
    assert info["pid"] == box.last_pid
    assert info["ppid"] != os.getpid()  # forked by the fork server, not by us
    assert info["start_method"] == "forkserver"
    assert info["preloaded"]
    assert info["rlimit_as"] == (300 * MIB, 300 * MIB)
    assert info["rlimit_cpu"] == (4, 5)
    assert info["rlimit_core"] == (0, 0)
    _assert_gone(box.last_pid)


def test_reraises_the_parsers_pipeline_error() -> None:
    path = EXTRACT / "pdf_corrupt.pdf"
    expected = _in_process(path, "pdf")
    assert isinstance(expected, CorruptContent)
    with pytest.raises(CorruptContent) as caught:
        Sandbox(LIMITS).run(extract, path.read_bytes(), "pdf", None)
    assert type(caught.value) is CorruptContent
    assert caught.value.reason == expected.reason


def test_hung_parser_is_killed_at_the_deadline() -> None:
    box = Sandbox(SandboxLimits(seconds=1, memory_mb=1024))
    started = time.monotonic()
    with pytest.raises(ParserTimeout) as caught:
        box.run(never_returns)
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 3
    assert isinstance(caught.value, TransientError)
    assert caught.value.reason == (
        "parsing did not finish within 1 s (hard limit); the parser was stopped"
    )
    _assert_gone(box.last_pid)


def test_memory_cap() -> None:
    with pytest.raises(ParserMemoryExceeded) as caught:
        Sandbox(SandboxLimits(seconds=10, memory_mb=256)).run(allocate, 512)
    assert isinstance(caught.value, ContentTooLarge)
    assert caught.value.reason == "parsing needs more than 256 MiB of memory"
    # Below the cap, the same function works.
    assert Sandbox(SandboxLimits(seconds=10, memory_mb=256)).run(allocate, 64) == 64 * MIB


def test_crash_by_signal() -> None:
    box = Sandbox(LIMITS)
    with pytest.raises(ParserCrashed) as caught:
        box.run(segfault)
    assert isinstance(caught.value, CorruptContent)
    assert caught.value.reason == "the parser crashed (signal 11, SIGSEGV) on this file"
    _assert_gone(box.last_pid)


def test_exit_without_answer() -> None:
    with pytest.raises(ParserCrashed, match=r"exit code 3"):
        Sandbox(LIMITS).run(exit_without_answer, 3)


def test_other_exceptions_become_transient() -> None:
    with pytest.raises(TransientError) as caught:
        Sandbox(LIMITS).run(fail, "bad input\nsecond line")
    assert type(caught.value) is TransientError
    assert caught.value.reason == "parser error: ValueError: bad input"
    assert "in fail" in caught.value.__notes__[0]  # the child's traceback

    with pytest.raises(TransientError) as caught:
        Sandbox(LIMITS).run(fail, "x" * 1000)
    assert len(caught.value.reason) <= len("parser error: ValueError: ") + 200


def test_exception_that_does_not_unpickle_is_described() -> None:
    with pytest.raises(TransientError) as caught:
        Sandbox(LIMITS).run(fail_unpicklable)
    assert caught.value.reason == "parser error: _Unpicklable: needs two arguments"


def test_unpicklable_function_fails_in_the_caller() -> None:
    box = Sandbox(LIMITS)
    with pytest.raises((AttributeError, TypeError, ValueError)):  # pickle's errors
        box.run(lambda: None)
    assert box.last_pid is None


def test_soft_time_limit_interrupts_the_wait_and_kills_the_child() -> None:
    box = Sandbox(SandboxLimits(seconds=30, memory_mb=1024))
    outcome: list[BaseException] = []

    def target() -> None:
        try:
            box.run(never_returns)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    time.sleep(0.5)
    pid = box.last_pid
    assert pid is not None
    os.kill(pid, 0)  # the child is running
    interrupted = time.monotonic()
    assert thread.ident is not None
    raise_thread_exception(thread.ident, TimeLimitExceeded)
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - interrupted < 1
    assert len(outcome) == 1
    assert isinstance(outcome[0], TimeLimitExceeded)
    _assert_gone(pid)


def test_concurrent_calls_from_several_threads() -> None:
    cases: list[tuple[Path, DocumentKind]] = [
        (EXTRACT / "pdf_multipage.pdf", "pdf"),
        (EXTRACT / "docx_report.docx", "docx"),
        (EXTRACT / "html_boilerplate.html", "html"),
        (EXTRACT / "pdf_corrupt.pdf", "pdf"),
    ] * 3
    box = Sandbox(LIMITS)

    def run(case: tuple[Path, DocumentKind]) -> Extracted | PipelineError:
        path, kind = case
        try:
            return box.run(extract, path.read_bytes(), kind, None)
        except PipelineError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, cases))
    for (path, kind), result in zip(cases, results, strict=True):
        expected = _in_process(path, kind)
        if isinstance(expected, PipelineError):
            assert type(result) is type(expected)
            assert isinstance(result, PipelineError)
            assert result.reason == expected.reason
        else:
            assert result == expected
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("sandbox:")]


def test_progress_reported_in_the_child_reaches_the_parent() -> None:
    from pipeline.processing.extract import extract
    from pipeline.progress import reporting_to

    data = (EXTRACT / "pdf_multipage.pdf").read_bytes()
    seen: list[tuple[int, int]] = []
    with reporting_to(lambda current, total: seen.append((current, total)), min_interval=0):
        Sandbox(SandboxLimits(seconds=10, memory_mb=1024)).run(extract, data, "pdf", None)
    assert seen[-1] == (3, 3)
    assert all(total == 3 for _, total in seen)
