"""What operator actions share: who asked, pacing, and the report of what happened.

Replay, discard and rerun run item by item, each item in its own transaction, so an
interrupted bulk action leaves every item either done or untouched, and the report
says which. A dry run goes through the same checks and writes nothing.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import msgspec

Action = Literal[
    "replayed",
    "would replay",
    "discarded",
    "would discard",
    "rerun",
    "would rerun",
    "imported",
    "would import",
    "skipped",
]


class Operator(msgspec.Struct, frozen=True):
    """Who asked for an action, as recorded in the audit trail."""

    name: str
    via: Literal["cli", "api"]

    @classmethod
    def from_cli(cls) -> Operator:
        try:
            user = getpass.getuser()
        except Exception:  # no login name in some containers
            user = "unknown"
        return cls(name=f"{user}@{socket.gethostname()}", via="cli")


class ItemOutcome(msgspec.Struct, frozen=True):
    id: uuid.UUID
    """The dead letter or document the action was about."""
    action: Action
    detail: str
    document_id: uuid.UUID | None = None
    stage: str | None = None
    message_id: str | None = None


class OperationReport(msgspec.Struct, frozen=True):
    dry_run: bool
    matched: int
    done: int
    skipped: int
    items: list[ItemOutcome]


Progress = Callable[[ItemOutcome], None]


def audit(operator: Operator, reason: str | None, selection: dict[str, Any]) -> dict[str, Any]:
    """The detail of an operator's event: who, through what, why, and what was selected."""
    return {"by": operator.name, "via": operator.via, "reason": reason, "selection": selection}


def report(dry_run: bool, items: list[ItemOutcome]) -> OperationReport:
    skipped = sum(item.action == "skipped" for item in items)
    return OperationReport(
        dry_run=dry_run,
        matched=len(items),
        done=len(items) - skipped,
        skipped=skipped,
        items=items,
    )


class Pacer:
    """Spaces sends at most ``rate`` per second (none: as fast as possible)."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self.sleep = sleep or time.sleep
        self.next_at: float | None = None

    def wait(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + self.interval
