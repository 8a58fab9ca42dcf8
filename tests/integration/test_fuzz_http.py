"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema.

Schemathesis generates requests for every operation of the app's OpenAPI document,
valid and invalid (its coverage phase: boundaries, wrong types, missing parameters,
unexpected methods; then up to ``MAX_EXAMPLES`` generated cases), and sends them
in-process over ASGI with the key the other tests use. Two properties must hold for
every response: it is not a 5xx, and if it is an error it is an RFC 9457 problem details
document. The run is bounded and derandomised, so CI sees the same requests every time.

The fuzzer gets a database and a Redis namespace of its own: its admin requests
(replays, discards, re-runs by filter) must not touch the documents other tests own,
and nothing consumes the messages its uploads enqueue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error

from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.http.app import create_app
from pipeline.services.dispatch import Dispatcher
from pipeline.settings import Settings

from ..databases import own_database
from .conftest import bearer, make_key, upload

MAX_EXAMPLES = 25
# schemathesis' header strategy calls ``random.random()`` inside a strategy
# (specs/openapi/_hypothesis.py), which Hypothesis deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
PROBLEM_FIELDS = ("type", "title", "status", "detail")


@pytest.fixture(scope="module")
def fuzz_settings(settings: Settings) -> Iterator[Settings]:
    """The run's settings, on a fresh database and Redis namespace of the fuzzer's own."""
    with own_database(settings, "fuzz") as fuzz:
        yield fuzz


@pytest.fixture(scope="module")
def fuzz_headers(fuzz_settings: Settings) -> dict[str, str]:
    """Headers every fuzzed request carries: the key the session's ``client`` is given
    (tenant ``default``, every scope), made in the fuzzer's database."""
    engine = make_engine(fuzz_settings)
    try:
        return bearer(make_key(engine))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def fuzz_app(fuzz_settings: Settings, fuzz_headers: dict[str, str]) -> Litestar:
    """The app under test, serving the schema the tests were generated from, with a
    couple of documents to find, list and re-run."""
    app = create_app(fuzz_settings, dispatcher=Dispatcher(make_broker(fuzz_settings)))
    with TestClient(app) as client:
        client.headers.update(fuzz_headers)
        assert client.get("/schema/openapi.json").json() == schema.raw_schema
        for index in range(2):
            response = upload(client, f"Seed document {index} about glaciers.".encode())
            assert response.status_code == 202, response.text
    return app


def problem_details(ctx: schemathesis.CheckContext, response: Any, case: Any) -> None:
    """Every 4xx and 5xx is ``application/problem+json`` with the RFC 9457 members."""
    status = response.status_code
    if status < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/problem+json"), (
        f"{status} answered with Content-Type {content_type!r}: {response.text[:200]!r}"
    )
    body = response.json()
    missing = [field for field in PROBLEM_FIELDS if field not in body]
    assert not missing, f"{status} problem lacks {missing}: {body}"
    assert body["status"] == status, body
    assert isinstance(body["detail"], str), body
    assert body["detail"], body


# The tests are generated at collection time, before any fixture runs, so the document
# comes from an app that is built but never started (no servers needed); ``fuzz_app``
# checks that the running app serves the very same ``/schema/openapi.json``. (Loading it
# from a fixture, ``schemathesis.pytest.from_fixture``, fails on pytest 9: it sets
# ``Node._nodeid``, which pytest no longer has.)
SCHEMA_APP = create_app(Settings())
schema = schemathesis.openapi.from_dict(SCHEMA_APP.openapi_schema.to_schema())
schema.app = SCHEMA_APP  # in-process over ASGI; each call names the running app


def with_nul(value: Any) -> Any:
    """``value`` with a NUL in every string it holds (Postgres text cannot store one)."""
    if isinstance(value, str):
        middle = len(value) // 2
        return f"{value[:middle]}\x00{value[middle:]}"
    if isinstance(value, dict):
        return {key: with_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_nul(item) for item in value]
    return value


def maybe_with_nul(value: Any) -> st.SearchStrategy[Any]:
    """Half the generated values as they are, half with NULs: random text rarely has one
    within a bounded number of examples, and a NUL is the classic way past validation
    into a database error."""
    return st.sampled_from([value, with_nul(value)])


@schema.hook
def flatmap_query(context: schemathesis.HookContext, query: Any) -> st.SearchStrategy[Any]:
    return maybe_with_nul(query)


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    return maybe_with_nul(body)


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: Any
) -> st.SearchStrategy[Any]:
    return maybe_with_nul(path_parameters)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_5xx_and_errors_are_problem_details(
    case: schemathesis.Case, fuzz_app: Litestar, fuzz_headers: dict[str, str]
) -> None:
    case.call_and_validate(
        headers=fuzz_headers, checks=[not_a_server_error, problem_details], app=fuzz_app
    )
