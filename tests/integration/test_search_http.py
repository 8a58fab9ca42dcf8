"""GET /search end to end: documents go through the real stages (the embedding model
included), then each mode answers over HTTP. Each test works in a tenant of its own, so
what other tests uploaded is not in its lists (and tenant isolation is tested besides).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.embedding import make_embedder
from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.settings import Settings
from tests.support.api import AsKey, assert_problem, bearer, make_key, upload
from tests.support.documents import wait_for_document

CAT = b"The feline rested on the rug all afternoon, purring quietly."
TAXES = b"Quarterly tax filings are due at the end of the fiscal period."
PARAPHRASE = "a cat sleeping on a mat"
"""Shares no lexeme with CAT: only the model can find it."""


def tenant_client(client: TestClient[Any], engine: Engine) -> AsKey:
    return AsKey(client, make_key(engine, tenant=f"search-{uuid.uuid4().hex[:8]}"))


def ingest(as_key: AsKey, *bodies: tuple[bytes, str]) -> list[str]:
    ids = [upload(as_key, body, name).json()["id"] for body, name in bodies]
    for document_id in ids:
        assert wait_for_document(as_key, document_id)["status"] == "succeeded"
    return ids


def search(as_key: AsKey, q: str, **params: Any) -> dict[str, Any]:
    response = as_key.get("/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_each_mode_finds_what_it_can(client: TestClient[Any], engine: Engine, worker: Any) -> None:
    as_key = tenant_client(client, engine)
    cat, taxes = ingest(as_key, (CAT, "cat.txt"), (TAXES, "taxes.txt"))

    lexical = search(as_key, PARAPHRASE, mode="lexical")
    assert lexical["mode"] == "lexical"
    assert lexical["embedding_model"] is None
    assert lexical["hits"] == []  # no shared word

    semantic = search(as_key, PARAPHRASE, mode="semantic")
    assert semantic["embedding_model"] == "all-MiniLM-L6-v2"
    assert [hit["document_id"] for hit in semantic["hits"]] == [cat, taxes]
    assert semantic["hits"][0]["score"] > semantic["hits"][1]["score"] + 0.2
    assert semantic["hits"][0]["found_by"] == ["semantic"]
    assert semantic["hits"][0]["semantic_rank"] == 1

    hybrid = search(as_key, "feline tax")  # the default mode, with the model: hybrid
    assert hybrid["mode"] == "hybrid"
    by_document = {hit["document_id"]: hit for hit in hybrid["hits"]}
    assert set(by_document) == {cat, taxes}
    for hit in by_document.values():
        assert "lexical" in hit["found_by"]
        assert "semantic" in hit["found_by"]
        assert hit["score"] == pytest.approx(
            1 / (60 + hit["lexical_rank"]) + 1 / (60 + hit["semantic_rank"]), abs=1e-6
        )
    assert "**feline**" in by_document[cat]["snippet"].lower()


def test_one_hit_per_document_on_request(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    as_key = tenant_client(client, engine)
    paragraphs = [
        f"Paragraph {i}: glaciers carve valleys, and the glacier ice moves slowly. " * 8
        for i in range(12)
    ]
    (long,) = ingest(as_key, ("\n\n".join(paragraphs).encode(), "glaciers.txt"))
    every = search(as_key, "glacier ice", mode="lexical", limit=50)
    assert len(every["hits"]) > 1
    assert {hit["document_id"] for hit in every["hits"]} == {long}
    collapsed = search(as_key, "glacier ice", mode="lexical", limit=50, per_document="true")
    assert collapsed["per_document"] is True
    assert [hit["document_id"] for hit in collapsed["hits"]] == [long]
    assert collapsed["hits"][0]["chunk_ordinal"] == every["hits"][0]["chunk_ordinal"]
    # Hybrid: the two lists may rank different chunks of the document first; still one hit.
    hybrid = search(as_key, "glacier ice valleys", limit=50, per_document="true")
    assert [hit["document_id"] for hit in hybrid["hits"]] == [long]
    assert hybrid["hits"][0]["found_by"] == ["lexical", "semantic"]


def test_no_mode_sees_another_tenants_chunks(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    ours, theirs = tenant_client(client, engine), tenant_client(client, engine)
    ingest(theirs, (CAT, "cat.txt"))
    (taxes,) = ingest(ours, (TAXES, "taxes.txt"))
    for mode in ("lexical", "semantic", "hybrid"):
        hits = search(ours, "feline cat rug", mode=mode)["hits"]
        assert {hit["document_id"] for hit in hits} <= {taxes}, mode


def test_vectors_of_another_model_are_never_compared(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    as_key = tenant_client(client, engine)
    (cat,) = ingest(as_key, (CAT, "cat.txt"))
    # A chunk whose vector is the query's own, but recorded as another model's (as left by
    # a deployment that ran the hashing embedder before): semantic search must not see it.
    vector = make_embedder(Settings()).embed([PARAPHRASE])[0]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO chunks (document_id, tenant, ordinal, text, start_offset, end_offset, "
                "token_count, embedding, embedding_model) SELECT id, tenant, 99, 'other model', "
                "0, 1, 1, :vector, 'hashing-v1-384' FROM documents WHERE id = :id"
            ),
            {"vector": vector, "id": cat},
        )
    hits = search(as_key, PARAPHRASE, mode="semantic")["hits"]
    assert [(hit["document_id"], hit["chunk_ordinal"]) for hit in hits] == [(cat, 0)]


@pytest.fixture
def limited_client(settings: Settings, broker: dramatiq.Broker) -> Iterator[TestClient[Any]]:
    """An API process that may hold no vector in memory (and has no pgvector here)."""
    limited = settings.replace(search={"exact_max_vectors": 0})
    with TestClient(create_app(limited, dispatcher=Dispatcher(broker))) as limited_client:
        yield limited_client


def test_without_room_for_vectors_hybrid_is_lexical_and_semantic_says_why(
    client: TestClient[Any], limited_client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    key = make_key(engine, tenant=f"search-{uuid.uuid4().hex[:8]}")
    (cat,) = ingest(AsKey(client, key), (CAT, "cat.txt"))
    limited_client.headers.update(bearer(key))
    hybrid = limited_client.get("/search", params={"q": "feline"}).json()
    assert hybrid["mode"] == "hybrid"
    assert [hit["document_id"] for hit in hybrid["hits"]] == [cat]
    assert hybrid["hits"][0]["found_by"] == ["lexical"]
    assert "PIPELINE_SEARCH_EXACT_MAX_VECTORS" in hybrid["warnings"][0]
    response = limited_client.get("/search", params={"q": "feline", "mode": "semantic"})
    assert_problem(response, 409, "install pgvector")


def test_the_hashing_fallback_searches_lexically_by_default(
    settings: Settings,
    broker: dramatiq.Broker,
    client: TestClient[Any],
    engine: Engine,
    worker: Any,
) -> None:
    key = make_key(engine, tenant=f"search-{uuid.uuid4().hex[:8]}")
    (cat,) = ingest(AsKey(client, key), (CAT, "cat.txt"))
    hashing = settings.replace(embedding={"embedder": "hashing"})
    with TestClient(create_app(hashing, dispatcher=Dispatcher(broker))) as other:
        other.headers.update(bearer(key))
        body = other.get("/search", params={"q": "feline"}).json()
        # The worker embedded with the model: the hashing embedder's space has no vector.
        semantic = other.get("/search", params={"q": "feline", "mode": "semantic"}).json()
    assert body["mode"] == "lexical"
    assert [hit["document_id"] for hit in body["hits"]] == [cat]
    assert semantic["embedding_model"].startswith("hashing-v1-")
    assert semantic["hits"] == []


def test_bad_modes_are_problems(client: TestClient[Any]) -> None:
    response = client.get("/search", params={"q": "x", "mode": "fuzzy"})
    assert_problem(response, 422, "mode")
