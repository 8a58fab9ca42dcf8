"""What an operation's OpenAPI entry says beyond its handler's signature.

Litestar describes the success response from the return annotation, and adds a
``400`` ``application/json`` entry for its ``ValidationException`` to every handler
with parameters. This API answers validation errors as ``422`` problems
(``problems.py``), so that entry would be false: :func:`documented` replaces it with
the error statuses the operation really answers (each an ``application/problem+json``
:class:`~pipeline.http.problems.ProblemDocument`), and adds OpenAPI links from a
response to the operations that take what it returns (an upload's ``id`` to
``GET /documents/{document_id}``, a job's ``job_id`` to ``GET /operations/{job_id}``),
which clients and schemathesis' stateful phase follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Link, OpenAPIResponse, Operation

from pipeline.http.problems import problem_responses


@dataclass(frozen=True)
class LinkTo:
    """A link from a response to the operation ``operation_id``.

    ``parameters`` maps each of the target's parameters to a runtime expression
    (``$response.body#/id``) or a literal.
    """

    operation_id: str
    parameters: Mapping[str, str]
    description: str


@dataclass
class DocumentedOperation(Operation):
    """An operation whose error responses are exactly ``problems`` and whose responses
    carry ``links_from``; :func:`documented` makes one per route."""

    problems: ClassVar[frozenset[int]] = frozenset()
    links_from: ClassVar[Mapping[int, Mapping[str, LinkTo]]] = {}

    def __post_init__(self) -> None:
        responses = self.responses or {}
        if 400 not in self.problems:
            responses.pop("400", None)  # Litestar's ValidationException entry; see above
        for status, links in self.links_from.items():
            response = responses.get(str(status))
            if not isinstance(response, OpenAPIResponse):
                raise RuntimeError(f"{self.operation_id}: links from undocumented {status}")
            response.links = {
                name: Link(
                    operation_id=link.operation_id,
                    parameters=dict(link.parameters),
                    description=link.description,
                )
                for name, link in links.items()
            }


AUTH = (401, 403)
"""What every operation that needs a key can answer: no or a bad key, or too few scopes."""


def documented(
    *problems: int,
    described: Mapping[int, str] | None = None,
    successes: Mapping[int, ResponseSpec] | None = None,
    links: Mapping[int, Mapping[str, LinkTo]] | None = None,
    operation: type[DocumentedOperation] = DocumentedOperation,
) -> dict[str, Any]:
    """Route decorator keywords: the problems the route can answer and its links.

    ``successes`` describes success statuses the return annotation does not (a route
    answering ``200`` or ``202``); ``operation`` is a :class:`DocumentedOperation`
    subclass for routes that describe more themselves (the upload's request body).
    """
    attributes = {"problems": frozenset(problems), "links_from": dict(links or {})}
    operation_class = cast(
        "type[DocumentedOperation]", type(operation.__name__, (operation,), attributes)
    )
    return {
        "responses": {**(successes or {}), **problem_responses(*problems, described=described)},
        "operation_class": operation_class,
    }
