"""Documents in flight at once share the model's calls, and each keeps its own vectors.

Real processes: a worker runs every stage but embed, so uploaded documents pile up at
embed; then one embed worker process with four threads starts on that backlog. Its
threads claim four documents at once and hand their chunks to the process's one
inference threads, which embed what is queued in shared calls. The worker's own
Prometheus exposition shows calls shared by more than one request, and every chunk's
stored vector is the one the model gives that chunk alone. The four threads also hold
all four of the stack's pooled connections at once, so the test shows too that their
progress reports need no fifth.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from pipeline.embedding import make_embedder
from pipeline.settings import Settings
from tests.support.processes import ProcessStack, free_port, stack_maker, wait_until

pytestmark = pytest.mark.slow

NOT_EMBED = ("validate", "extract", "ocr", "chunk", "index")
DOCUMENTS = 6
TOPICS = ("glaciers", "tidal energy", "bee colonies", "compilers", "bread", "volcanoes")


def body(number: int) -> bytes:
    """Five or six chunks' worth of text, different for every document: the attempts
    last in line take over half a second (when progress is first written)."""
    topic = TOPICS[number % len(TOPICS)]
    paragraphs = [
        f"Report {number}, part {part}, on {topic}. "
        + " ".join(f"Observation {number}.{part}.{n} about {topic} was noted." for n in range(16))
        for part in range(4)
    ]
    return "\n\n".join(paragraphs).encode()


class Stack(ProcessStack):
    def embed_rows(self, status: str) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(
                text("SELECT count(*) FROM stage_runs WHERE stage = 'embed' AND status = :s"),
                {"s": status},
            ).scalar()
        return int(found or 0)

    def embed_progress(self, document_id: str) -> tuple[int, int]:
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT progress_current, progress_total FROM stage_runs "
                    "WHERE stage = 'embed' AND document_id = :id"
                ),
                {"id": document_id},
            ).one()
        return (row.progress_current, row.progress_total)

    def chunks(self, document_id: str) -> list[tuple[str, list[float], str]]:
        with self.engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT text, embedding, embedding_model FROM chunks "
                    "WHERE document_id = :id ORDER BY ordinal"
                ),
                {"id": document_id},
            ).all()
        return [(row.text, list(row.embedding), row.embedding_model) for row in found]


@pytest.fixture
def make_stack(settings: Settings, engine: Engine, tmp_path: Path, api_key: str) -> Iterator[Any]:
    with stack_maker(settings, engine, tmp_path, api_key, Stack) as make:
        yield make


def samples(metrics: str, name: str) -> float:
    """The value of one unlabelled sample in a Prometheus text exposition."""
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert found, f"{name} is not exposed"
    return float(found.group(1))


def test_documents_in_flight_share_model_calls_and_keep_their_own_vectors(
    make_stack: Any,
) -> None:
    stack: Stack = make_stack(PIPELINE_EMBEDDER="minilm")
    stack.processes.worker(*[arg for s in NOT_EMBED for arg in ("--stage", s)], name="rest")
    ids = [stack.upload(f"report-{n}.txt", body(n)) for n in range(DOCUMENTS)]
    wait_until(lambda: stack.embed_rows("queued") == DOCUMENTS, 60, "the backlog at embed")

    port = free_port()
    stack.processes.start(
        "worker",
        "--stage",
        "embed",
        "--processes",
        "1",
        "--threads",
        "4",
        "--metrics-port",
        str(port),
        name="embed",
    )
    wait_until(lambda: all(stack.status(i) == "succeeded" for i in ids), 120, "every document done")

    # Four threads held four of the pool's four connections while they computed: their
    # progress reports went on those, not on a fifth the pool does not have.
    assert "could not record progress" not in stack.processes.log("embed")

    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    calls = samples(metrics, "pipeline_embed_call_requests_count")
    shares = samples(metrics, "pipeline_embed_call_requests_sum")
    texts = samples(metrics, "pipeline_embed_call_texts_sum")
    assert shares > calls, f"no model call was shared by two documents: {metrics}"

    stored = {i: stack.chunks(i) for i in ids}
    assert texts == sum(len(chunks) for chunks in stored.values())
    model = make_embedder(
        Settings().replace(embedding={"embedder": "minilm", "shared_batches": False})
    )
    reported = 0
    for document_id, chunks in stored.items():
        assert len(chunks) >= 2
        # Progress is written from 0.5 s on: the documents first in line finish sooner.
        progress = stack.embed_progress(document_id)
        assert progress in ((None, None), (len(chunks), len(chunks)))
        reported += progress == (len(chunks), len(chunks))
        alone = model.embed([chunk_text for chunk_text, _, _ in chunks])
        for (_, vector, name), expected in zip(chunks, alone, strict=True):
            assert name == model.name
            cosine = math.fsum(a * b for a, b in zip(vector, expected, strict=True))
            assert cosine >= 0.99999
    assert reported, "no attempt lasted long enough to report progress"
