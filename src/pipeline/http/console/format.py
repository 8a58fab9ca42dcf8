"""Template filters: times, durations and structures as an operator reads them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec


def when(value: datetime | None) -> str:
    """UTC, to the second: the console shows every time in one zone."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.1f} s"


def seconds(value: float | None) -> str:
    return "—" if value is None else duration_ms(value * 1000)


def as_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


FILTERS: Final[dict[str, Callable[..., str]]] = {
    "when": when,
    "ms": duration_ms,
    "seconds": seconds,
    "json": as_json,
}
