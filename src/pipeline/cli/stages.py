"""``pipeline stages``: the active pipeline definition, as every process will run it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import msgspec

from pipeline.operations.common import Operator, RunContext
from pipeline.settings import Settings
from pipeline.stages import Pipeline, StagePolicy
from pipeline.stages.pipeline import is_stage_name
from pipeline.stages.spec import NAME_PATTERN
from pipeline.wiring import Wiring

if TYPE_CHECKING:
    _StrType = click.ParamType[str]
else:  # click before 8.4 has no type parameters
    _StrType = click.ParamType


class StageNameParam(_StrType):
    """A well-formed stage name (whether the definition has it is the command's to check)."""

    name = "stage"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value)
        if not is_stage_name(text):
            self.fail(f"{text!r} is not a stage name ({NAME_PATTERN.pattern})", param, ctx)
        return text


STAGE_NAME = StageNameParam()


class StageRow(msgspec.Struct, frozen=True):
    position: int
    name: str
    queue: str
    reads: list[str]
    writes: list[str]
    max_retries: int
    min_backoff_ms: int
    max_backoff_ms: int
    time_limit_ms: int
    description: str


class Definition(msgspec.Struct, frozen=True):
    reference: str
    version: str
    stages: list[StageRow]


def describe(reference: str, definition: Pipeline, policies: dict[str, StagePolicy]) -> Definition:
    return Definition(
        reference=reference,
        version=definition.version,
        stages=[
            StageRow(
                position=position,
                name=spec.name,
                queue=spec.name,
                reads=[artifact.name for artifact in spec.reads],
                writes=[artifact.name for artifact in spec.writes],
                max_retries=policies[spec.name].max_retries,
                min_backoff_ms=policies[spec.name].min_backoff_ms,
                max_backoff_ms=policies[spec.name].max_backoff_ms,
                time_limit_ms=policies[spec.name].time_limit_ms,
                description=spec.description,
            )
            for position, spec in enumerate(definition, start=1)
        ],
    )


def render(definition: Definition) -> str:
    header = ("#", "stage", "queue", "retries", "backoff", "time limit", "reads", "writes")
    rows = [
        (
            str(row.position),
            row.name,
            row.queue,
            str(row.max_retries),
            f"{_seconds(row.min_backoff_ms)} to {_seconds(row.max_backoff_ms)}",
            _seconds(row.time_limit_ms),
            ", ".join(row.reads),
            ", ".join(row.writes),
        )
        for row in definition.stages
    ]
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]
    lines = [f"pipeline {definition.version} ({definition.reference})", ""]
    for line in (header, *rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    lines.append("")
    lines.extend(f"{row.name}: {row.description}" for row in definition.stages if row.description)
    return "\n".join(line.rstrip() for line in lines)


def _seconds(ms: int) -> str:
    seconds = ms / 1000
    return f"{seconds:g}s"


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the definition as JSON.")
@click.pass_context
def stages(ctx: click.Context, as_json: bool) -> None:
    """The active pipeline definition: order, queues, policies, what each stage reads
    and writes (PIPELINE_DEFINITION, and PIPELINE_<STAGE>_… policy overrides)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings.from_env()
    wiring = Wiring(settings)
    described = describe(settings.stages.definition, wiring.definition, wiring.policies)
    if as_json:
        click.echo(msgspec.json.encode(described).decode())
    else:
        click.echo(render(described))


@stages.command()
@click.argument("name", type=STAGE_NAME)
@click.option("--reason", default=None, help="Why (kept in the audit trail and shown).")
def pause(name: str, reason: str | None) -> None:
    """Pause stage NAME for every document: no worker claims its rows until it is
    resumed (they wait, queued); work already running finishes."""
    state = Wiring(Settings.from_env()).stage_controls.pause(
        name, RunContext(operator=Operator.from_cli()), reason
    )
    click.echo(f"{state.stage}: paused by {state.paused_by}" + (f" ({reason})" if reason else ""))


@stages.command()
@click.argument("name", type=STAGE_NAME)
def resume(name: str) -> None:
    """Resume stage NAME: its waiting rows are sent to its workers at once (by the
    active reconciler)."""
    state = Wiring(Settings.from_env()).stage_controls.resume(
        name, RunContext(operator=Operator.from_cli())
    )
    click.echo(f"{state.stage}: {'paused' if state.paused else 'running'}")
