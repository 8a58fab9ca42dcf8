"""Following documents through their stages from the event stream, and showing it.

:class:`Progress` folds stream events into each document's stage states (pure: no
I/O). Two views print it: in a terminal, one line redrawn in place with each stage's
count of documents done (and on it); elsewhere (a pipe, a CI log), one line per state
change, since a redrawn line would be noise there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, TextIO

from pipeline.client.stream import StreamEvent
from pipeline.filenames import for_terminal

STATE_OF: Final = {
    "queued": "queued",
    "claimed": "running",
    "retrying": "retrying",
    "succeeded": "succeeded",
    "dead": "dead",
}
"""A stage's state after each stage event."""
OUTCOMES: Final = {
    "document_succeeded": "succeeded",
    "document_failed": "failed",
    "document_deleted": "deleted",
}
WAITING: Final = frozenset({"queued", "running", "retrying"})


@dataclass
class Document:
    name: str
    stages: dict[str, str] = field(default_factory=dict)
    """Each stage seen so far, in plan order, with its state."""
    outcome: str | None = None
    reason: str | None = None


class Change(Protocol):
    def __call__(self, document: Document, event: StreamEvent) -> None: ...


class Progress:
    """The documents being followed, by id."""

    def __init__(self, names: dict[str, str]) -> None:
        self.documents = {document_id: Document(name) for document_id, name in names.items()}

    def apply(self, event: StreamEvent) -> Document | None:
        """Fold one event in; the document it changed (``None``: not one of ours)."""
        document = self.documents.get(event.document_id)
        if document is None:
            return None
        if event.event in OUTCOMES:
            document.outcome = OUTCOMES[event.event]
            reason = event.detail.get("reason")
            document.reason = str(reason) if reason else None
        elif event.stage is not None and event.event in STATE_OF:
            document.stages[event.stage] = STATE_OF[event.event]
        elif event.event in ("rerun", "replayed", "replaced"):
            document.outcome = None
        return document

    @property
    def finished(self) -> bool:
        return all(document.outcome is not None for document in self.documents.values())

    def count(self, outcome: str) -> int:
        return sum(document.outcome == outcome for document in self.documents.values())

    def stage_names(self) -> list[str]:
        names: list[str] = []
        for document in self.documents.values():
            names.extend(stage for stage in document.stages if stage not in names)
        return names

    def summary(self) -> str:
        """Each stage: documents done with it (and, in brackets, on it now)."""
        total = len(self.documents)
        cells = []
        for stage in self.stage_names():
            states = [document.stages.get(stage) for document in self.documents.values()]
            done = states.count("succeeded")
            busy = sum(state in WAITING for state in states)
            cells.append(f"{stage} {done}/{total}" + (f" (+{busy})" if busy else ""))
        finished = sum(document.outcome is not None for document in self.documents.values())
        return " | ".join([*cells, f"done {finished}/{total}"])


def describe(document: Document, event: StreamEvent) -> str:
    """One state change, as one line."""
    name = for_terminal(document.name)
    if event.event in OUTCOMES:
        reason = f": {for_terminal(document.reason)}" if document.reason else ""
        return f"{OUTCOMES[event.event]:9} {name}{reason}"
    attempt = f" (attempt {event.attempt})" if event.attempt and event.attempt > 1 else ""
    error = event.detail.get("error") or event.detail.get("reason")
    why = f": {for_terminal(str(error))}" if event.event in ("retrying", "dead") and error else ""
    state = STATE_OF.get(event.event, event.event)
    return f"{'':9} {name}  {event.stage or '-'} {state}{attempt}{why}"


class View:
    """Prints a :class:`Progress` as it changes.

    Outcomes (one line per document) go to ``out``: what a script reads. Progress goes
    to ``err``: in a terminal (``live``), one line rewritten in place; elsewhere, one
    line per state change. Both take raw text: this view writes the newlines.
    """

    def __init__(
        self,
        progress: Progress,
        out: Callable[[str], object],
        err: Callable[[str], object],
        *,
        live: bool,
    ) -> None:
        self.progress = progress
        self.out = out
        self.err = err
        self.live = live
        self._drawn = ""

    def changed(self, document: Document, event: StreamEvent) -> None:
        if event.event in OUTCOMES:
            self._clear()
            self.out(describe(document, event) + "\n")
        elif not self.live:
            self.err(describe(document, event) + "\n")
        if self.live:
            line = "progress: " + self.progress.summary()
            if line != self._drawn:
                self.err("\r\x1b[K" + line)
                self._drawn = line

    def _clear(self) -> None:
        if self._drawn:
            self.err("\r\x1b[K")
            self._drawn = ""

    def done(self) -> None:
        if self._drawn:
            self.err("\n")
            self._drawn = ""


def writer(stream: TextIO) -> Callable[[str], None]:
    """Raw, flushed writes to ``stream`` (for :class:`View`)."""

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


def follow(
    events: Iterable[StreamEvent | None],
    progress: Progress,
    on_change: Change,
    keep_going: Callable[[], bool],
) -> None:
    """Fold ``events`` into ``progress`` until every document finished or ``keep_going``
    says stop (checked at every event and keep-alive)."""
    for event in events:
        if event is not None:
            document = progress.apply(event)
            if document is not None:
                on_change(document, event)
        if progress.finished or not keep_going():
            return
