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
from datetime import UTC, datetime
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


class TimeFilter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the operator filters: a time window, and the filter's audit form."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        # A time without an offset means UTC, whatever the database session's zone.
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                msgspec.structs.force_setattr(self, name, value.replace(tzinfo=UTC))

    def describe(self) -> dict[str, Any]:
        """The filter as recorded in the audit trail (only what was set)."""
        return {k: v for k, v in msgspec.to_builtins(self).items() if v is not None}


class Selection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Explicit ids, or every item a filter (defined by subclasses) matches, up to ``limit``."""

    ids: list[uuid.UUID] | None = None
    limit: int | None = None

    @property
    def chosen_filter(self) -> TimeFilter | None:
        found = getattr(self, "filter", None)
        return found if isinstance(found, TimeFilter) else None

    def __post_init__(self) -> None:
        if (self.ids is None) == (self.chosen_filter is None):
            raise ValueError("give either ids or a filter, not both and not neither")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be at least 1")

    def describe(self) -> dict[str, Any]:
        if self.ids is not None:
            return {"ids": [str(item) for item in self.ids]}
        assert self.chosen_filter is not None
        return {"filter": self.chosen_filter.describe(), "limit": self.limit}


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
