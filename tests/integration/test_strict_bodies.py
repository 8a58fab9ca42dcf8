"""Request bodies are read strictly, and the schema says what the server refuses (issue 18).

Every JSON body of the API (the admin bodies) is bounded in nesting before it is
decoded and decoded without coercion: a boolean is ``true`` or ``false``, a number
is a JSON number. An upload carries exactly one ``file`` part.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import dramatiq
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.engine.dispatch import Dispatcher
from pipeline.http.json_body import MAX_JSON_DEPTH
from pipeline.operations.common import MIN_RATE, Operator
from pipeline.operations.jobs import JobRunner, create_job, get_job
from pipeline.operations.replay import ReplayService
from pipeline.operations.requests import ReplayRequest
from pipeline.operations.rerun import RerunService
from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE
from tests.support.api import assert_problem, upload
from tests.support.dead_letters import dead_gif
from tests.support.documents import wait_for_document

UNKNOWN = "00000000-0000-0000-0000-0000000000aa"
BODY_PATHS = [
    ("/dead-letters/replay", {"ids": [UNKNOWN]}),
    ("/dead-letters/discard", {"ids": [UNKNOWN]}),
    ("/rerun", {"from_stage": "chunk", "ids": [UNKNOWN]}),
    (f"/documents/{UNKNOWN}/rerun", {"from_stage": "chunk"}),
]


def post_raw(client: TestClient[Any], path: str, raw: bytes) -> Any:
    return client.post(path, content=raw, headers={"Content-Type": "application/json"})


# -- item 1: nesting is bounded before decoding -------------------------------------------


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def nested_in_field(depth: int) -> bytes:
    return b'{"ids":' + nested_arrays(depth) + b"}"


@pytest.mark.parametrize("path", [path for path, _ in BODY_PATHS])
@pytest.mark.parametrize("shape", [nested_arrays, nested_objects, nested_in_field])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_deeply_nested_body_is_a_400_problem(
    client: TestClient[Any], path: str, shape: Any, depth: int
) -> None:
    problem = assert_problem(post_raw(client, path, shape(depth)), 400, "nests deeper than")
    assert str(MAX_JSON_DEPTH) in problem["detail"]


def test_unbalanced_deep_body_is_a_400_problem(client: TestClient[Any]) -> None:
    assert_problem(post_raw(client, "/rerun", b"[" * 5_000), 400, "nests deeper than")


def test_brackets_inside_strings_do_not_count(client: TestClient[Any]) -> None:
    reason = '[{"\\"' * 200  # escaped quotes do not end the string
    response = client.post("/dead-letters/replay", json={"ids": [UNKNOWN], "reason": reason})
    assert response.status_code == 200, response.text
    assert response.json()["skipped"] == 1


def test_nesting_at_the_limit_is_decoded_as_usual(client: TestClient[Any]) -> None:
    # Within the bound the body reaches the decoder, which says what is wrong with it.
    raw = b'{"ids":' + nested_arrays(MAX_JSON_DEPTH - 1) + b"}"
    assert_problem(post_raw(client, "/dead-letters/replay", raw), 422, "`ids[0]`")


def test_malformed_json_is_a_400_problem(client: TestClient[Any]) -> None:
    for raw in (b"{", b'{"ids": [}', b"\xff", b"  ", b'{"ids": []} x'):
        assert_problem(post_raw(client, "/dead-letters/replay", raw), 400, "JSON")


def test_no_body_is_a_422_problem(client: TestClient[Any]) -> None:
    # Litestar sees no body at all before any decoder runs: the body is missing.
    assert_problem(post_raw(client, "/dead-letters/replay", b""), 422, "request body")


# -- item 2: rate is bounded to what the pacer can honour ---------------------------------


@pytest.mark.parametrize("rate", [1e-300, 5e-324, MIN_RATE / 2])
@pytest.mark.parametrize("path", ["/dead-letters/replay", "/rerun"])
def test_tiny_rate_is_422(client: TestClient[Any], path: str, rate: float) -> None:
    body = {"ids": [UNKNOWN], "rate": rate, "from_stage": "chunk"}
    if path == "/dead-letters/replay":
        del body["from_stage"]
    problem = assert_problem(client.post(path, json=body), 422, "`rate`")
    assert str(MIN_RATE) in problem["detail"]


def test_slowest_rate_is_accepted(client: TestClient[Any]) -> None:
    body = {"ids": [UNKNOWN], "rate": MIN_RATE, "dry_run": True}
    response = client.post("/dead-letters/replay", json=body)
    assert response.status_code == 200, response.text
    # Not a dry run: that slow a pace is a background job (and is accepted as one).
    response = client.post("/dead-letters/replay", json={"ids": [UNKNOWN], "rate": MIN_RATE})
    assert response.status_code == 202, response.text


def test_job_recorded_with_an_unhonourable_rate_fails_plainly(
    client: TestClient[Any],
    settings: Settings,
    broker: dramatiq.Broker,
    engine: Engine,
    worker: Any,
) -> None:
    """A job stored before the bound (or by hand) fails with a sentence, not an exception
    name, replays nothing, and does not escape the runner (no poison dead letter)."""
    letters = [uuid.UUID(dead_gif(client)[1]) for _ in range(2)]
    request = ReplayRequest(ids=letters, rate=1e-300)  # constructors do not check bounds
    with engine.begin() as conn:
        job_id = create_job(conn, "replay", request, Operator("tests", "api"), "default")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 100:
            raise AssertionError("the pacer would wait for ever")

    dispatcher = Dispatcher(broker)
    runner = JobRunner(
        engine,
        ReplayService(engine, dispatcher, settings, PIPELINE, sleep=sleep),
        RerunService(engine, dispatcher, settings, PIPELINE, sleep=sleep),
    )
    runner.run(job_id)  # must not raise
    with engine.connect() as conn:
        job = get_job(conn, job_id)
        replays = conn.execute(
            text("SELECT sum(replay_count) FROM dead_letters WHERE id = ANY(:ids)"),
            {"ids": letters},
        ).scalar_one()
    assert job is not None
    assert job.status == "failed", job
    assert job.error is not None
    assert "rate" in job.error
    assert "Error" not in job.error, job.error  # no exception's name
    assert "Exception" not in job.error, job.error
    assert replays == 0
    assert sleeps == []


# -- item 5: the schema says what the server refuses --------------------------------------

REQUEST_SCHEMAS = [
    "ReplayRequest",
    "DiscardRequest",
    "RerunRequest",
    "DocumentRerunBody",
    "LetterFilter",
    "DocumentFilter",
]


@pytest.fixture(scope="module")
def schemas(client: TestClient[Any]) -> dict[str, Any]:
    components: dict[str, Any] = client.get("/schema/openapi.json").json()["components"]
    return components["schemas"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", REQUEST_SCHEMAS)
def test_request_schemas_forbid_unknown_fields(schemas: dict[str, Any], name: str) -> None:
    assert schemas[name]["additionalProperties"] is False


def test_response_schemas_do_not_forbid_fields(schemas: dict[str, Any]) -> None:
    # A client must not reject a response for a field added later.
    assert "additionalProperties" not in schemas["OperationReport"]


@pytest.mark.parametrize("name", ["ReplayRequest", "RerunRequest"])
def test_rate_schema_has_its_bounds(
    client: TestClient[Any], schemas: dict[str, Any], name: str
) -> None:
    rate = schemas[name]["properties"]["rate"]
    assert rate["minimum"] == MIN_RATE
    assert rate["maximum"] == 10_000
    # What the schema allows, the server accepts; just below it, it refuses.
    path = "/dead-letters/replay" if name == "ReplayRequest" else "/rerun"
    body: dict[str, Any] = {"ids": [UNKNOWN], "from_stage": "chunk"}
    if name == "ReplayRequest":
        del body["from_stage"]
    dry = body | {"dry_run": True}
    assert client.post(path, json=dry | {"rate": rate["minimum"]}).status_code == 200
    assert client.post(path, json=dry | {"rate": rate["maximum"]}).status_code == 200
    assert client.post(path, json=dry | {"rate": rate["minimum"] * 0.999}).status_code == 422
    assert client.post(path, json=dry | {"rate": rate["maximum"] * 1.001}).status_code == 422
    assert client.post(path, json=dry | {"rate": 0}).status_code == 422


# -- item 6: strict types in every JSON body ----------------------------------------------

NOT_BOOLEANS = [0, 1, "true", "false", "yes", None, [], {}]


@pytest.mark.parametrize("value", NOT_BOOLEANS)
@pytest.mark.parametrize(("path", "body"), BODY_PATHS)
def test_dry_run_must_be_a_boolean(
    client: TestClient[Any], path: str, body: dict[str, Any], value: Any
) -> None:
    problem = assert_problem(client.post(path, json=body | {"dry_run": value}), 422, "`dry_run`")
    assert "bool" in problem["detail"]
    assert problem["errors"]


@pytest.mark.parametrize("value", NOT_BOOLEANS)
@pytest.mark.parametrize("path", ["/dead-letters/replay", "/dead-letters/discard"])
def test_force_must_be_a_boolean(client: TestClient[Any], path: str, value: Any) -> None:
    assert_problem(client.post(path, json={"ids": [UNKNOWN], "force": value}), 422, "`force`")


@pytest.mark.parametrize(
    ("field", "value"),
    [("limit", "5"), ("limit", 5.5), ("limit", True), ("rate", "5"), ("rate", True)],
)
def test_numbers_are_not_coerced(client: TestClient[Any], field: str, value: Any) -> None:
    body = {"filter": {"stage": "validate"}, "dry_run": True, field: value}
    assert_problem(client.post("/dead-letters/replay", json=body), 422, f"`{field}`")


def test_strings_are_not_coerced(client: TestClient[Any]) -> None:
    body = {"ids": [UNKNOWN], "reason": 5}
    assert_problem(client.post("/dead-letters/replay", json=body), 422, "`reason`")
    body = {"filter": {"error_type": 5}}
    assert_problem(client.post("/dead-letters/replay", json=body), 422, "`filter.error_type`")


def test_integral_float_rate_and_real_booleans_are_accepted(client: TestClient[Any]) -> None:
    body = {"ids": [UNKNOWN], "dry_run": False, "force": True, "rate": 20, "limit": 3}
    response = client.post("/dead-letters/replay", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["dry_run"] is False


def test_dry_run_zero_does_not_rerun(client: TestClient[Any], engine: Engine, worker: Any) -> None:
    """The reported failure: ``{"dry_run": 0}`` ran a real rerun."""
    response = upload(client, b"Strict booleans matter for reruns.\n", "strict.txt")
    document_id = response.json()["id"]
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    for path, body in [
        (f"/documents/{document_id}/rerun", {"from_stage": "chunk", "dry_run": 0}),
        ("/rerun", {"from_stage": "chunk", "ids": [document_id], "dry_run": "false"}),
    ]:
        assert_problem(client.post(path, json=body), 422, "`dry_run`")
    time.sleep(0.2)
    with engine.connect() as conn:
        generation = conn.execute(
            text("SELECT generation FROM documents WHERE id = :id"), {"id": document_id}
        ).scalar_one()
    assert generation == 1


# -- item 7: exactly one `file` part ------------------------------------------------------


def test_two_file_parts_are_422(client: TestClient[Any], engine: Engine) -> None:
    name = f"twice-{uuid.uuid4().hex[:8]}.txt"
    response = client.post(
        "/documents",
        files=[
            ("file", (name, b"The first file.\n", "text/plain")),
            ("file", ("second.txt", b"The second file.\n", "text/plain")),
        ],
    )
    assert_problem(response, 422, "exactly one")
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM documents WHERE filename = :name"), {"name": name}
        ).scalar_one()
    assert stored == 0


def test_one_file_part_beside_other_fields_is_accepted(client: TestClient[Any]) -> None:
    response = client.post(
        "/documents",
        files={"file": ("one.txt", b"Only one file here.\n", "text/plain")},
        data={"note": "ignored"},
    )
    assert response.status_code == 202, response.text


def test_file_field_that_is_not_a_file_is_422(client: TestClient[Any]) -> None:
    response = client.post(
        "/documents",
        files={"other": ("x.txt", b"x\n", "text/plain")},
        data={"file": "not a file"},
    )
    assert_problem(response, 422, "field named 'file'")
