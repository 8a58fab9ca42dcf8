"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema.

Schemathesis generates requests for every operation of the app's OpenAPI document,
valid and invalid (its coverage phase: boundaries, wrong types, missing parameters,
unexpected methods; then up to ``MAX_EXAMPLES`` generated cases), and sends them
in-process over ASGI with the key the other tests use. Every check schemathesis has
runs on every response: no 5xx; each status, content type, header and body is the one
the schema documents; schema-valid requests are accepted and schema-violating ones
refused; unsupported methods are ``405``; a request without the key is ``401``.
On top, every error is an RFC 9457 problem details document. Then the stateful phase
follows the schema's OpenAPI links (an upload's ``id`` into ``GET /documents/{id}``,
a job's ``job_id`` into ``GET /operations/{id}``) with the same checks. A third run
puts NULs into generated values (the classic way past validation into a database
error) and needs only that nothing breaks. The runs are bounded and derandomised, so
CI sees the same requests every time.

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
from hypothesis.stateful import run_state_machine_as_test
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.failures import Failure
from schemathesis.openapi.checks import RejectedPositiveData

from pipeline.broker import make_broker
from pipeline.db.engine import make_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.settings import Settings
from tests.support.api import bearer, make_key, upload
from tests.support.databases import own_database

MAX_EXAMPLES = 25
STATEFUL_EXAMPLES = 30
STATEFUL_STEPS = 6
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
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
        assert client.get("/schema/openapi.json").json() == SCHEMA_DOCUMENT
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
SCHEMA_DOCUMENT = SCHEMA_APP.openapi_schema.to_schema()


STREAMS = r"/events$"
"""The event streams: a request the schema accepts opens a stream that stays open, and
schemathesis reads a response to its end. ``test_event_streams`` covers them (their
problems: 404, 422, 429, 204) over real connections."""


def load_schema() -> Any:
    """A schemathesis schema of the app's document, calling it in-process over ASGI
    (each call names the running app). One per run, so hooks stay with their run."""
    loaded = schemathesis.openapi.from_dict(SCHEMA_DOCUMENT).exclude(path_regex=STREAMS)
    loaded.app = SCHEMA_APP
    return loaded


schema = load_schema()
nul_schema = load_schema()
LINKED = r"^/(documents|rerun|operations|dead-letters)"
"""The operations the schema's links join (uploads, documents, reruns, jobs): the
stateful phase walks these, so that its fixed budget of steps follows links rather
than spreading over the whole API (which the phases above cover call by call)."""
linked_schema = load_schema().include(path_regex=LINKED)


def issued_cursor_only(failure: Failure, case: Any, response: Any) -> bool:
    """A generated ``cursor`` refused as not issued by this API: not a failure.

    A cursor is opaque: only a ``next_cursor`` this API returned is one, which no JSON
    schema can say, so a generated string is "schema-valid" and rightly refused. Real
    cursors are exercised where they come from: the list operations' tests, and the
    stateful phase's ``next_cursor`` links.
    """
    return (
        isinstance(failure, RejectedPositiveData)
        and response.status_code == 422
        and "cursor" in (case.query or {})
        and "cursor" in response.json().get("detail", "")
    )


def integral_float_for_an_integer(failure: Failure, case: Any, response: Any) -> bool:
    """JSON Schema counts ``392.0`` as an integer; the API reads JSON strictly and
    refuses a number with a fraction part for an integer field (``limit``), as msgspec's
    strict mode does: a deliberate divergence, matched only on that refusal."""
    body = case.body if isinstance(case.body, dict) else {}
    return (
        isinstance(failure, RejectedPositiveData)
        and response.status_code == 422
        and "Expected `int" in response.json().get("detail", "")
        and any(isinstance(value, float) and value.is_integer() for value in body.values())
    )


def refused_destination(failure: Failure, case: Any, response: Any) -> bool:
    """A generated webhook URL refused as a destination: not a failure.

    Whether a URL may be called depends on what its host resolves to (a private address
    is refused), which no JSON schema can say; the refusals are tested on their own in
    ``test_webhooks`` (every address class, at registration and at delivery)."""
    return (
        isinstance(failure, RejectedPositiveData)
        and response.status_code == 422
        and case.path == "/webhooks"
        and case.method.upper() == "POST"
    )


TOLERATED = (issued_cursor_only, integral_float_for_an_integer, refused_destination)


def filter_failure(
    context: schemathesis.HookContext, failure: Failure, case: Any, response: Any
) -> bool:
    """Keep every failure but those :data:`TOLERATED` names."""
    return not any(tolerated(failure, case, response) for tolerated in TOLERATED)


schema.hook(filter_failure)
nul_schema.hook(filter_failure)
linked_schema.hook(filter_failure)


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


@nul_schema.hook
def flatmap_query(context: schemathesis.HookContext, query: Any) -> st.SearchStrategy[Any]:
    return maybe_with_nul(query)


@nul_schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    return maybe_with_nul(body)


@nul_schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: Any
) -> st.SearchStrategy[Any]:
    return maybe_with_nul(path_parameters)


@schema.parametrize()
@HYPOTHESIS
def test_api_conforms_to_its_schema(
    case: schemathesis.Case, fuzz_app: Litestar, fuzz_headers: dict[str, str]
) -> None:
    case.call_and_validate(headers=fuzz_headers, additional_checks=[problem_details], app=fuzz_app)


@nul_schema.parametrize()
@HYPOTHESIS
def test_nul_in_any_value_is_refused_cleanly(
    case: schemathesis.Case, fuzz_app: Litestar, fuzz_headers: dict[str, str]
) -> None:
    """Every check but positive-data acceptance: a NUL put into a valid value may make
    it invalid (a pattern forbids it), and then refusing it is right."""
    case.call_and_validate(
        headers=fuzz_headers,
        additional_checks=[problem_details],
        excluded_checks=[positive_data_acceptance],
        app=fuzz_app,
    )


def test_stateful_links(fuzz_app: Litestar, fuzz_headers: dict[str, str]) -> None:
    """Sequences of calls along the schema's links, each response checked like above."""
    followed: set[str] = set()

    class Links(linked_schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": fuzz_headers, "app": fuzz_app}

        def step(self, input: Any) -> Any:
            transition = input.transition
            if transition is not None and not transition.is_inferred and input.is_applied:
                followed.add(transition.id)
            return super().step(input)

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            super().validate_response(response, case, additional_checks=[problem_details], **kwargs)

    run_state_machine_as_test(
        Links,
        settings=settings(
            HYPOTHESIS, max_examples=STATEFUL_EXAMPLES, stateful_step_count=STATEFUL_STEPS
        ),
    )
    # The phase is only stateful if the schema's own links were followed.
    assert any("POST /documents -> [202]" in link for link in followed), followed
