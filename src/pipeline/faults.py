"""Fault injection for tests of the failure model: off unless switched on on purpose.

Faults are read from ``PIPELINE_FAULTS`` (a JSON list of :class:`FaultSpec`) and
only when ``PIPELINE_FAULT_INJECTION`` is exactly ``enabled-for-testing``; setting
``PIPELINE_FAULTS`` without that switch is a startup error, so a stray variable in a
production environment stops the process instead of silently breaking documents.

Faults are keyed on attempt numbers rather than counters so that they behave the same
in every process: "fail the first two attempts" needs no shared state.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from typing import Final, NoReturn

import msgspec

from pipeline.errors import PermanentError, TransientError
from pipeline.stages.spec import StageName

logger = logging.getLogger(__name__)

ENABLE_VALUE: Final = "enabled-for-testing"


class FaultSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What to break, for documents whose filename matches ``match``."""

    stage: StageName
    """A stage, or ``upload`` for the API's send of the first message."""
    match: str = "*"
    sleep_s: float = 0.0
    """Sleep this long (in Python, so a soft time limit can interrupt it)..."""
    sleep_attempts: int = 1
    """...on attempts up to this number."""
    transient_attempts: int = 0
    """Raise a transient error on attempts up to this number."""
    permanent: bool = False
    """Raise a permanent error on every attempt."""
    hang_parser: bool = False
    """Make the sandboxed parser never return (tests the hard time limit)."""
    drop_send: bool = False
    """Do not send the message that follows this stage (tests lost sends)."""

    def applies(self, stage: str, filename: str) -> bool:
        return stage == self.stage and fnmatch.fnmatchcase(filename, self.match)


class Faults:
    """The faults in force; an empty instance (the default) does nothing."""

    def __init__(self, specs: tuple[FaultSpec, ...] = ()) -> None:
        self.specs = specs
        if specs:
            logger.warning("FAULT INJECTION IS ON: %d fault(s) will break documents", len(specs))

    def __bool__(self) -> bool:
        return bool(self.specs)

    def _matching(self, stage: str, filename: str) -> list[FaultSpec]:
        return [spec for spec in self.specs if spec.applies(stage, filename)]

    def touches(self, stage: str, filename: str) -> bool:
        """Whether any fault is aimed at this stage for this file (it is then never
        skipped: the fault must fire)."""
        return bool(self._matching(stage, filename))

    def before_compute(self, stage: str, filename: str, attempt: int) -> None:
        for spec in self._matching(stage, filename):
            if spec.sleep_s and attempt <= spec.sleep_attempts:
                deadline = time.monotonic() + spec.sleep_s
                while time.monotonic() < deadline:
                    time.sleep(0.05)
            if spec.permanent:
                raise PermanentError("injected permanent fault")
            if attempt <= spec.transient_attempts:
                raise TransientError(f"injected transient fault (attempt {attempt})")

    def slows(self, stage: str, filename: str) -> bool:
        """Whether a first attempt of ``stage`` sleeps here: such a stage is not short, so
        it claims before it works (and shows as ``running``, as a slow stage does)."""
        return any(spec.sleep_s > 0 for spec in self._matching(stage, filename))

    def hang_parser(self, stage: str, filename: str) -> bool:
        return any(spec.hang_parser for spec in self._matching(stage, filename))

    def drop_send(self, stage: str, filename: str) -> bool:
        return any(spec.drop_send for spec in self._matching(stage, filename))


def parse_faults(raw: str | None, switch: str | None) -> tuple[FaultSpec, ...]:
    """Parse ``PIPELINE_FAULTS``; raises ``ValueError`` unless deliberately enabled."""
    if not raw:
        return ()
    if switch != ENABLE_VALUE:
        raise ValueError(
            "PIPELINE_FAULTS is set but fault injection is not enabled; set "
            f"PIPELINE_FAULT_INJECTION={ENABLE_VALUE} (tests only) or unset PIPELINE_FAULTS"
        )
    try:
        return msgspec.json.decode(raw, type=tuple[FaultSpec, ...])
    except msgspec.DecodeError as error:
        raise ValueError(f"PIPELINE_FAULTS is not a valid list of faults: {error}") from None


def never_returns(*args: object) -> NoReturn:
    """Sleep in C forever: stands in for a hung parser (run in the sandbox, which kills it)."""
    while True:
        time.sleep(10**9)
