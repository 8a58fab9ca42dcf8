"""The operator requests, as the CLI, the admin API and background jobs pass them.

One Struct per action: the HTTP bodies are these Structs, the CLI builds them from its
options, and a background job stores the same Struct as JSON; each entry point hands
it as is to the service, with a :class:`~pipeline.operations.common.RunContext` (who,
for which tenant, and who watches), so every entry point describes an action the same way.
"""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar

import msgspec

from pipeline.operations.common import MAX_RATE, MIN_RATE, check_selection
from pipeline.operations.dead_letters import LetterFilter
from pipeline.operations.rerun import DocumentFilter
from pipeline.stages import StageName
from pipeline.text import NO_NUL

Rate = Annotated[float, msgspec.Meta(ge=MIN_RATE, le=MAX_RATE)]
"""Bounded to what the pacer honours (a tiny positive rate passed ``gt=0`` and then
overflowed the pacer's clock); an inclusive minimum also survives into the OpenAPI
schema, where Litestar drops ``gt=0``."""
Limit = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
"""Bounded so a huge number is a 422, not a database overflow (found by the fuzzer)."""
Reason = Annotated[str, msgspec.Meta(max_length=1000, pattern=NO_NUL)]
IDS_OR_FILTER: tuple[tuple[str, str], ...] = (("ids", "array"), ("filter", "object"))
"""A bulk request names its items one way: ``ids`` (a list, even empty) or a ``filter``
(an object), exactly one of them; the OpenAPI schema says so with ``oneOf``
(``pipeline.http.struct_schema``)."""


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    exactly_one_of: ClassVar[tuple[tuple[str, str], ...]] = IDS_OR_FILTER
    ids: list[uuid.UUID] | None = None
    filter: LetterFilter | None = None
    limit: Limit | None = None
    dry_run: bool = False
    rate: Rate | None = None
    reason: Reason | None = None
    force: bool = False

    def __post_init__(self) -> None:
        check_selection(self)


class DiscardRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    exactly_one_of: ClassVar[tuple[tuple[str, str], ...]] = IDS_OR_FILTER
    ids: list[uuid.UUID] | None = None
    filter: LetterFilter | None = None
    limit: Limit | None = None
    dry_run: bool = False
    reason: Reason | None = None
    force: bool = False

    def __post_init__(self) -> None:
        check_selection(self)


class RerunRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    exactly_one_of: ClassVar[tuple[tuple[str, str], ...]] = IDS_OR_FILTER
    stage_fields: ClassVar[tuple[str, ...]] = ("from_stage",)
    """Fields that must name a stage of the active definition (the schema lists them)."""
    from_stage: StageName
    ids: list[uuid.UUID] | None = None
    filter: DocumentFilter | None = None
    limit: Limit | None = None
    dry_run: bool = False
    rate: Rate | None = None
    reason: Reason | None = None
    to_current_plan: bool = False
    """Move each document onto the active definition's stages from ``from_stage`` on
    (its stages before ``from_stage`` must be the definition's too); otherwise the
    document re-runs its own plan."""

    def __post_init__(self) -> None:
        check_selection(self)


OperationRequest = ReplayRequest | DiscardRequest | RerunRequest


class DocumentSelection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Documents an action names (``ids`` or a ``filter``, up to a ``limit``), whether it
    is a dry run, and why: the request of a delete and of a cancel alike."""

    exactly_one_of: ClassVar[tuple[tuple[str, str], ...]] = IDS_OR_FILTER
    ids: list[uuid.UUID] | None = None
    filter: DocumentFilter | None = None
    limit: Limit | None = None
    dry_run: bool = False
    reason: Reason | None = None

    def __post_init__(self) -> None:
        check_selection(self)
