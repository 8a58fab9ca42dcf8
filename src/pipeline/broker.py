"""The Dramatiq broker: Redis, JSON via msgspec, explicit middleware.

Build the broker before declaring any actor: Dramatiq binds actors to the broker
that is current when they are declared.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import msgspec
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import DecodeError
from dramatiq.middleware import (
    AgeLimit,
    CurrentMessage,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from pipeline.settings import Settings

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(dict[str, Any])


class MsgspecJSONEncoder(dramatiq.Encoder):
    """Dramatiq's JSON format, encoded and decoded by msgspec (faster, strict UTF-8)."""

    def encode(self, data: dict[str, Any]) -> bytes:
        return _json_encoder.encode(data)

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            return _json_decoder.decode(data)
        except msgspec.DecodeError as error:
            raise DecodeError(  # type: ignore[no-untyped-call]
                f"undecodable message {data[:200]!r}", data, error
            ) from None


def make_broker(settings: Settings) -> RedisBroker:
    """A Redis broker with the middleware every stage actor relies on.

    Retries and TimeLimit carry defaults here; each actor overrides them with its
    own stage policy (``max_retries``, ``min_backoff``, ``max_backoff``, ``time_limit``).
    """
    dramatiq.set_encoder(MsgspecJSONEncoder())
    middleware = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Retries(),
        CurrentMessage(),
    ]
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        url=settings.redis_url,
        namespace=settings.redis_namespace,
        middleware=middleware,
    )
    dramatiq.set_broker(broker)
    return broker
