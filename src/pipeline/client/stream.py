"""Reading a server-sent event stream of the API, resuming it when it drops.

:func:`messages` parses the wire format (the parts the API sends: ``event``, ``id``,
``data``, ``retry`` and comments). :class:`EventStream` holds one stream open and, when
the connection ends early (the server restarted, a proxy cut it, this client was too
slow and was dropped), opens it again with ``Last-Event-ID``, so its reader sees every
event once, in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec

from pipeline.errors import PipelineError

OPENED = "stream open"
"""The comment the API sends once a stream is subscribed: events from here on are kept."""
RECONNECT_S = 1.0


class StreamEvent(msgspec.Struct, frozen=True):
    """The ``data`` of one event (see ``pipeline.events.feed.FeedEvent``)."""

    id: str
    event: str
    document_id: str
    stage: str | None
    generation: int
    attempt: int | None
    at: str
    detail: dict[str, Any]


class Message(msgspec.Struct):
    event: str | None = None
    id: str | None = None
    data: str = ""
    comments: list[str] = msgspec.field(default_factory=list)


def messages(lines: Iterator[str]) -> Iterator[Message]:
    """The messages of a stream, as each one ends (comments included)."""
    current = Message()
    for line in lines:
        if line == "":
            if current.data or current.comments or current.event:
                yield current
            current = Message()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            current.comments.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "data":
            current.data = f"{current.data}\n{value}" if current.data else value
    if current.data or current.comments:
        yield current


class StreamRefused(PipelineError):
    """The API answered the stream with an error (not a dropped connection)."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        try:
            detail = str(response.json().get("detail", response.text))
        except ValueError:
            detail = response.text
        super().__init__(f"{response.status_code}: {detail}")


class EventStream:
    """One stream of the API (``path``), opened at once and resumed when it drops.

    Iterating yields each event once, in order; keep-alive comments yield ``None``
    (a chance to check a deadline). ``close()`` ends it.
    """

    def __init__(
        self, client: httpx.Client, path: str, params: dict[str, str] | None = None
    ) -> None:
        self.client = client
        self.path = path
        self.params = params
        self.last_id: str | None = None
        self._response: httpx.Response | None = None
        self._messages: Iterator[Message] | None = None
        self._open()

    def _open(self) -> None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        request = self.client.build_request("GET", self.path, params=self.params, headers=headers)
        response = self.client.send(request, stream=True)
        if response.status_code != 200:
            response.read()
            response.close()
            raise StreamRefused(response)
        self._response = response
        self._messages = messages(response.iter_lines())
        for message in self._messages:  # wait until the server has subscribed
            if OPENED in message.comments:
                return
        raise httpx.RemoteProtocolError("the stream ended before it opened")

    def __iter__(self) -> Iterator[StreamEvent | None]:
        while True:
            assert self._messages is not None
            try:
                for message in self._messages:
                    if message.event is None:
                        yield None
                        continue
                    event = msgspec.json.decode(message.data, type=StreamEvent)
                    self.last_id = message.id or event.id
                    yield event
            except httpx.TransportError:
                pass  # dropped: resume below
            self.close()
            time.sleep(RECONNECT_S)
            self._reopen()

    def _reopen(self) -> None:
        while True:
            try:
                self._open()
                return
            except httpx.TransportError:
                time.sleep(RECONNECT_S)

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
