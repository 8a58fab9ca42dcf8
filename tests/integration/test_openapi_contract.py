"""The OpenAPI document says what the API answers (issue 18, items 3 and 4).

Two halves. The document itself: every operation that needs a key documents ``401`` and
``403``, every documented error is ``application/problem+json`` with the problem-details
schema (none of Litestar's ``400`` ``application/json`` entries is left), and
``/metrics`` is Prometheus text. Then the running API, probed by hand as an outside
client: each probe's status must be one its operation documents, served with the
documented content type, and an error must be a problem document.
"""

from __future__ import annotations

import uuid
from typing import Any

import dramatiq
import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.http.problems import PROBLEM_MEDIA_TYPE
from pipeline.settings import Settings
from tests.support.api import AsKey, make_key, upload

PROBLEM_REF = "#/components/schemas/ProblemDocument"
TEXT = b"A short document about contracts."


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The OpenAPI document of an app that is built but never started."""
    return create_app(Settings()).openapi_schema.to_schema()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_every_protected_operation_documents_401_and_403(document: dict[str, Any]) -> None:
    protected = [
        (method, path, operation)
        for method, path, operation in operations(document)
        if operation.get("security") != [{}]
    ]
    assert len(protected) >= 14
    missing = [
        f"{method} {path}: {sorted({'401', '403'} - set(operation['responses']))}"
        for method, path, operation in protected
        if not {"401", "403"} <= set(operation["responses"])
    ]
    assert not missing


def test_every_documented_error_is_a_problem_document(document: dict[str, Any]) -> None:
    wrong = []
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = response.get("content", {})
            schema = content.get(PROBLEM_MEDIA_TYPE, {}).get("schema", {})
            if list(content) != [PROBLEM_MEDIA_TYPE] or schema.get("$ref") != PROBLEM_REF:
                wrong.append(f"{method} {path} {status}: {content}")
    assert not wrong
    problem = document["components"]["schemas"]["ProblemDocument"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}


def test_metrics_is_documented_as_prometheus_text(document: dict[str, Any]) -> None:
    content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain; version=0.0.4"]


def test_links_name_operations_that_exist(document: dict[str, Any]) -> None:
    ids = {operation["operationId"] for _, _, operation in operations(document)}
    links = [
        (f"{method} {path} {status}", link)
        for method, path, operation in operations(document)
        for status, response in operation["responses"].items()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 10
    assert not [(source, link) for source, link in links if link["operationId"] not in ids]


# -- the running API -----------------------------------------------------------------


def documented_response(
    document: dict[str, Any], method: str, template: str, response: httpx.Response
) -> None:
    """``response`` is one ``method template`` documents, with its content type."""
    responses = document["paths"][template][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in responses, (
        f"{method} {template} answered undocumented {status} (documented: "
        f"{sorted(responses)}): {response.text[:200]}"
    )
    served = response.headers.get("content-type", "").split(";", 1)[0].strip()
    documented = {media.split(";", 1)[0].strip() for media in responses[status].get("content", {})}
    if documented:
        assert served in documented, f"{method} {template} {status}: {served} not {documented}"
    if response.status_code >= 400:
        body = response.json()
        assert served == PROBLEM_MEDIA_TYPE
        assert body["status"] == response.status_code, body
        assert body["detail"], body


def probe_path(template: str) -> str:
    return (
        template.replace("{document_id}", str(uuid.uuid4()))
        .replace("{letter_id}", str(uuid.uuid4()))
        .replace("{job_id}", str(uuid.uuid4()))
    )


def test_no_key_is_a_documented_401_everywhere_protected(
    document: dict[str, Any], client: TestClient[Any]
) -> None:
    anonymous = AsKey(client, None)
    probed = 0
    for method, template, operation in operations(document):
        if operation.get("security") == [{}]:
            continue
        response = anonymous.request(
            method, probe_path(template), json={} if method == "POST" else None
        )
        assert response.status_code == 401, (method, template, response.text)
        documented_response(document, method, template, response)
        probed += 1
    assert probed >= 14


def test_too_few_scopes_is_a_documented_403(
    document: dict[str, Any], client: TestClient[Any], engine: Engine
) -> None:
    ingest_only = AsKey(client, make_key(engine, scopes="ingest"))
    read_only = AsKey(client, make_key(engine, scopes="read"))
    cases = [
        (ingest_only, "GET", "/documents"),
        (ingest_only, "GET", "/search"),
        (ingest_only, "GET", "/documents/{document_id}"),
        (read_only, "POST", "/documents"),
        (read_only, "GET", "/stages"),
        (read_only, "GET", "/metrics"),
        (read_only, "GET", "/dead-letters"),
        (read_only, "POST", "/rerun"),
        (read_only, "POST", "/documents/{document_id}/rerun"),
    ]
    for key, method, template in cases:
        url = probe_path(template) + ("?q=glaciers" if template == "/search" else "")
        response = key.request(method, url, json={} if method == "POST" else None)
        assert response.status_code == 403, (method, template, response.text)
        documented_response(document, method, template, response)


def test_read_errors_are_documented(document: dict[str, Any], client: TestClient[Any]) -> None:
    unknown = uuid.uuid4()
    probes = [
        ("GET", "/documents/{document_id}", f"/documents/{unknown}", 404),
        ("GET", "/documents/{document_id}/chunks", f"/documents/{unknown}/chunks", 404),
        (
            "GET",
            "/documents/{document_id}/chunks",
            f"/documents/{unknown}/chunks?embeddings=x",
            422,
        ),
        ("GET", "/documents", "/documents?limit=0", 422),
        ("GET", "/documents", "/documents?cursor=edited", 422),
        ("GET", "/search", "/search", 422),
        ("GET", "/search", "/search?q=%20", 422),
        ("GET", "/dead-letters/{letter_id}", f"/dead-letters/{unknown}", 404),
        ("GET", "/operations/{job_id}", f"/operations/{unknown}", 404),
        ("POST", "/documents/{document_id}/rerun", f"/documents/{unknown}/rerun", 404),
        ("POST", "/rerun", "/rerun", 422),
    ]
    for method, template, url, status in probes:
        body = {"from_stage": "chunk"} if template.endswith("/rerun") and "{" in template else {}
        response = client.request(method, url, json=body if method == "POST" else None)
        assert response.status_code == status, (url, response.text)
        documented_response(document, method, template, response)


def test_malformed_json_is_a_documented_4xx(
    document: dict[str, Any], client: TestClient[Any]
) -> None:
    for template in ("/rerun", "/dead-letters/replay", "/dead-letters/discard"):
        response = client.post(
            template, content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert 400 <= response.status_code < 500, response.text
        documented_response(document, "POST", template, response)


def test_upload_errors_are_documented(
    document: dict[str, Any],
    client: TestClient[Any],
    engine: Engine,
    settings: Settings,
    broker: dramatiq.Broker,
) -> None:
    def check(response: httpx.Response, status: int) -> None:
        assert response.status_code == status, response.text
        documented_response(document, "POST", "/documents", response)

    accepted = upload(client, TEXT, headers={"Idempotency-Key": f"contract-{uuid.uuid4()}"})
    check(accepted, 202)
    key = accepted.request.headers["Idempotency-Key"]
    check(upload(client, TEXT + b" Changed.", headers={"Idempotency-Key": key}), 409)
    check(upload(client, b"x" * (settings.limits.max_upload_bytes + 1)), 413)
    check(upload(client, b"GIF89a", "image.gif", "image/gif"), 415)
    check(upload(client, b""), 422)
    check(client.post("/documents", files={"other": ("a.txt", TEXT, "text/plain")}), 422)
    limited = create_app(
        settings.replace(access={"ingest_burst": 1}), dispatcher=Dispatcher(broker)
    )
    with TestClient(limited) as limited_client:
        slow = AsKey(limited_client, make_key(engine, scopes="ingest", rate_limit_per_s=0.01))
        check(upload(slow, TEXT), 202)
        check(upload(slow, TEXT + b" Again."), 429)


def test_metrics_serves_what_it_documents(
    document: dict[str, Any], client: TestClient[Any]
) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    documented_response(document, "GET", "/metrics", response)
    assert b"# TYPE" in response.content  # Prometheus text, not JSON


def test_options_names_every_documented_method(
    document: dict[str, Any], client: TestClient[Any]
) -> None:
    for path, item in document["paths"].items():
        response = client.options(probe_path(path))
        allowed = {method.strip() for method in response.headers["allow"].split(",")}
        assert {method.upper() for method in item} <= allowed, (path, allowed)


def test_bulk_bodies_say_ids_or_a_filter_exactly_once(document: dict[str, Any]) -> None:
    """The schema says what ``Selection`` refuses: both, or neither, of ids and filter."""
    schemas = document["components"]["schemas"]
    bulk = [
        schema
        for name, schema in schemas.items()
        if name.endswith(("ReplayRequest", "DiscardRequest", "RerunRequest"))
    ]
    assert len(bulk) == 3, sorted(schemas)
    for schema in bulk:
        assert schema["additionalProperties"] is False
        assert schema["oneOf"] == [
            {"required": ["ids"], "properties": {"ids": {"type": "array"}}},
            {"required": ["filter"], "properties": {"filter": {"type": "object"}}},
        ]


def test_a_number_is_not_a_date_time(client: TestClient[Any]) -> None:
    """``until=0.5`` used to be read as a Unix time; the schema says ISO 8601."""
    for name in ("since", "until"):
        response = client.get("/dead-letters", params={name: "0.5"})
        assert response.status_code == 422, response.text
        assert "ISO 8601" in response.json()["detail"]
    assert client.get("/dead-letters", params={"until": "2026-11-01T00:00:00Z"}).status_code == 200
