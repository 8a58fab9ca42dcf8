"""Model calls shared by every thread of a process: documents in flight share batches.

Without it each embed attempt calls the model with its own batches (four or five
chunks for a small document), from its own Dramatiq thread: the model runs as many
calls at once as there are threads, each thread's onnxruntime arena keeps its own
high-water mark (4 threads at batch 16 held 1.4 GiB), and while a thread loads its
chunks or commits its vectors its share of the model is idle.

:class:`SharedBatches` puts an :class:`~pipeline.embedding.base.Embedder` behind a
queue served by ``callers`` inference threads (one by default). ``embed(texts)`` from
any thread queues a request and waits for its vectors; an inference thread takes the
oldest request and, with it, every request queued behind it up to ``max_texts`` texts,
and makes one model call of them all. Nothing waits to fill a batch: a request that
finds the model idle is run at once, so one document alone is not slowed down;
requests pile up only while the model is busy, which is exactly when sharing a call
pays. So:

* the model runs ``callers`` calls at once whatever the number of Dramatiq threads:
  an embed worker can run many threads, whose database work overlaps the model's,
  with the memory of ``callers`` arenas;
* every attempt still fences, reports progress and fails on its own: the batcher
  only computes. Each request gets exactly its own vectors back, in order. A shared
  call that raises is run again request by request, so an input that breaks the model
  fails only the attempt it came from;
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
from typing import Final, Protocol

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
    __slots__ = ("abandoned", "done", "error", "texts", "vectors")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: list[list[float]] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.abandoned = False

    def succeed(self, vectors: list[list[float]]) -> None:
        self.vectors = vectors
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


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
        assert request.vectors is not None
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
                batch = self._take()
            try:
                self._run(batch)
            except BaseException as error:
                logger.exception("shared embedding call failed unexpectedly")
                for request in batch:
                    if not request.done.is_set():
                        request.fail(error)

    def _take(self) -> list[_Request]:
        """The oldest live request and those behind it, up to ``max_texts`` texts.

        The first request is taken whole even when it alone is larger: it is the
        caller's batch (``PIPELINE_EMBED_BATCH_SIZE``), and splitting it would only
        add calls.
        """
        batch: list[_Request] = []
        texts = 0
        while self._pending:
            request = self._pending[0]
            if request.abandoned:
                self._pending.popleft()
                continue
            if batch and texts + len(request.texts) > self.max_texts:
                break
            self._pending.popleft()
            batch.append(request)
            texts += len(request.texts)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        started = time.perf_counter()
        try:
            vectors = self.model.embed(texts)
            if len(vectors) != len(texts):
                raise RuntimeError(
                    f"the model returned {len(vectors)} vectors for {len(texts)} texts"
                )
        except BaseException as error:
            if len(batch) == 1:
                batch[0].fail(error)
            else:  # whose input broke it? each request alone: only that one fails
                for request in batch:
                    self._run([request])
            return
        seconds = time.perf_counter() - started
        offset = 0
        for request in batch:
            request.succeed(vectors[offset : offset + len(request.texts)])
            offset += len(request.texts)
        try:
            self._observer.observe_call(len(batch), len(texts), seconds)
        except Exception:  # the answers are out; a metrics failure only loses a sample
            logger.exception("could not record a shared embedding call")
