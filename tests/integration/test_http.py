"""The HTTP surface: uploads and their refusals, reads, pagination, health."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.http.app import create_app
from pipeline.settings import Settings
from tests.support.api import assert_problem, bearer, upload
from tests.support.documents import wait_for_document

TEXT = b"Plain text about glaciers.\n\nA second paragraph about fjords."

# Fixed, so that every pytest-xdist worker collects the same test ids.
UNKNOWN_ID = uuid.UUID("3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2b7a14")


def count_documents(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM documents")).scalar_one())


def test_multipart_upload_answers_202_with_location(client: TestClient[Any], worker: Any) -> None:
    response = upload(client, TEXT, filename="notes.txt")
    assert response.status_code == 202
    body = response.json()
    document_id = body["id"]
    assert uuid.UUID(document_id)
    assert body["status"] == "pending"
    assert body["links"]["self"] == f"/documents/{document_id}"
    assert response.headers["location"] == f"/documents/{document_id}"
    document = wait_for_document(client, document_id)
    assert document["status"] == "succeeded"
    assert document["filename"] == "notes.txt"


def test_raw_body_upload_uses_query_filename(client: TestClient[Any], worker: Any) -> None:
    response = client.post(
        "/documents",
        params={"filename": "../../etc/raw.md"},
        content=b"# Title\n\nSome *markdown* body text.\n\n- one\n- two\n",
        headers={"Content-Type": "text/markdown"},
    )
    assert response.status_code == 202, response.text
    document = wait_for_document(client, response.json()["id"])
    assert document["status"] == "succeeded"
    assert document["filename"] == "raw.md"
    assert document["declared_content_type"] == "text/markdown"
    assert document["kind"] == "markdown"


def test_same_idempotency_key_same_bytes_returns_the_first_document(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = upload(client, TEXT, headers=key)
    before = count_documents(engine)
    second = upload(client, TEXT, headers=key)
    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert count_documents(engine) == before


def test_same_idempotency_key_different_bytes_is_409(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = upload(client, TEXT, headers=key)
    before = count_documents(engine)
    second = upload(client, TEXT + b" changed", headers=key)
    assert_problem(second, 409, "already used for a different file")
    assert second.json()["document_id"] == first.json()["id"]
    assert count_documents(engine) == before


def test_over_the_size_limit_is_413_and_writes_nothing(
    client: TestClient[Any], engine: Engine
) -> None:
    before = count_documents(engine)
    too_big = b"a" * (1024 * 1024 + 1)
    assert_problem(upload(client, too_big), 413, "limit")
    raw = client.post(
        "/documents", content=b"a" * (2 * 1024 * 1024), headers={"Content-Type": "text/plain"}
    )
    assert raw.status_code == 413
    assert count_documents(engine) == before


@pytest.mark.parametrize("content_type", ["image/gif", "video/mp4", "application/zip"])
def test_never_supported_declared_type_is_415(
    client: TestClient[Any], engine: Engine, content_type: str
) -> None:
    before = count_documents(engine)
    assert_problem(upload(client, b"\x89PNG....", "x.bin", content_type), 415, content_type)
    assert count_documents(engine) == before


def test_empty_file_is_422(client: TestClient[Any], engine: Engine) -> None:
    before = count_documents(engine)
    assert_problem(upload(client, b""), 422, "empty")
    raw = client.post("/documents", content=b"", headers={"Content-Type": "text/plain"})
    assert_problem(raw, 422, "empty")
    assert count_documents(engine) == before


def test_multipart_without_file_field_is_422(client: TestClient[Any]) -> None:
    response = client.post("/documents", files={"other": ("a.txt", b"hello", "text/plain")})
    assert_problem(response, 422, "'file'")


@pytest.mark.parametrize(
    "path",
    [
        f"/documents/{UNKNOWN_ID}",
        "/documents/not-a-uuid",
        f"/documents/{UNKNOWN_ID}/chunks",
        "/documents/%27%3B%20drop/chunks",
    ],
)
def test_unknown_or_malformed_ids_are_404(client: TestClient[Any], path: str) -> None:
    assert_problem(client.get(path), 404, "no document")


def test_unknown_route_is_a_problem_document(client: TestClient[Any]) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_list_documents_filters_and_paginates(client: TestClient[Any], worker: Any) -> None:
    ids = [upload(client, TEXT + str(i).encode()).json()["id"] for i in range(3)]
    for document_id in ids:
        wait_for_document(client, document_id)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "status": "succeeded"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/documents", params=params).json()
        assert len(page["items"]) <= 2
        assert all(item["status"] == "succeeded" for item in page["items"])
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)
    # newest first
    assert seen.index(ids[2]) < seen.index(ids[1]) < seen.index(ids[0])


def test_list_documents_rejects_bad_filters(client: TestClient[Any]) -> None:
    assert client.get("/documents", params={"status": "exploded"}).status_code == 422
    assert_problem(client.get("/documents", params={"cursor": "garbage"}), 422, "cursor")
    assert client.get("/documents", params={"limit": 0}).status_code == 422


def test_search_validation(client: TestClient[Any]) -> None:
    assert client.get("/search").status_code == 422
    assert_problem(client.get("/search", params={"q": "   "}), 422, "blank")
    assert client.get("/search", params={"q": "x", "limit": 1000}).status_code == 422


def test_health_ready_and_schema(client: TestClient[Any]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    schema = client.get("/schema/openapi.json").json()
    assert "/documents" in schema["paths"]
    assert "multipart/form-data" in schema["paths"]["/documents"]["post"]["requestBody"]["content"]


def test_database_down_is_503_not_500(api_key: str) -> None:
    unreachable = Settings().replace(database={"url": "postgresql://postgres@127.0.0.1:1/nowhere"})
    with TestClient(create_app(unreachable)) as down:
        down.headers.update(bearer(api_key))  # checking the key needs the database too
        response = upload(down, TEXT)
        assert_problem(response, 503, "database is unavailable")
        assert response.headers["retry-after"] == "5"
        assert_problem(down.get(f"/documents/{uuid.uuid4()}"), 503, "unavailable")
        assert_problem(down.get("/ready"), 503, "Postgres")


def test_stages_and_metrics_show_per_stage_numbers(client: TestClient[Any], worker: Any) -> None:
    document_id = upload(client, TEXT, "observed.txt").json()["id"]
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    overview = client.get("/stages").json()
    assert [stage["stage"] for stage in overview["stages"]] == [
        "validate",
        "extract",
        "ocr",
        "chunk",
        "embed",
        "index",
    ]
    index = overview["stages"][-1]
    assert index["succeeded_5m"] >= 1
    assert index["p50_ms"] is not None
    assert index["p95_ms"] >= index["p50_ms"]
    assert set(index["queue"]) == {"ready", "delayed", "dead"}
    assert overview["documents"]["succeeded"] >= 1
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    body = metrics.text
    assert 'pipeline_queue_messages{stage="extract",state="ready"}' in body
    assert 'pipeline_stage_attempts_recent{outcome="succeeded",stage="index"}' in body
    assert 'pipeline_documents{status="succeeded"}' in body
    assert 'path="/documents/{document_id}"' in body  # route templates, not raw ids


def test_a_document_shows_the_encoding_validation_detected(
    client: TestClient[Any], worker: Any
) -> None:
    text = (
        "Городская библиотека открылась после ремонта.\n\n"
        "Читатели первыми увидели обновлённый читальный зал и комнату для детей.\n"
    )
    response = upload(client, text.encode("cp1251"), filename="news.txt")
    document = wait_for_document(client, response.json()["id"])
    assert (document["status"], document["encoding"]) == ("succeeded", "windows-1251")
    chunks = client.get(f"/documents/{document['id']}/chunks").json()["chunks"]
    assert chunks[0]["text"].startswith("Городская библиотека")


def test_mojibake_fails_with_a_permanent_reason(client: TestClient[Any], worker: Any) -> None:
    text = "Le marché du samedi… l\u2019été à Annecy, où les cafés s\u2019installent au lac."
    garbled = text.encode("utf-8").decode("cp1252").encode("utf-8")  # read as 1252, saved
    document = wait_for_document(client, upload(client, garbled).json()["id"])
    assert document["status"] == "failed"
    assert "garbled (mojibake)" in document["failure_reason"]
    assert document["encoding"] is None
