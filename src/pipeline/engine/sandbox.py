"""Run an untrusted parser in a child process with a hard deadline and a memory cap.

Why a child process. The parsers (PDFium through pypdfium2, libxml2 through lxml)
spend their time in C. Dramatiq's ``TimeLimit`` is a *soft* limit: it raises
``TimeLimitExceeded`` asynchronously in the actor's thread, and CPython only delivers
such an exception between bytecodes, so a thread stuck inside one C call (a parser
looping on a hostile file) is never interrupted. Nor can a thread be given its own
memory cap: a parser that balloons takes the whole worker process, with its other
worker threads, down with it (or into the OOM killer). A child process can be killed
at any moment with ``SIGKILL`` (a *hard* limit) and given its own address-space cap
with ``setrlimit``, so the worst a parser can do is lose its own process.

Why forkserver and not fork. The worker process runs several Dramatiq threads (and
database pools, Redis connections, locks). ``fork`` copies one thread of that
process, with every lock another thread held at that moment still held forever, and
with every inherited socket shared. ``forkserver`` instead forks each child from a
small single-threaded server process started once per worker process; the server
preloads :mod:`pipeline.processing.extract` (and so pypdfium2 and lxml) and this
module, so a child starts with the parsers already imported, in a few milliseconds.
``spawn`` would be as clean but re-imports everything for every document (hundreds of
milliseconds). One cost multiprocessing adds by itself: if the parent was started as a
*script* (``.venv/bin/pytest``), every child re-runs that script as ``__mp_main__``
(about 140 ms for pytest); the worker runs as ``python -m dramatiq``, which has none.

The child caps its address space (``RLIMIT_AS``), its CPU time (``RLIMIT_CPU``, a
backstop a second after the deadline), disables core dumps (a crash must not write
the document to disk) and arms ``alarm()`` a couple of seconds after the deadline, so
it dies by itself even if the parent never gets to kill it (the worker process is
killed, or interrupted between starting the child and waiting for it). It then runs
the function and sends back either the result or the exception. The parent waits in
short slices, so an asynchronous ``TimeLimitExceeded`` still ends the wait, and always
kills and reaps the child on the way out, whatever ended the wait.

Outcomes, and why each is transient (retried) or permanent:

* a :class:`~pipeline.errors.PipelineError` in the child is re-raised as is: the
  parser already decided (corrupt, encrypted, empty...);
* deadline passed: :class:`ParserTimeout`, *transient*: a busy machine can be slow,
  so the document gets its retries; a file that always hangs still ends up dead after
  them;
* ``MemoryError``: :class:`ParserMemoryExceeded`, *permanent*: the same file needs the
  same memory next time;
* the child died without answering (``SIGSEGV``, ``SIGABRT``, ``SIGXCPU``, an exit):
  :class:`ParserCrashed`, *permanent*: a parser that crashes on a file crashes on it
  every time, and retrying would only crash more processes. PDFium does not raise
  when an allocation fails under the cap, it aborts: ``SIGABRT`` says so in the reason;
* ``RecursionError``: :class:`ParserTooDeep`, *permanent*: the same nesting exhausts
  the same stack next time;
* any other exception: :class:`~pipeline.errors.TransientError`, as for every error
  nobody anticipated (see :mod:`pipeline.engine.failures`).

This is a fault-isolation boundary, not a security boundary: the child runs as the
same user, with the same environment, and its answer is unpickled by the parent.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import pickle
import resource
import signal
import struct
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import msgspec

from pipeline.errors import (
    TOO_DEEP_REASON,
    ContentTooLarge,
    CorruptContent,
    PipelineError,
    TransientError,
)
from pipeline.faults import never_returns
from pipeline.progress import report_progress, reporting_to

__all__ = [
    "ParserCrashed",
    "ParserMemoryExceeded",
    "ParserTimeout",
    "ParserTooDeep",
    "Sandbox",
    "SandboxLimits",
    "never_returns",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MIB: Final = 1024 * 1024
PRELOAD: Final = ("pipeline.processing.extract", __name__)
"""Imported once by the fork server, so that every child starts with the parsers loaded."""

_POLL_S: Final = 0.05
"""How long one wait on the pipe lasts: the latency of a soft time limit."""
_REAP_S: Final = 5.0
"""How long to wait for a child to exit once it answered or was killed."""
_ALARM_SLACK_S: Final = 2
"""The child's own wall-clock backstop fires this long after the deadline."""
_MAX_MESSAGE: Final = 200

# What the child sends back: (tag, value, child traceback or "").
_OK: Final = "ok"
_RAISED: Final = "raised"  # value: the exception object (it pickles)
_FAILED: Final = "failed"  # value: (type name, message) of one that does not pickle
_NO_MEMORY: Final = "no-memory"
# Built in advance: when the child runs out of memory it may not manage to build it.
_NO_MEMORY_ANSWER: Final = pickle.dumps((_NO_MEMORY, None, ""))


class ParserTimeout(TransientError):
    """The parser did not finish within the hard time limit and was killed."""


class ParserMemoryExceeded(ContentTooLarge):
    """The parser needed more memory than the sandbox allows."""


class ParserCrashed(CorruptContent):
    """The parser process died without answering (a signal or an exit)."""


class ParserTooDeep(CorruptContent):
    """The parser recursed past Python's recursion limit (absurdly nested input)."""


class SandboxLimits(msgspec.Struct, frozen=True):
    """The hard limits of one sandboxed call."""

    seconds: float
    """Wall-clock deadline; the child is killed once it passes."""
    memory_mb: int
    """Address-space cap of the child (``RLIMIT_AS``), in MiB."""


# Serialises Process.start() (which polls every other child in _cleanup()) with the
# polling, joining and closing of our children, so that two threads never read one
# child's status from its sentinel at once and a closed child is never polled.
_PROCESS_LOCK: Final = threading.Lock()
_CONTEXT_LOCK: Final = threading.Lock()
_context: multiprocessing.context.ForkServerContext | None = None


def _forkserver() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, with the parsers preloaded (configured once per process)."""
    global _context
    with _CONTEXT_LOCK:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOAD))
            _context = context
        return _context


class Sandbox:
    """Runs a picklable top-level function in a child process, under hard limits."""

    def __init__(self, limits: SandboxLimits) -> None:
        self._limits = limits
        self._last_pid: int | None = None

    @property
    def limits(self) -> SandboxLimits:
        return self._limits

    @property
    def last_pid(self) -> int | None:
        """Process id of the most recently started child (for observability and tests)."""
        return self._last_pid

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Return ``fn(*args)``, computed in a child process.

        ``fn`` must be a top-level function and ``args`` and the result picklable.

        Raises:
            PipelineError: the one ``fn`` raised, re-raised as is.
            ParserTimeout: the deadline passed; the child was killed.
            ParserMemoryExceeded: ``fn`` ran out of memory under the cap.
            ParserCrashed: the child died without answering.
            ParserTooDeep: ``fn`` raised ``RecursionError``.
            TransientError: ``fn`` raised any other exception.
        """
        seconds, memory_mb = self._limits.seconds, self._limits.memory_mb
        # Pickled here, unpickled by the child under its limits: an unpicklable
        # argument is the caller's bug and fails here, not as a crash of the child.
        task = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        context = _forkserver()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_child_main,
            args=(sender, seconds, memory_mb, task),
            name=f"sandbox:{getattr(fn, '__qualname__', 'fn')}",
            daemon=True,
        )
        deadline = time.monotonic() + seconds
        answer: bytes | None = None
        exitcode: int | None = None
        try:
            with _PROCESS_LOCK:
                process.start()
            self._last_pid = process.pid
            sender.close()  # the child holds the only write end now: EOF means it died
            answer = _wait(receiver, deadline, seconds)
        finally:
            sender.close()
            if process.pid is not None:  # started (even if interrupted right after)
                exitcode = _stop(process, answered=answer is not None)
            receiver.close()
        if answer is None:
            if exitcode == -signal.SIGALRM:  # the child's own deadline backstop fired
                raise ParserTimeout(_timeout_reason(seconds))
            raise ParserCrashed(_crash_reason(exitcode, memory_mb))
        return cast(T, _unpack(answer, memory_mb, process.name))


def _wait(
    receiver: multiprocessing.connection.Connection, deadline: float, seconds: float
) -> bytes | None:
    """The child's answer, or ``None`` if it died without one.

    Raises:
        ParserTimeout: the deadline passed first.

    Waits in short slices so that an asynchronous exception (Dramatiq's soft time
    limit, a worker shutdown) raised in this thread ends the wait promptly.
    """
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ParserTimeout(_timeout_reason(seconds))
        if receiver.poll(min(_POLL_S, remaining)):  # a message, or EOF: the child died
            try:
                message = receiver.recv_bytes()
            except EOFError:
                return None
            if message.startswith(_PROGRESS_PREFIX):  # relay to this attempt's reporter
                current, total = struct.unpack("!QQ", message[len(_PROGRESS_PREFIX) :])
                report_progress(current, total)
                continue
            return message


def _stop(process: multiprocessing.process.BaseProcess, *, answered: bool) -> int | None:
    """Kill ``process`` if it is still running, reap it; its exit code (None: unknown)."""
    if answered:
        # It is on its way out; let it exit by itself (the sentinel is only waited
        # on here, never read, so no lock is needed).
        multiprocessing.connection.wait([process.sentinel], timeout=1.0)
    with _PROCESS_LOCK:
        if process.is_alive():
            logger.warning("sandbox: killing parser process %s (%s)", process.pid, process.name)
            process.kill()
        process.join(_REAP_S)
        exitcode = process.exitcode
        if exitcode is None:
            logger.error("sandbox: parser process %s did not exit after SIGKILL", process.pid)
        else:
            process.close()
    return exitcode


def _unpack(answer: bytes, memory_mb: int, name: str) -> Any:
    tag, value, child_traceback = pickle.loads(answer)  # noqa: S301 - our own child's answer
    if tag == _OK:
        return value
    if tag == _NO_MEMORY:
        raise ParserMemoryExceeded(f"parsing needs more than {memory_mb} MiB of memory")
    if tag == _RAISED and isinstance(value, PipelineError):
        raise value
    if tag == _RAISED and isinstance(value, RecursionError):
        raise ParserTooDeep(TOO_DEEP_REASON)
    if tag == _RAISED:
        kind, message = type(value).__name__, str(value)
    else:
        kind, message = value
    error = TransientError(f"parser error: {kind}: {_first_line(message)}")
    if child_traceback:
        error.add_note(f"in the sandboxed parser ({name}):\n{child_traceback.rstrip()}")
    raise error


_PROGRESS_PREFIX: Final = b"\x00progress:"
"""Progress reports from the child; answers are pickles, which never start with NUL."""


def _timeout_reason(seconds: float) -> str:
    return f"parsing did not finish within {seconds:g} s (hard limit); the parser was stopped"


def _crash_reason(exitcode: int | None, memory_mb: int) -> str:
    if exitcode is None:
        return "the parser crashed on this file (its exit status is unknown)"
    if exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        reason = f"the parser crashed (signal {number}, {name}) on this file"
        if number == signal.SIGABRT:
            # What PDFium (C++) does when an allocation fails under RLIMIT_AS: it
            # aborts rather than raising, so the cap shows up as a crash.
            reason += f"; it probably ran out of its {memory_mb} MiB memory cap"
        return reason
    return f"the parser crashed (exit code {exitcode}) on this file"


def _first_line(message: str) -> str:
    lines = message.strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


# --- in the child -------------------------------------------------------------------


def _child_main(
    sender: multiprocessing.connection.Connection, seconds: float, memory_mb: int, task: bytes
) -> None:
    """Entry point of the child: apply the limits, run the task, send the answer."""
    try:
        answer = _answer(task, seconds, memory_mb, sender)
    except MemoryError:  # even describing the failure ran out of memory
        answer = _NO_MEMORY_ANSWER
    try:
        sender.send_bytes(answer)
    except BrokenPipeError:  # the parent gave up on us
        pass
    finally:
        sender.close()


def _apply_limits(seconds: float, memory_mb: int) -> None:
    cpu = math.ceil(seconds) + 1
    _lower(resource.RLIMIT_CORE, 0, 0)
    _lower(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL at hard
    _lower(resource.RLIMIT_AS, memory_mb * MIB, memory_mb * MIB)
    signal.alarm(math.ceil(seconds) + _ALARM_SLACK_S)  # SIGALRM's default action: exit


def _lower(limit: int, soft: int, hard: int) -> None:
    """Set ``limit`` to at most (soft, hard): never raise it above what it already is."""
    current_soft, current_hard = resource.getrlimit(limit)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    soft = min(soft, hard)
    if current_soft != resource.RLIM_INFINITY:
        soft = min(soft, current_soft)
    resource.setrlimit(limit, (soft, hard))


def _answer(
    task: bytes, seconds: float, memory_mb: int, sender: multiprocessing.connection.Connection
) -> bytes:
    def relay(current: int, total: int) -> None:
        sender.send_bytes(_PROGRESS_PREFIX + struct.pack("!QQ", current, total))

    try:
        _apply_limits(seconds, memory_mb)
        fn, args = pickle.loads(task)  # noqa: S301 - pickled by our parent
        with reporting_to(relay, min_interval=0.0):  # the parent throttles
            result = fn(*args)
        return pickle.dumps((_OK, result, ""), protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        pass  # answered below, once the exception has released the parser's memory
    except BaseException as exc:  # every failure, even SystemExit, is reported
        return _describe(exc)
    return _NO_MEMORY_ANSWER


def _describe(exc: BaseException) -> bytes:
    child_traceback = "" if isinstance(exc, PipelineError) else traceback.format_exc()
    try:
        answer = pickle.dumps((_RAISED, exc, child_traceback), protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(answer)  # noqa: S301 - it must also unpickle in the parent
    except Exception:  # it does not round-trip: send a description instead
        description = (type(exc).__name__, str(exc))
        return pickle.dumps((_FAILED, description, child_traceback))
    return answer
