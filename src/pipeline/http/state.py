"""What every request handler needs, built once per API process."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.services.dispatch import Dispatcher
from pipeline.services.replay import ReplayService
from pipeline.services.rerun import RerunService
from pipeline.services.uploads import UploadService
from pipeline.settings import Settings


@dataclass(frozen=True)
class ApiState:
    settings: Settings
    engine: AsyncEngine
    dispatcher: Dispatcher
    uploads: UploadService
    sync_engine: Engine
    """For the operator services, which are synchronous (shared with the CLI and workers);
    handlers call them through ``anyio.to_thread``."""
    replay: ReplayService
    rerun: RerunService
