"""Model calls shared by every thread of a process: documents in flight share batches.

Without it each embed attempt calls the model with its own batches (four or five
chunks for a small document), from its own Dramatiq thread: the model runs as many
calls at once as there are threads, each thread's onnxruntime arena keeps its own
high-water mark (4 threads at batch 16 held 1.4 GiB), and while a thread loads its
chunks or commits its vectors its share of the model is idle.

:class:`SharedBatches` puts an :class:`~pipeline.embedding.base.Embedder` behind a
queue served by ``callers`` inference threads. ``embed(texts)`` from any thread queues
a request and waits for its vectors; an inference thread takes the oldest requests'
texts, ``max_texts`` of them when that many wait (a request larger than what is left of
a call is split, its rest first in line for the next), and makes one model call of
them all. Nothing waits to fill a batch: a request that finds the model idle is run at
once, so one document alone is not slowed down; requests pile up only while the model
is busy, which is exactly when sharing a call pays. So:

* the model runs ``callers`` calls at once whatever the number of Dramatiq threads:
  an embed worker can run many threads, whose database work overlaps the model's,
  with the memory of ``callers`` arenas;
* every attempt still fences, reports progress and fails on its own: the batcher
  only computes. Each request gets exactly its own vectors back, in order. A shared
  call that raises is run again part by part, so an input that breaks the model fails
  only the attempt it came from;
* a waiting caller waits in short slices, so Dramatiq's asynchronous
  ``TimeLimitExceeded`` still ends its wait; a request given up before its call starts
  is left out of it.

The threads start on first use, in the process that uses them (a forked child starts
its own).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Final, NamedTuple, Protocol

from pipeline.embedding.base import Embedder

logger = logging.getLogger("pipeline.embedding")

WAIT_SLICE_S: Final = 0.05
"""How long a waiting caller blocks before it lets an asynchronous exception in."""


class CallObserver(Protocol):
    """Told about every model call: how many requests shared it, how many texts, how long."""

    def observe_call(self, requests: int, texts: int, seconds: float) -> None: ...


class _NoObserver:
    def observe_call(self, requests: int, texts: int, seconds: float) -> None:
        return None


class _Request:
    """One caller's texts; answered when every part of them has come back (or one failed)."""

    __slots__ = ("abandoned", "done", "error", "left", "lock", "taken", "texts", "vectors")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: list[list[float]] = [[] for _ in texts]
        self.taken = 0
        """Texts already handed to a call (the rest wait in the queue)."""
        self.left = len(texts)
        """Texts whose vectors have not come back."""
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.abandoned = False
        self.lock = threading.Lock()

    @property
    def live(self) -> bool:
        return not (self.abandoned or self.done.is_set())

    def answer(self, start: int, vectors: list[list[float]]) -> None:
        with self.lock:
            if self.done.is_set():
                return
            self.vectors[start : start + len(vectors)] = vectors
            self.left -= len(vectors)
            if self.left == 0:
                self.done.set()

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if not self.done.is_set():
                self.error = error
                self.done.set()


class _Part(NamedTuple):
    """Texts ``start:stop`` of one request, in one call."""

    request: _Request
    start: int
    stop: int

    @property
    def texts(self) -> list[str]:
        return self.request.texts[self.start : self.stop]


class SharedBatches:
    """An :class:`Embedder` whose model calls are shared by every thread of the process."""

    def __init__(
        self,
        model: Embedder,
        *,
        max_texts: int,
        callers: int = 1,
        observer: CallObserver | None = None,
    ) -> None:
        if max_texts < 1:
            raise ValueError("max_texts must be at least 1")
        if callers < 1:
            raise ValueError("callers must be at least 1")
        self.name = model.name
        self.dimensions = model.dimensions
        self.semantic = model.semantic
        self.model = model
        self.max_texts = max_texts
        self.callers = callers
        self._observer: CallObserver = observer or _NoObserver()
        self._reset()
        reset = weakref.WeakMethod(self._reset)
        os.register_at_fork(after_in_child=lambda: (method := reset()) and method())

    def _reset(self) -> None:
        """Fresh state: at construction, and in a forked child (whose threads are gone)."""
        self._pending: deque[_Request] = deque()
        self._ready = threading.Condition()
        self._started = False
        self._closed = False

    def close(self) -> None:
        """Stop the inference threads once the requests already queued are answered."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order, computed in a model call shared with others."""
        if not texts:
            return []
        request = _Request(list(texts))
        with self._ready:
            if self._closed:
                raise RuntimeError("the shared embedder was closed")
            if not self._started:
                self._start()
            self._pending.append(request)
            self._ready.notify()
        try:
            while not request.done.wait(WAIT_SLICE_S):
                pass
        except BaseException:
            request.abandoned = True  # left out of a call that has not started yet
            raise
        if request.error is not None:
            raise request.error
        return request.vectors

    def _start(self) -> None:
        for number in range(self.callers):
            threading.Thread(
                target=self._serve, name=f"embed-batches-{number}", daemon=True
            ).start()
        self._started = True

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if not self._pending:
                    return
                parts = self._take()
                if self._pending:  # the rest of a split request, or more: another caller
                    self._ready.notify()
            try:
                self._run(parts)
            except BaseException as error:  # a bug here must not strand the callers
                logger.exception("shared embedding call failed unexpectedly")
                for part in parts:
                    part.request.fail(error)

    def _take(self) -> list[_Part]:
        """The next call: the oldest live requests' texts, exactly ``max_texts`` of them
        when that many wait. A request larger than what is left of the call is split:
        the rest of it stays first in the queue, for the next call."""
        parts: list[_Part] = []
        room = self.max_texts
        while self._pending and room:
            request = self._pending[0]
            if not request.live:  # given up, or failed in an earlier part
                self._pending.popleft()
                continue
            start = request.taken
            stop = min(len(request.texts), start + room)
            parts.append(_Part(request, start, stop))
            request.taken = stop
            room -= stop - start
            if stop == len(request.texts):
                self._pending.popleft()
        return parts

    def _run(self, parts: list[_Part]) -> None:
        parts = [part for part in parts if part.request.live]
        if not parts:
            return
        texts = [text for part in parts for text in part.texts]
        started = time.perf_counter()
        try:
            vectors = self.model.embed(texts)
            if len(vectors) != len(texts):
                raise RuntimeError(
                    f"the model returned {len(vectors)} vectors for {len(texts)} texts"
                )
        except BaseException as error:  # handed to its caller, never lost
            if len(parts) == 1:
                parts[0].request.fail(error)
            else:  # whose input broke it? each part alone: only its request fails
                for part in parts:
                    self._run([part])
            return
        seconds = time.perf_counter() - started
        offset = 0
        for part in parts:
            part.request.answer(part.start, vectors[offset : offset + part.stop - part.start])
            offset += part.stop - part.start
        try:
            self._observer.observe_call(len(parts), len(texts), seconds)
        except Exception:  # the answers are out; a metrics failure only loses a sample
            logger.exception("could not record a shared embedding call")
