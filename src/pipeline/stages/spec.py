"""What a stage is: its name, the artifacts it reads and writes, its policy, its work.

A stage's work is a pure function from its inputs to its outputs: ``compute(inputs)``
returns ``Outputs``, with one value for every artifact the stage writes. The engine
loads the inputs from Postgres before the call and stores the outputs after it, in the
transaction that records the stage's success; the function itself does no I/O, so it
can run under a time limit, in a child process, or in a unit test on fixtures.

A stage that needs settings, a model or the sandbox gets them when it is *built*: its
``build(context)`` returns the compute function. A stage that needs nothing passes
``compute=`` directly.

A stage that has nothing to do for many documents (OCR, for a document with a text
layer) can say so ahead of time: ``skip(context)`` builds a predicate on its inputs,
run when the stage before it completes, in that completion's transaction. When it is
true the stage is claimed and completed there and then (its events say ``skipped``),
and the document goes straight on to the stage after it: one hop, one message and one
claim fewer. The predicate must be exactly "compute would give its inputs back
unchanged and write nothing", pure and cheap (it runs on the previous stage's worker),
and read only small inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Final, Generic, Protocol, TypeVar

import msgspec

if TYPE_CHECKING:
    from pipeline.faults import Faults
    from pipeline.settings import Settings

T = TypeVar("T")

NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
"""Stage and artifact names: lower-case words joined by ``_``, at most 32 characters.
A stage's name is also its queue's, its actor's and its settings' (``PIPELINE_<NAME>_…``)."""

StageName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN.pattern, max_length=32)]
"""A stage's name where it arrives from outside (messages, HTTP bodies): well-formed,
though whether the active definition has it is checked where it is used."""


class StagePolicy(msgspec.Struct, frozen=True):
    """How a stage's attempts are retried and limited.

    ``max_retries`` counts re-deliveries after the first attempt, so a stage runs at
    most ``max_retries + 1`` times. Backoffs are Dramatiq's: exponential from
    ``min_backoff_ms``, capped at ``max_backoff_ms``, with jitter.
    """

    max_retries: int = 5
    min_backoff_ms: int = 1_000
    max_backoff_ms: int = 300_000
    time_limit_ms: int = 30_000
    claim_first: bool = True
    """Claim the row (``running``, attempt counted) before the work, and complete it after:
    two transactions, so that a long stage shows as ``running`` with its progress, and a
    stage that kills its worker is counted each time (crash loops end in ``dead``).
    ``False`` suits short stages that only compute on their input in Python: they load,
    compute, and claim and complete in one statement (``CLAIM_AND_SUCCEED_SQL``), half
    the writes; a failure still claims first and is recorded as before, and so does
    any delivery that is not a row's first (a retry, a redelivery after a crash)."""

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1


@dataclass(frozen=True)
class Artifact(Generic[T]):
    """A named output one stage writes and later stages read (``text``, ``chunks``, …).

    ``type`` is what the value is: a msgspec Struct (or anything msgspec encodes),
    stored by the engine as MessagePack unless the engine has a table for it.
    """

    name: str
    type: type[T]
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"artifact name {self.name!r} must match {NAME_PATTERN.pattern}")

    def __repr__(self) -> str:
        return f"Artifact({self.name!r})"


class Inputs:
    """The artifacts a stage reads, by artifact: ``inputs[TEXT]`` is the extracted text.

    The engine hands them over *lazily*: each is loaded when the compute function first
    asks for it, so a stage that decides from a small artifact that it has nothing to do
    (OCR, for a document with a text layer) never loads the large one (the upload).
    """

    __slots__ = ("_loaders", "_values")

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        loaders: Mapping[str, Callable[[], Any]] | None = None,
    ) -> None:
        self._values = dict(values or {})
        self._loaders = dict(loaders or {})

    def __getitem__(self, artifact: Artifact[T]) -> T:
        name = artifact.name
        if name not in self._values:
            loader = self._loaders.get(name)
            if loader is None:
                raise KeyError(f"the stage does not read the {name!r} artifact")
            self._values[name] = loader()
        value: T = self._values[name]
        return value

    def loaded(self, name: str) -> Any:
        """The value of ``name`` if it was loaded (or given), else None."""
        return self._values.get(name)

    def names(self) -> list[str]:
        return list({**self._loaders, **self._values})


class Outputs:
    """The artifacts a stage writes: ``Outputs({CHUNKS: plan})``."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[Artifact[Any], Any]) -> None:
        self._values = {artifact.name: value for artifact, value in values.items()}

    def __getitem__(self, artifact: Artifact[T]) -> T:
        value: T = self._values[artifact.name]
        return value

    def get(self, name: str) -> Any:
        return self._values.get(name)

    def names(self) -> list[str]:
        return list(self._values)


class Isolation(Protocol):
    """Runs a function in a child process under a hard time and memory limit (the sandbox)."""

    def run(self, fn: Callable[..., T], *args: Any) -> T: ...


@dataclass(frozen=True)
class StageContext:
    """What the engine hands a stage when it builds it."""

    settings: Settings
    faults: Faults
    isolation: Isolation | None
    """The sandbox for untrusted parsers; ``None`` runs them in-process (unit tests)."""


Compute = Callable[[Inputs], Outputs]
Summarize = Callable[[Outputs], dict[str, Any]]
Skip = Callable[[Inputs], bool]


def _no_summary(outputs: Outputs) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class StageSpec:
    """One stage, as a pipeline definition places it.

    Give either ``compute`` (the pure function) or ``build`` (a factory that makes it
    from the context: settings, faults, sandbox). ``summarize`` says in a few fields
    what the outputs hold, for the ``succeeded`` event.
    """

    name: str
    reads: tuple[Artifact[Any], ...]
    writes: tuple[Artifact[Any], ...]
    policy: StagePolicy = field(default_factory=StagePolicy)
    compute: Compute | None = None
    build: Callable[[StageContext], Compute] | None = None
    summarize: Summarize = _no_summary
    description: str = ""
    skip: Callable[[StageContext], Skip] | None = None
    """Builds the predicate "this stage has nothing to do for these inputs" (see the
    module's docstring); ``None``: the stage always runs."""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"stage name {self.name!r} must match {NAME_PATTERN.pattern}")
        if (self.compute is None) == (self.build is None):
            raise ValueError(f"stage {self.name!r} needs exactly one of compute= or build=")

    def make(self, context: StageContext) -> Compute:
        """The stage's compute function, built for ``context``."""
        if self.build is not None:
            return self.build(context)
        assert self.compute is not None
        return self.compute

    def make_skip(self, context: StageContext) -> Skip | None:
        """The stage's skip predicate, built for ``context`` (``None``: it never skips)."""
        return self.skip(context) if self.skip is not None else None
