"""One HTTP attempt at a webhook: pinned, bounded, without redirects.

The request goes through :class:`~pipeline.webhooks.destinations.GuardedBackend` (every
connection resolves, checks and pins its address), follows no redirect (a ``3xx`` is
a failed attempt: a receiver that moved must be registered anew), ignores proxy
variables, keeps no connection alive between deliveries, and gives up after
``timeout`` seconds in all (connecting, sending, waiting and reading). At most
``max_response_bytes`` of the answer are read; an excerpt is kept with the attempt.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Final

import httpcore
import httpx
import msgspec

from pipeline.webhooks.destinations import (
    DestinationRefused,
    GuardedBackend,
    Resolver,
    check_url,
)
from pipeline.webhooks.destinations import system_resolver as default_resolver

EXCERPT_CHARS: Final = 500
USER_AGENT: Final = "pipeline-webhooks/1"


class AttemptResult(msgspec.Struct, frozen=True):
    """What one attempt got back (``status_code`` None: no answer)."""

    status_code: int | None
    latency_ms: int
    error: str | None = None
    """Why it failed, in a sentence (None: a 2xx)."""
    retry_after_s: float | None = None
    """What the receiver's ``Retry-After`` asked for, in seconds."""
    refused: bool = False
    """The destination may not be called (an internal address): retrying cannot help."""
    excerpt: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date (None: absent or
    unreadable; a date in the past is 0)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose network backend is guarded.

    httpx does not let a caller choose httpcore's network backend, so the pool it
    built is replaced by the same pool with :class:`GuardedBackend` (and no keep-alive:
    deliveries go to many hosts, rarely twice in a row).
    """

    def __init__(self, *, allow_private: bool, resolver: Resolver) -> None:
        super().__init__(trust_env=False, retries=0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=0,
            retries=0,
            network_backend=GuardedBackend(allow_private=allow_private, resolver=resolver),
        )


class WebhookSender:
    def __init__(
        self,
        *,
        timeout_s: float,
        max_response_bytes: int,
        allow_private: bool,
        resolver: Resolver = default_resolver,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.allow_private = allow_private
        self.client = httpx.Client(
            transport=PinnedTransport(allow_private=allow_private, resolver=resolver),
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s),
            trust_env=False,
            headers={"user-agent": USER_AGENT},
        )

    def post(self, url: str, headers: dict[str, str], body: bytes) -> AttemptResult:
        started = time.monotonic()
        deadline = started + self.timeout_s

        def elapsed() -> int:
            return round((time.monotonic() - started) * 1000)

        sent = {**headers, "content-type": "application/json"}
        try:
            check_url(url, allow_private=self.allow_private)
            with self.client.stream("POST", url, content=body, headers=sent) as response:
                excerpt = self._read(response, deadline)
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"))
        except DestinationRefused as error:
            return AttemptResult(None, elapsed(), error.reason, refused=True)
        except httpx.TimeoutException:
            return AttemptResult(None, elapsed(), f"timed out after {self.timeout_s:g} s")
        except httpx.HTTPError as error:
            return AttemptResult(None, elapsed(), f"{type(error).__name__}: {error}"[:500])
        except TimeoutError:
            return AttemptResult(None, elapsed(), f"timed out after {self.timeout_s:g} s")
        latency = elapsed()
        if 200 <= status < 300:
            return AttemptResult(status, latency, None, retry_after, excerpt=excerpt)
        if 300 <= status < 400:
            why = f"answered {status} (redirects are not followed; register the new URL)"
        else:
            why = f"answered {status}"
        return AttemptResult(status, latency, why, retry_after, excerpt=excerpt)

    def _read(self, response: httpx.Response, deadline: float) -> str:
        """Up to ``max_response_bytes`` of the body, within the attempt's deadline."""
        received = bytearray()
        for chunk in response.iter_raw():
            received += chunk
            if len(received) >= self.max_response_bytes:
                break
            if time.monotonic() > deadline:
                raise TimeoutError
        return bytes(received[: self.max_response_bytes])[:EXCERPT_CHARS].decode(
            "utf-8", errors="replace"
        )

    def close(self) -> None:
        self.client.close()
