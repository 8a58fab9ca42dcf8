"""What a stage does, split into load, compute and store.

``load`` reads the stage's input from Postgres, ``compute`` is the pure processing
function (no I/O, so it can run under a time limit or in a child process),
``summarize`` says in a few fields what it produced (for the ``succeeded`` event), and
``store`` writes the output inside the executor's completion transaction, after the
fenced success statement. ``store`` must *replace* earlier output, never append: a
stage re-run after a crash has to leave exactly the rows one run leaves.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


class StageHandler(Protocol[InputT, OutputT]):
    def load(self, conn: Connection, document_id: uuid.UUID) -> InputT:
        """Read the stage's input; runs in a read-only transaction."""
        ...

    def compute(self, data: InputT) -> OutputT:
        """Do the stage's work without I/O; raise a ``StageError`` to fail."""
        ...

    def summarize(self, result: OutputT) -> dict[str, Any]:
        """A short summary of the output for the event log (no I/O)."""
        ...

    def store(
        self, conn: Connection, document_id: uuid.UUID, generation: int, result: OutputT
    ) -> None:
        """Replace the stage's output."""
        ...


AnyHandler = StageHandler[Any, Any]
