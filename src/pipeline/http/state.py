"""What every request handler needs, built once per API process."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.services.dispatch import Dispatcher
from pipeline.services.uploads import UploadService
from pipeline.settings import Settings


@dataclass(frozen=True)
class ApiState:
    settings: Settings
    engine: AsyncEngine
    dispatcher: Dispatcher
    uploads: UploadService
