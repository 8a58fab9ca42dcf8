"""Replace by the client's own key: ``PUT /documents/by-key/{external_id}``.

Created when new, a no-op for the same bytes, a new generation for new bytes whose
chunks replace the old ones in one transaction: concurrent searches see the chunks of
exactly one generation, never both and never neither. Each test uses a tenant of its own.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dramatiq
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.settings import Settings
from tests.support.api import AsKey, bearer, make_key
from tests.support.documents import events, wait_for_document
from tests.support.processes import wait_until

COMMON = "quillwort"
"""A word every generation's text holds (what the concurrent searches look for)."""


def tenant_key(client: TestClient[Any], engine: Engine) -> tuple[AsKey, str]:
    tenant = f"replace-{uuid.uuid4().hex[:8]}"
    key = make_key(engine, tenant=tenant)
    return AsKey(client, key), key


def put(as_key: AsKey, key: str, body: bytes, name: str = "doc.txt") -> Any:
    return as_key.request(
        "PUT", f"/documents/by-key/{key}", files={"file": (name, body, "text/plain")}
    )


def generation_text(tag: str, paragraphs: int = 3) -> bytes:
    """Several chunks' worth of text; every sentence names ``COMMON`` and ``tag``."""
    sentence = f"The {COMMON} {tag} grows beside the pond and {tag} stays green all year. "
    paragraph = sentence * 40
    return "\n\n".join([paragraph] * paragraphs).encode()


def chunk_texts(engine: Engine, document_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT text FROM chunks WHERE document_id = :id ORDER BY ordinal"),
                {"id": document_id},
            ).scalars()
        )


def wait_generation(as_key: AsKey, document_id: str, generation: int) -> dict[str, Any]:
    def done() -> bool:
        document = as_key.get(f"/documents/{document_id}").json()
        return bool(
            document["generation"] == generation and document["status"] in ("succeeded", "failed")
        )

    wait_until(done, 60, f"generation {generation} to finish")
    document: dict[str, Any] = as_key.get(f"/documents/{document_id}").json()
    return document


def test_create_then_same_bytes_then_new_bytes(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    as_key, _ = tenant_key(client, engine)
    key = "crm:contract-42"
    created = put(as_key, key, generation_text("alphaone"))
    assert created.status_code == 202, created.text
    body = created.json()
    assert body["outcome"] == "created"
    assert body["generation"] == 1
    document_id = body["id"]
    assert created.headers["location"] == f"/documents/{document_id}"
    assert wait_for_document(as_key, document_id)["status"] == "succeeded"
    by_key = as_key.get(f"/documents/by-key/{key}")
    assert by_key.status_code == 200
    assert by_key.json()["id"] == document_id
    assert by_key.json()["external_id"] == key

    before = events(engine, document_id)
    same = put(as_key, key, generation_text("alphaone"), name="renamed.txt")
    assert same.status_code == 200, same.text
    assert same.json()["outcome"] == "unchanged"
    assert same.json()["generation"] == 1
    assert events(engine, document_id) == before  # no new events, so no messages either

    old_chunks = chunk_texts(engine, document_id)
    replaced = put(as_key, key, generation_text("betatwo"), name="v2.txt")
    assert replaced.status_code == 202, replaced.text
    assert replaced.json()["outcome"] == "replaced"
    assert replaced.json()["generation"] == 2
    assert replaced.json()["id"] == document_id
    document = wait_generation(as_key, document_id, 2)
    assert document["status"] == "succeeded"
    assert document["filename"] == "v2.txt"
    new_chunks = chunk_texts(engine, document_id)
    assert new_chunks
    assert all("betatwo" in c and "alphaone" not in c for c in new_chunks)
    assert all("alphaone" in c for c in old_chunks)
    [event] = [e for e in events(engine, document_id) if e["event"] == "replaced"]
    assert event["detail"]["previous_generation"] == 1
    assert event["detail"]["previous_sha256"] != event["detail"]["sha256"]
    assert event["detail"]["by"].startswith("api:replace-")
    lexical = {"q": "alphaone", "mode": "lexical"}
    assert as_key.get("/search", params=lexical).json()["hits"] == []
    assert as_key.get("/documents/by-key/no-such-key").status_code == 404


def test_two_puts_of_a_new_key_at_once_make_one_document(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    as_key, _ = tenant_key(client, engine)
    key = f"race-{uuid.uuid4().hex[:6]}"
    barrier = threading.Barrier(2)

    def one(tag: str) -> Any:
        barrier.wait()
        return put(as_key, key, generation_text(tag, paragraphs=1))

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(one, ["racerone", "racertwo"]))
    assert sorted(a.status_code for a in answers) == [202, 202], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sorted(a.json()["outcome"] for a in answers) == ["created", "replaced"]
    document_id = answers[0].json()["id"]
    document = wait_generation(as_key, document_id, 2)
    assert document["status"] == "succeeded"
    texts = chunk_texts(engine, document_id)
    assert texts
    # The replace's bytes won: every chunk holds the same one of the two texts.
    assert len({("racerone" in t, "racertwo" in t) for t in texts}) == 1


def test_back_to_back_replaces_leave_only_the_last(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    """Replaces that land while the previous generation is mid-pipeline: the old
    generation's stages lose (stale or superseded), and only the last one's chunks stay."""
    as_key, _ = tenant_key(client, engine)
    key = "rapid"
    document_id = put(as_key, key, generation_text("rapidzero")).json()["id"]
    for tag in ("rapidone", "rapidtwo", "rapidthree"):
        assert put(as_key, key, generation_text(tag)).status_code == 202
    document = wait_generation(as_key, document_id, 4)
    assert document["status"] == "succeeded"
    texts = chunk_texts(engine, document_id)
    assert texts
    assert all("rapidthree" in t for t in texts)


def test_replace_swaps_chunks_atomically_under_concurrent_searches(
    client: TestClient[Any],
    engine: Engine,
    settings: Settings,
    broker: dramatiq.Broker,
    worker: Any,
) -> None:
    """A thread searches without pause (hybrid) while the document is replaced again and
    again: every result set holds chunks of exactly one generation of the document."""
    as_key, api_key = tenant_key(client, engine)
    key = "swap"
    tags = [f"gen{n}{uuid.uuid4().hex[:4]}" for n in range(5)]
    document_id = put(as_key, key, generation_text(tags[0])).json()["id"]
    assert wait_for_document(as_key, document_id)["status"] == "succeeded"

    stop = threading.Event()
    seen: list[list[str]] = []
    errors: list[str] = []

    def hammer() -> None:
        # A client of its own: one TestClient is not shared between threads.
        with TestClient(create_app(settings, dispatcher=Dispatcher(broker))) as searcher:
            searcher.headers.update(bearer(api_key))
            while not stop.is_set():
                response = searcher.get("/search", params={"q": COMMON, "limit": 50})
                if response.status_code != 200:
                    errors.append(response.text)
                    continue
                hits = [h for h in response.json()["hits"] if h["document_id"] == document_id]
                seen.append(
                    sorted({t for h in hits for t in tags if t in h["snippet"]}) or ["<none>"]
                )

    searching = threading.Thread(target=hammer)
    searching.start()
    try:
        for generation, tag in enumerate(tags[1:], start=2):
            assert put(as_key, key, generation_text(tag)).status_code == 202
            wait_generation(as_key, document_id, generation)
    finally:
        stop.set()
        searching.join(timeout=30)
    assert not errors, errors[:3]
    assert len(seen) > 20, len(seen)  # enough searches straddled the swaps to mean something
    mixed = [found for found in seen if len(found) != 1 or found == ["<none>"]]
    assert not mixed, mixed[:5]
    assert {found[0] for found in seen} >= {tags[0], tags[-1]}
