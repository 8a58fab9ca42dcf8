"""What operator actions share: who asked, pacing, and the report of what happened.

Replay, discard and rerun run item by item, each item in its own transaction, so an
interrupted bulk action leaves every item either done or untouched, and the report
says which: an item whose transaction fails (after a few tries, for errors a new
transaction may not meet) is reported ``failed`` and the action goes on with the next.
A dry run goes through the same checks, reads only, and writes and locks nothing.
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import msgspec
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from pipeline.db.retry import retry_database, worth_retrying
from pipeline.errors import PipelineError
from pipeline.statuses import ItemAction

logger = logging.getLogger(__name__)

DEFAULT_RATE: Final = 50.0
"""Items per second a replay or rerun sends when the operator names no rate: a bulk
action over thousands of documents must not flood the stage queues at once. An
operator who wants it faster says so (``rate``/``--rate``)."""
MIN_RATE: Final = 0.001
"""The slowest pace an action may ask for: one item every 1,000 s (under 17 minutes,
well inside a job's time limit). Far below it the pacer's waits stop being times a
clock or ``sleep`` can represent (``1e-300`` per second was reported to overflow
``time_t``; its wait of 1e300 s never shrinks by a heartbeat's step, either), and no
operator means them."""
MAX_RATE: Final = 10_000.0
"""The fastest: beyond it the database, not the pacer, sets the pace."""
ITEM_TRIES: Final = 3


class Operator(msgspec.Struct, frozen=True):
    """Who asked for an action, as recorded in the audit trail."""

    name: str
    via: Literal["cli", "api", "console"]

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
    action: ItemAction
    detail: str
    document_id: uuid.UUID | None = None
    stage: str | None = None
    message_id: str | None = None


class NotFound(ItemOutcome, frozen=True):
    """A skipped item that does not exist (another tenant's is, to a tenant, the same).

    Encoded exactly as an :class:`ItemOutcome`; its type lets a caller that asked for
    one item answer "not found" without reading the ``detail`` sentence."""


class OperationReport(msgspec.Struct, frozen=True):
    dry_run: bool
    matched: int
    done: int
    skipped: int
    items: list[ItemOutcome]
    failed: int = 0
    """Items that could not be carried out (each left as it was; retry them)."""


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


class Chooses(Protocol):
    """What a request selects: explicit ids, or every item a filter matches, up to ``limit``."""

    @property
    def ids(self) -> list[uuid.UUID] | None: ...
    @property
    def filter(self) -> TimeFilter | None: ...
    @property
    def limit(self) -> int | None: ...


def check_selection(request: Chooses) -> None:
    """Refuse a request that gives both ids and a filter, or neither, or a limit below 1."""
    if (request.ids is None) == (request.filter is None):
        raise ValueError("give either ids or a filter, not both and not neither")
    if request.limit is not None and request.limit < 1:
        raise ValueError("limit must be at least 1")


def describe_selection(request: Chooses) -> dict[str, Any]:
    """The selection as recorded in the audit trail."""
    if request.ids is not None:
        return {"ids": [str(item) for item in request.ids]}
    assert request.filter is not None
    return {"filter": request.filter.describe(), "limit": request.limit}


def audit(operator: Operator, reason: str | None, selection: dict[str, Any]) -> dict[str, Any]:
    """The detail of an operator's event: who, through what, why, and what was selected."""
    return {"by": operator.name, "via": operator.via, "reason": reason, "selection": selection}


def report(dry_run: bool, items: list[ItemOutcome]) -> OperationReport:
    skipped = sum(item.action == "skipped" for item in items)
    failed = sum(item.action == "failed" for item in items)
    return OperationReport(
        dry_run=dry_run,
        matched=len(items),
        done=len(items) - skipped - failed,
        skipped=skipped,
        failed=failed,
        items=items,
    )


def open_item(engine: Engine, dry_run: bool) -> AbstractContextManager[Connection]:
    """The connection one item runs on: a transaction, or for a dry run a connection
    that only reads (no row locks; rolled back on close)."""
    return engine.connect() if dry_run else engine.begin()


def carry_out(
    item_id: uuid.UUID,
    act: Callable[[uuid.UUID], ItemOutcome],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> ItemOutcome:
    """One item of a bulk action, in transactions of its own, never raising.

    An error a new transaction may not meet (a dropped connection, a lock timeout, a
    serialization failure) is tried again; if the item still cannot be done, it is
    reported ``failed`` — its transaction rolled back, so it is exactly as it was —
    and the caller goes on with the next item.
    """
    try:
        return retry_database(
            lambda: act(item_id),
            tries=ITEM_TRIES,
            what=f"operator action on {item_id}",
            pause_s=0.2,
            sleep=sleep,
        )
    except DBAPIError as error:
        logger.warning("operator action on %s failed: %s", item_id, error)
        reason = (
            "the database did not answer" if worth_retrying(error) else "the database refused it"
        )
        return ItemOutcome(
            id=item_id,
            action="failed",
            detail=f"not done ({reason}; nothing was changed for this item); retry it",
        )
    except Exception:
        logger.exception("operator action on %s failed", item_id)
        return ItemOutcome(
            id=item_id,
            action="failed",
            detail="not done (an internal error, logged by the service; nothing was "
            "changed for this item)",
        )


class InvalidRate(PipelineError):
    """A pace outside ``MIN_RATE``..``MAX_RATE`` items per second."""


def check_rate(rate: float | None) -> float:
    """The pace to use: ``rate`` if it is within bounds, the default if none is given."""
    if rate is None:
        return DEFAULT_RATE
    if not MIN_RATE <= rate <= MAX_RATE:  # also refuses NaN
        raise InvalidRate(
            f"the rate must be between {MIN_RATE:g} and {MAX_RATE:g} items per second, not {rate:g}"
        )
    return rate


class Heartbeat(Protocol):
    """Called at least every ``interval_s`` while a paced action waits: a job proves it
    is alive this way (and raises to stop, if it was marked failed meanwhile)."""

    interval_s: float

    def __call__(self) -> None: ...


class RunContext(msgspec.Struct, frozen=True, kw_only=True):
    """What an entry point adds to an operator's request: who asked, for which tenant
    (``None``: every tenant's items, the trusted CLI), and who watches the run.

    The CLI, the admin API and the job runner each build one and pass it, with the
    request itself, to the service: ``service.replay(request, run)``.
    """

    operator: Operator
    tenant: str | None = None
    progress: Progress | None = None
    """Called with each item's outcome, as soon as it is known."""
    on_selected: Callable[[int], None] | None = None
    """Called once with how many items the selection matched, before the first."""
    heartbeat: Heartbeat | None = None
    """Called while a paced run waits (see :class:`Heartbeat`)."""

    def selected(self, total: int) -> None:
        if self.on_selected is not None:
            self.on_selected(total)

    def handled(self, item: ItemOutcome) -> None:
        if self.progress is not None:
            self.progress(item)


class Pacer:
    """Spaces sends at most ``rate`` per second (none: the default rate; out of
    bounds: :class:`InvalidRate`, before anything is sent).

    While it waits, it calls ``heartbeat`` at least every ``heartbeat.interval_s``
    seconds, so a slow paced job does not look stalled.
    """

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        *,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.interval = 1.0 / check_rate(rate)
        self.clock = clock
        self.sleep = sleep or time.sleep
        self.next_at: float | None = None
        self.heartbeat = heartbeat

    def wait(self) -> None:
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            remaining = self.next_at - now
            while remaining > 0:
                step = min(remaining, self.heartbeat.interval_s) if self.heartbeat else remaining
                self.sleep(step)
                remaining -= step
                if self.heartbeat is not None:
                    # Also after the last step: the next item starts only if the job
                    # is still wanted.
                    self.heartbeat()
            now = self.next_at
        self.next_at = now + self.interval


def run_items(
    chosen: list[uuid.UUID],
    act: Callable[[uuid.UUID], ItemOutcome],
    run: RunContext,
    *,
    dry_run: bool,
    pacer: Pacer | None = None,
    sleep: Callable[[float], None] | None = None,
) -> OperationReport:
    """Carry out ``act`` on each chosen item in turn (paced by ``pacer``, unless a dry
    run), telling ``run`` what was selected and what happened to each item."""
    run.selected(len(chosen))
    items = []
    for item_id in chosen:
        if pacer is not None and not dry_run:
            pacer.wait()
        item = carry_out(item_id, act, sleep=sleep or time.sleep)
        items.append(item)
        run.handled(item)
    return report(dry_run, items)
