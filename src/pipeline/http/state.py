"""What every request handler needs, built once per API process."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.access.console import ConsoleSessions
from pipeline.access.keys import Authenticator
from pipeline.access.rate_limit import RateLimiter
from pipeline.engine.dispatch import Dispatcher
from pipeline.events.hub import EventHub
from pipeline.ingestion.uploads import UploadService
from pipeline.lifecycle.deletion import DeletionService
from pipeline.operations.cancel import CancelService
from pipeline.operations.replay import ReplayService
from pipeline.operations.rerun import RerunService
from pipeline.operations.stage_controls import StageControls
from pipeline.queries.cursor_keys import CursorKeys
from pipeline.search.service import SearchService
from pipeline.settings import Settings
from pipeline.stages import Pipeline
from pipeline.webhooks.endpoints import WebhookEndpoints


@dataclass(frozen=True)
class ApiState:
    settings: Settings
    definition: Pipeline
    """The pipeline definition uploads are planned with."""
    engine: AsyncEngine
    dispatcher: Dispatcher
    uploads: UploadService
    sync_engine: Engine
    """For the operator services, which are synchronous (shared with the CLI and workers);
    handlers call them through ``anyio.to_thread``."""
    replay: ReplayService
    rerun: RerunService
    auth: Authenticator
    """Verifies API keys, with a short in-process cache."""
    limiter: RateLimiter
    """Per-key upload rate limits, in Redis."""
    search: SearchService
    """Lexical, semantic and hybrid search (holds the query embedder)."""
    cursors: CursorKeys
    """Signs and checks pagination cursors with the deployment's key."""
    events: EventHub
    """The process's one Postgres listener, fanned out to its event streams."""
    webhooks: WebhookEndpoints
    """Registers and shows the tenants' webhook endpoints (on the sync engine)."""
    deletion: DeletionService
    """Deletes documents (synchronous, like the operator services)."""
    console: ConsoleSessions
    """The operator console's sessions and sign-in links."""
    stage_controls: StageControls
    """Pauses and resumes stages (deployment-wide; synchronous)."""
    cancel: CancelService
    """Cancels documents (synchronous, like the operator services)."""
