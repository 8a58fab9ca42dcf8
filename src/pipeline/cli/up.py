"""``pipeline up`` and ``pipeline demo``: the whole pipeline on one machine."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from pipeline.cli.console import sign_in_link
from pipeline.db.engine import make_engine
from pipeline.local.demo import DEMO_QUERY, run_demo
from pipeline.local.stack import LocalStack, StackInfo, StackOptions
from pipeline.settings import Settings

_data_dir = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".pipeline"),
    show_default=True,
    help="Where embedded Postgres and Redis keep their files.",
)
_host = click.option("--host", default="127.0.0.1", show_default=True)
_port = click.option("--port", default=8000, show_default=True, type=int)
_threads = click.option(
    "--threads",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Threads per stage worker.",
)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


_no_auth = click.option(
    "--no-auth",
    is_flag=True,
    help="Switch authentication off (PIPELINE_AUTH=disabled): every request acts as "
    "tenant 'default' with every scope. Only on a machine nobody else can reach.",
)


def _link(info: StackInfo) -> str:
    """A one-time sign-in link for the local key (the key itself stays out of URLs)."""
    assert info.api_key is not None
    settings = Settings.from_env({"DATABASE_URL": info.database_url})
    engine = make_engine(settings, application_name="pipeline-up")
    try:
        return sign_in_link(
            engine, info.api_key[:15], info.api_url, settings.console.link_ms / 1000
        )
    except Exception as error:  # the link is a convenience: the key signs in too
        return f"no link ({error})"
    finally:
        engine.dispose()


def _announce(info: StackInfo) -> None:
    where = {True: "embedded", False: "from the environment"}
    click.echo(f"pipeline is up: API {info.api_url}  (docs {info.api_url}/schema/swagger)")
    click.echo(f"  Postgres ({where[info.embedded_postgres]}): {info.database_url}")
    click.echo(f"  Redis    ({where[info.embedded_redis]}): {info.redis_url}")
    if info.api_key is None:
        click.secho(
            "  WARNING: authentication is DISABLED (PIPELINE_AUTH=disabled): anyone who can "
            f"reach {info.api_url} can upload, read and operate as tenant 'default'",
            fg="red",
            bold=True,
        )
        return
    click.echo(f"  API key  (tenant default, every scope): {info.api_key}")
    click.echo(f"  Console  {info.api_url}/console  (sign in with the key, or: {_link(info)})")
    click.echo(
        f"           also in {info.key_file}: "
        f'curl -H "Authorization: Bearer $(cat {info.key_file})" {info.api_url}/documents'
    )


@click.command()
@_data_dir
@_host
@_port
@click.option("--processes-per-stage", default=1, show_default=True, type=click.IntRange(min=1))
@_threads
@_no_auth
def up(
    data_dir: Path, host: str, port: int, processes_per_stage: int, threads: int, no_auth: bool
) -> None:
    """Run the API, a worker group per stage and the reconciler, supervised.

    Without DATABASE_URL / REDIS_URL, starts embedded Postgres and Redis in DATA_DIR.
    Prints an API key (tenant default, every scope), also written to DATA_DIR/api-key.
    A child that dies is restarted; Ctrl-C or SIGTERM stops everything cleanly.
    """
    options = StackOptions(
        data_dir=data_dir,
        host=host,
        port=port,
        processes_per_stage=processes_per_stage,
        threads=threads,
        auth=not no_auth,
    )
    stack = LocalStack(options, echo=click.echo)
    stop = _stop_on_signals()
    info = stack.start()
    _announce(info)
    stack.run(stop)
    click.echo("pipeline stopped")


@click.command()
@_data_dir
@_host
@click.option("--port", default=8000, show_default=True, type=int)
@_threads
@click.option("--keep", is_flag=True, help="Stay up after the demo (Ctrl-C to stop).")
@click.option(
    "--query",
    default=DEMO_QUERY,
    show_default=True,
    help="What to search for.",
)
@_no_auth
def demo(
    data_dir: Path, host: str, port: int, threads: int, keep: bool, query: str, no_auth: bool
) -> None:
    """Start everything, ingest the bundled samples (every supported type), search them."""
    options = StackOptions(
        data_dir=data_dir, host=host, port=port, threads=threads, auth=not no_auth
    )
    quiet: list[str] = []
    stack = LocalStack(options, echo=quiet.append)  # child logs stay out of the demo's output
    stop = _stop_on_signals()
    info = stack.start()
    try:
        _announce(info)
        stack.wait_ready(info.api_url)
        summary = run_demo(info.api_url, click.echo, query=query, api_key=info.api_key)
        click.echo(
            f"\n{summary.succeeded} of {summary.documents} documents succeeded "
            f"({summary.failed} failed) in {summary.seconds:g} s; "
            f'{summary.search_hits} hit(s) for "{summary.search_query}"'
        )
        if keep:
            click.echo("staying up (--keep); Ctrl-C to stop")
            if stack.supervisor is not None:
                stack.supervisor.echo = click.echo  # from now on, show the children's logs
            stack.run(stop)
    finally:
        stack.stop()
    if summary.failed:
        raise SystemExit(1)
