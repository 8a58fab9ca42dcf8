"""One line, not a traceback, when the environment is at fault.

A command that cannot reach Postgres, Redis or the API, or that finds a setting it
cannot use, says so in one sentence and exits 1; a traceback is for bugs.
"""

from __future__ import annotations

from typing import Any

import click

from pipeline.errors import PipelineError
from pipeline.settings import SettingsError


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text[0] if text else type(error).__name__


class PipelineGroup(click.Group):
    """A click group whose commands report environment failures as one-line errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            raise click.ClickException(f"configuration: {error}") from None
        except PipelineError as error:  # e.g. an invalid pipeline definition, a model file
            raise click.ClickException(error.reason) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: a usage error, an exit code (no client library to import)
        except Exception as error:
            message = _unreachable(error)
            if message is None:
                raise
            raise click.ClickException(message) from None


def _unreachable(error: Exception) -> str | None:
    """One line for a server that cannot be reached, else ``None`` (not ours to say).

    The client libraries are imported here, when a command failed, not on every start.
    """
    import httpx
    import redis
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(error, (OperationalError, InterfaceError)):
        return f"cannot reach Postgres (DATABASE_URL): {_first_line(error)}"
    if isinstance(error, redis.ConnectionError):
        return f"cannot reach Redis (REDIS_URL): {_first_line(error)}"
    if isinstance(error, httpx.TransportError):
        url = error.request.url if error.request else "the API"
        return f"cannot reach {url}: {_first_line(error)}"
    return None
