"""Reading server-sent event streams in tests, over real HTTP connections."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipeline.client import stream


@dataclass
class Message:
    event: str | None = None
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def body(self) -> dict[str, Any]:
        return dict(json.loads(self.data))


def messages(response: httpx.Response) -> Iterator[Message]:
    """The stream's messages (comments too, as messages without data), as they arrive
    (parsed by the client the CLI uses)."""
    for message in stream.messages(response.iter_lines()):
        yield Message(message.event, message.id, message.data, list(message.comments))


class Listener:
    """Reads one stream in a thread, so a test can act while it listens."""

    def __init__(
        self,
        client: httpx.Client,
        path: str,
        headers: dict[str, str],
        params: dict[str, Any] | None = None,
    ) -> None:
        self.received: queue.Queue[Message | None] = queue.Queue()
        self.status: int | None = None
        self.opened = threading.Event()
        self.ended = threading.Event()
        self._client = client
        self._request = (path, headers, params)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        path, headers, params = self._request
        try:
            with self._client.stream("GET", path, headers=headers, params=params) as response:
                self.status = response.status_code
                if response.status_code != 200:
                    self.opened.set()
                    return
                for message in messages(response):
                    if "stream open" in message.comments:
                        self.opened.set()
                    self.received.put(message)
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.ended.set()
            self.received.put(None)

    def events(self, count: int | None = None, timeout: float = 30.0) -> list[Message]:
        """Event messages (not comments) until ``count`` of them, or the stream's end."""
        found: list[Message] = []
        while count is None or len(found) < count:
            message = self.received.get(timeout=timeout)
            if message is None:
                break
            if message.event is not None:
                found.append(message)
        return found
