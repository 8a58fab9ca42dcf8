"""One listener per API process, fanned out to every stream it serves.

The hub holds one Postgres connection that ``LISTEN``s on ``pipeline_events`` (the
trigger on ``stage_events`` notifies it once per writing transaction) and one cursor.
On a notification, or shortly after a read that found an event still held back, it
reads what settled since its cursor (:mod:`pipeline.events.feed`) and offers each
event to the subscriptions it matches. A notification carries nothing: the table is
the truth, so a missed notification (the connection dropped, the hub restarted) only
delays events until the next read, which a periodic poll guarantees.

While no stream is open the hub reads nothing (a busy pipeline commits hundreds of
times a second); the first subscriber moves its cursor to the present, and the stream
reads its own history from the table up to there. Notifications that arrive close
together are served by one read.

Each subscription has a bounded queue. A subscriber that does not keep up (its queue
is full) is dropped: its stream ends, and the client resumes with ``Last-Event-ID``
from the table. Nothing is ever buffered without bound.

Streams per API key are counted here too (per process), so one key cannot hold every
connection of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.errors import PipelineError
from pipeline.events import feed
from pipeline.events.feed import Cursor, Routed
from pipeline.statuses import STREAMED_EVENT_NAMES

logger = logging.getLogger(__name__)

CHANNEL = "pipeline_events"
RECONNECT_S = 1.0


class TooManyStreams(PipelineError):
    """An API key already holds as many event streams as it may."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"this API key already has {limit} event streams open on this server "
            "(PIPELINE_EVENTS_MAX_STREAMS_PER_KEY); close one, or use GET /events for "
            "many documents at once"
        )


@dataclass(eq=False)
class Subscription:
    """What one stream wants, and the events waiting for it."""

    tenant: str
    events: frozenset[str]
    document_id: uuid.UUID | None
    queue: asyncio.Queue[Routed]
    overflowed: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, routed: Routed) -> bool:
        return (
            routed.tenant == self.tenant
            and routed.event.event in self.events
            and (self.document_id is None or routed.event.document_id == self.document_id)
        )

    def offer(self, routed: Routed) -> None:
        try:
            self.queue.put_nowait(routed)
        except asyncio.QueueFull:
            self.overflowed = True
            self.closed.set()

    async def next(self, timeout: float) -> Routed | None:
        """The next event, or ``None`` after ``timeout`` (time for a keep-alive)."""
        if self.overflowed:
            raise SubscriberTooSlow()
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.queue.get(), timeout)
        if self.overflowed:
            raise SubscriberTooSlow()
        return None


class SubscriberTooSlow(PipelineError):
    """The subscription's queue filled up: its stream ends (the client resumes)."""

    def __init__(self) -> None:
        super().__init__("the client fell too far behind its event stream")


class EventHub:
    """Listens once, serves many (start it in the app's lifespan)."""

    def __init__(
        self,
        engine: AsyncEngine,
        dsn: str,
        *,
        queue_size: int,
        max_streams_per_key: int,
        poll_s: float,
        held_poll_s: float = 0.05,
        coalesce_s: float = 0.02,
    ) -> None:
        self.engine = engine
        self.dsn = dsn
        self.queue_size = queue_size
        self.max_streams_per_key = max_streams_per_key
        self.poll_s = poll_s
        self.held_poll_s = held_poll_s
        self.coalesce_s = coalesce_s
        self.cursor: Cursor | None = None
        self._stale = True
        """No stream was open at the last read: the cursor must move to the present
        before the next one is served."""
        self.subscriptions: set[Subscription] = set()
        self.streams_by_key: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscription in list(self.subscriptions):
            subscription.closed.set()

    async def wait_listening(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    # -- subscriptions -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        *,
        key: str,
        tenant: str,
        events: Collection[str] = STREAMED_EVENT_NAMES,
        document_id: uuid.UUID | None = None,
    ) -> AsyncIterator[Subscription]:
        """A subscription for the duration of the block; refuses a key over its limit."""
        if self.streams_by_key.get(key, 0) >= self.max_streams_per_key:
            raise TooManyStreams(self.max_streams_per_key)
        if self._stale:
            async with self.engine.connect() as conn:
                present = await feed.present(conn)
            if self._stale:  # no read moved it meanwhile
                self.cursor, self._stale = present, False
        subscription = Subscription(
            tenant=tenant,
            events=frozenset(events),
            document_id=document_id,
            queue=asyncio.Queue(self.queue_size),
        )
        self.streams_by_key[key] = self.streams_by_key.get(key, 0) + 1
        self.subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self.subscriptions.discard(subscription)
            remaining = self.streams_by_key.get(key, 1) - 1
            if remaining:
                self.streams_by_key[key] = remaining
            else:
                self.streams_by_key.pop(key, None)

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning(
                    "event hub: lost its Postgres connection; reconnecting", exc_info=True
                )
                self._ready.clear()
                await asyncio.sleep(RECONNECT_S)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name="pipeline-api-events"
        ) as listener:
            await listener.execute(f"LISTEN {CHANNEL}")
            self._ready.set()
            held = await self._drain()  # what committed while it was not listening
            while True:
                timeout = self.held_poll_s if held else self.poll_s
                async for _ in listener.notifies(timeout=timeout, stop_after=1):
                    await asyncio.sleep(self.coalesce_s)  # let a burst gather
                held = await self._drain()

    async def _drain(self) -> bool:
        """Read and route everything settled since the cursor; whether some is held."""
        while True:
            if not self.subscriptions or self.cursor is None:
                self._stale = True
                return False
            async with self.engine.connect() as conn:
                batch = await feed.read(conn, self.cursor, STREAMED_EVENT_NAMES)
            for routed in batch.events:
                self.cursor = routed.cursor
                for subscription in list(self.subscriptions):
                    if subscription.matches(routed):
                        subscription.offer(routed)
            if len(batch.events) < 500 or batch.held:
                return batch.held
