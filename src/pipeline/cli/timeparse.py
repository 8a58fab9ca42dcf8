"""TIME values of the operator commands: ISO 8601 instants or spans before now.

``2026-11-21``, ``2026-11-21T06:00``, ``2026-11-21T06:00:00+01:00`` or ``...Z`` are
instants (naive ones are UTC); ``90s``, ``30m``, ``2h``, ``7d``, ``2w`` mean that long
before now. Either way the result is an aware datetime.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import click

_RELATIVE: Final = re.compile(r"(\d+)\s*([smhdw])", re.IGNORECASE)
_UNITS: Final = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
EXAMPLES: Final = "2026-11-21, 2026-11-21T06:00, 2026-11-21T06:00:00+01:00, 30m, 2h or 7d"


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """``value`` as an aware datetime; raises ``ValueError`` with a readable message."""
    text = value.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative is not None:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        try:
            span = amount * _UNITS[unit]
            return (now or datetime.now(UTC)) - span
        except OverflowError:
            raise ValueError(f"{value!r} reaches too far back") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time: use ISO 8601 or a span before now, such as {EXAMPLES}"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


if TYPE_CHECKING:
    _TimeType = click.ParamType[datetime]
else:  # click before 8.4 has no type parameters
    _TimeType = click.ParamType


class TimeParam(_TimeType):
    """A click parameter type for TIME values (see :func:`parse_time`)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        try:
            return parse_time(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


TIME: Final = TimeParam()
