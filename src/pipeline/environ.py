"""Settings read from the environment, declared on the fields that hold them.

A settings group is a frozen Struct whose fields name their variable and its rule::

    pool_size: Annotated[int, Env("PIPELINE_DB_POOL_SIZE", minimum=1)] = 8

:func:`load` builds any such group from a mapping of environment variables; a field
whose type is itself a group is loaded the same way. A variable that is unset (or
blank) leaves the field's default, so each default is written once: on its field.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, get_args, get_origin

import msgspec

from pipeline.errors import PipelineError

MIN_SECRET_BYTES: Final = 16

GroupT = TypeVar("GroupT", bound=msgspec.Struct)


class SettingsError(PipelineError):
    """An environment variable holds a value the pipeline cannot use."""


class Rule(abc.ABC):
    """How one field is read from the environment."""

    @abc.abstractmethod
    def load(self, env: Mapping[str, str], kind: Any, default: Any) -> Any:
        """The value of a field of type ``kind``: from ``env``, else ``default``."""


@dataclass(frozen=True)
class Env(Rule):
    """One variable, read as the field's type says: text (unset or empty: the default),
    a flag, a whole number or a number of at least ``minimum``, one of a ``Literal``'s
    choices (any case)."""

    name: str
    minimum: int = 0

    def load(self, env: Mapping[str, str], kind: Any, default: Any) -> Any:
        raw = env.get(self.name)
        if kind is str or kind == str | None:
            return raw or default
        if raw is None or raw.strip() == "":
            return default
        if kind is bool:
            return self._flag(raw)
        if kind is int:
            return self._whole(raw)
        if kind is float:
            return self._number(raw)
        if get_origin(kind) is Literal:
            return self._choice(raw, get_args(kind), default)
        raise TypeError(f"{self.name}: no rule reads a {kind!r}")

    def _flag(self, raw: str) -> bool:
        value = raw.strip().lower()
        if value in ("1", "true", "yes"):
            return True
        if value in ("0", "false", "no"):
            return False
        raise SettingsError(f"{self.name} must be true or false, not {value!r}")

    def _whole(self, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{self.name} must be a whole number, not {raw!r}") from None
        if value < self.minimum:
            raise SettingsError(f"{self.name} must be at least {self.minimum}, not {value}")
        return value

    def _number(self, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{self.name} must be a number, not {raw!r}") from None
        if not value >= self.minimum or value == float("inf"):  # also refuses nan
            raise SettingsError(
                f"{self.name} must be a finite number of at least {self.minimum:g}, not {raw!r}"
            )
        return value

    def _choice(self, raw: str, choices: tuple[str, ...], default: str) -> str:
        value = raw.strip().lower() or default
        if value in choices:
            return value
        raise SettingsError(f"{self.name} must be one of {', '.join(choices)}, not {value!r}")


@dataclass(frozen=True)
class Seconds(Rule):
    """A duration given in seconds (positive; zero too where ``allow_zero``), held in
    whole milliseconds by an ``int`` field, in seconds to the millisecond by a ``float``."""

    name: str
    allow_zero: bool = False

    def load(self, env: Mapping[str, str], kind: Any, default: Any) -> Any:
        raw = env.get(self.name)
        if raw is None or raw.strip() == "":
            return default
        try:
            seconds = float(raw)
        except ValueError:
            raise SettingsError(f"{self.name} must be a number of seconds, not {raw!r}") from None
        if self.allow_zero and seconds == 0:
            milliseconds = 0
        elif seconds > 0:
            milliseconds = max(1, round(seconds * 1000))
        else:
            raise SettingsError(f"{self.name} must be positive, not {raw!r}")
        return milliseconds / 1000 if kind is float else milliseconds


@dataclass(frozen=True)
class Secret(Rule):
    """Text of at least 16 bytes, or unset: a shorter secret could be guessed."""

    name: str

    def load(self, env: Mapping[str, str], kind: Any, default: Any) -> Any:
        raw = env.get(self.name)
        if not raw:
            return default
        if len(raw.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(f"{self.name} must be at least {MIN_SECRET_BYTES} bytes long")
        return raw


def load(group: type[GroupT], env: Mapping[str, str]) -> GroupT:
    """``group`` with every field its rule reads from ``env``, nested groups included."""
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(group):
        rules = [rule for rule in getattr(field.type, "__metadata__", ()) if isinstance(rule, Rule)]
        if rules:
            (rule,) = rules
            default = (
                field.default_factory() if field.default is msgspec.NODEFAULT else field.default
            )
            values[field.name] = rule.load(env, get_args(field.type)[0], default)
        elif isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            values[field.name] = load(field.type, env)
        else:
            raise TypeError(f"{group.__name__}.{field.name} names no environment variable")
    return group(**values)
