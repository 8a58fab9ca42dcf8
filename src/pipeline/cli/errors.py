"""One line, not a traceback, when the environment is at fault.

A command that cannot reach Postgres, Redis or the API, or that finds a setting it
cannot use, says so in one sentence and exits 1; a traceback is for bugs.
"""

from __future__ import annotations

from typing import Any

import click
import httpx
import redis
from sqlalchemy.exc import InterfaceError, OperationalError

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
        except (OperationalError, InterfaceError) as error:
            raise click.ClickException(
                f"cannot reach Postgres (DATABASE_URL): {_first_line(error)}"
            ) from None
        except redis.ConnectionError as error:
            raise click.ClickException(
                f"cannot reach Redis (REDIS_URL): {_first_line(error)}"
            ) from None
        except httpx.TransportError as error:
            url = error.request.url if error.request else "the API"
            raise click.ClickException(f"cannot reach {url}: {_first_line(error)}") from None
