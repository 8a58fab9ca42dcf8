"""What the operator commands (``replay``, ``rerun``) share.

Connecting (settings, engine, broker; their failures as one-line errors), id
parameters, confirmation of bulk actions, the progress bar, the per-item report
with its exit code, fixed-width tables and UTC timestamps. No pipeline logic lives
here: the commands call the services and hand their results to these helpers.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
import msgspec
import redis
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from pipeline.broker import PipelineRedisBroker, make_broker
from pipeline.db.engine import make_engine
from pipeline.operations.common import (
    DEFAULT_RATE,
    MAX_RATE,
    MIN_RATE,
    ItemOutcome,
    OperationReport,
    RunContext,
)
from pipeline.settings import Settings, SettingsError

ELLIPSIS: Final = "…"
R = TypeVar("R")

# -- connecting --------------------------------------------------------------------------


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


@contextmanager
def database(settings: Settings, command: str) -> Iterator[Engine]:
    """An engine for one command; a database that cannot be reached is a one-line error."""
    engine = make_engine(settings, application_name=f"pipeline-cli:{command}:{os.getpid()}")
    try:
        yield engine
    except OperationalError as error:
        raise click.ClickException(f"database error: {error.orig or error}") from None
    finally:
        engine.dispose()


@contextmanager
def broker_for(settings: Settings) -> Iterator[PipelineRedisBroker]:
    """The Redis broker the workers consume, closed when the command ends."""
    broker = make_broker(settings)
    try:
        yield broker
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise click.ClickException(f"Redis error: {error}") from None
    finally:
        broker.client.connection_pool.disconnect()


# -- parameters --------------------------------------------------------------------------


if TYPE_CHECKING:
    _UUIDType = click.ParamType[uuid.UUID]
else:  # click before 8.4 has no type parameters
    _UUIDType = click.ParamType


class IdParam(_UUIDType):
    """A UUID; anything else is a usage error naming the bad value."""

    name = "ID"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, uuid.UUID):
            return value
        try:
            return uuid.UUID(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a {self.what} (expected a full UUID)", param, ctx)


LETTER_ID: Final = IdParam("dead-letter id")
DOCUMENT_ID: Final = IdParam("document id")


def rate_option(noun: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--rate",
        type=click.FloatRange(min=MIN_RATE, max=MAX_RATE),  # what the pacer honours
        default=None,
        metavar="N",
        help=f"At most N {noun} per second (default: {DEFAULT_RATE:g}; raise it to go faster).",
    )


LIMIT_OPTION: Final = click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Act on at most N items (with a filter: the oldest first).",
)
DRY_RUN_OPTION: Final = click.option(
    "--dry-run", is_flag=True, help="Show what would happen to each item; change nothing."
)
REASON_OPTION: Final = click.option(
    "--reason", metavar="TEXT", default=None, help="Why, for the audit trail."
)
TENANT_OPTION: Final = click.option(
    "--tenant",
    default=None,
    metavar="TENANT",
    help="Only this tenant's documents (default: every tenant's; the CLI is not tenant-bound).",
)
YES_OPTION: Final = click.option(
    "--yes", "-y", is_flag=True, help="Do not ask for confirmation of a large selection."
)


# -- bulk actions ------------------------------------------------------------------------


def confirm_bulk(count: int, question: str, *, threshold: int, yes: bool, dry_run: bool) -> None:
    """Ask before acting on more than ``threshold`` items; no answer means no."""
    if dry_run or yes or count <= threshold:
        return
    try:
        answer = click.confirm(question, default=False, err=True)
    except click.Abort:  # end of input, or Ctrl-C at the prompt
        click.echo(err=True)
        answer = False
    if not answer:
        raise click.ClickException(
            f"aborted: nothing was changed ({count} items selected; "
            f"pass --yes to act on more than {threshold} without asking)"
        )


def run_with_progress(
    label: str,
    operate: Callable[[R, RunContext], OperationReport],
    request: R,
    run: RunContext,
) -> OperationReport:
    """Call ``operate(request, run)``, with ``run`` watched by a progress bar on stderr.

    Interrupted (Ctrl-C), it says how many items were handled: each item runs in its
    own transaction, so every item is either done or untouched.
    """
    handled: list[ItemOutcome] = []
    selected: list[int] = []
    with ExitStack() as stack:
        bars: list[Any] = []

        def on_selected(total: int) -> None:
            selected.append(total)
            if total > 0:
                bar = click.progressbar(
                    length=total,
                    label=label,
                    file=sys.stderr,
                    show_pos=True,
                    item_show_func=_item_id,
                )
                bars.append(stack.enter_context(bar))

        def progress(item: ItemOutcome) -> None:
            handled.append(item)
            if bars:
                bars[0].update(1, item)

        watched = msgspec.structs.replace(run, progress=progress, on_selected=on_selected)
        try:
            return operate(request, watched)
        except KeyboardInterrupt:
            stack.close()
            counts = Counter(item.action for item in handled)
            summary = ", ".join(f"{action} {count}" for action, count in counts.items())
            total = selected[0] if selected else "?"
            click.echo(
                f"\ninterrupted after {len(handled)} of {total} items"
                f"{': ' + summary if summary else ''}; the others were not touched",
                err=True,
            )
            raise click.exceptions.Exit(130) from None


def _item_id(item: ItemOutcome | None) -> str | None:
    return str(item.id) if item is not None else None


def finish(
    report: OperationReport,
    describe: Callable[[ItemOutcome], str],
    *,
    done: str,
    would: str,
) -> None:
    """Print the report; exit 1 if a real (not dry) run skipped or failed any item.

    A dry run prints every item; a real run prints the skipped and failed ones, with
    their reason (a failed item was left as it was: running the command again retries it).
    """
    for item in report.items:
        if report.dry_run or item.action in ("skipped", "failed"):
            click.echo(describe(item))
    failed = f", failed {report.failed}" if report.failed else ""
    if report.dry_run:
        click.echo(
            f"{would} {report.done}, skipped {report.skipped}{failed} (dry run: nothing changed)"
        )
        return
    click.echo(f"{done} {report.done}, skipped {report.skipped}{failed}")
    if report.skipped or report.failed:
        raise click.exceptions.Exit(1)


def describe_item(item: ItemOutcome, context: str) -> str:
    line = f"{item.action} {item.id}{context}"
    return f"{line}: {item.detail}" if item.action in ("skipped", "failed") else line


# -- formatting --------------------------------------------------------------------------


def utc(moment: datetime | None) -> str:
    """``2026-11-21T06:03:12Z``: UTC whatever the local zone, to the second."""
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def short(value: uuid.UUID | None) -> str:
    return str(value)[:8] if value is not None else "-"


def one_line(text: str) -> str:
    return " ".join(text.split())


def truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + ELLIPSIS if width > 0 else ""


def terminal_width() -> int:
    return shutil.get_terminal_size((160, 24)).columns


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    caps: Sequence[int | None],
    width: int,
    last_min: int = 20,
) -> list[str]:
    """Fixed-width columns, two spaces apart; the last column takes what ``width`` leaves."""
    cells = [[one_line(cell) for cell in row] for row in rows]
    widths = []
    for index, header in enumerate(headers):
        natural = max([len(header), *(len(row[index]) for row in cells)])
        cap = caps[index]
        widths.append(min(natural, cap) if cap is not None else natural)
    used = sum(widths[:-1]) + 2 * (len(headers) - 1)
    widths[-1] = min(widths[-1], max(last_min, width - used))
    lines = []
    for row in [list(headers), *cells]:
        fitted = [truncate(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(fitted).rstrip())
    return lines


def pretty_json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def echo_json(value: Any) -> None:
    """``value`` as JSON on one line, for scripts (``jq`` pretty-prints it)."""
    click.echo(msgspec.json.encode(value).decode())
