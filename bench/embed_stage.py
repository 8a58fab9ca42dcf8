"""The embed stage's throughput with the model embedder, beside the model's own.

    uv run python bench/embed_stage.py [--documents 120] [--threads 2] [--runs 3]
        [--corpus /work/shared/data/scifact/corpus.jsonl]

Documents of about 4 KiB of real text (SciFact abstracts, read at run time) are taken
through validate, extract, ocr and chunk by a worker for those stages; their embed rows
then wait, queued, with their messages. Then, in the same run:

- ``stage``: a ``pipeline worker --stage embed --processes 1 --threads T`` drains them;
  its throughput is the chunks it embedded over the span from its first claim to its
  last completion (the model's load is not counted);
- ``model``: the same chunk texts through the model alone, in a process of its own, in
  batches of the embed stage's batch size, from T threads at once (as a worker's threads
  call it), timed the same way.

Prints chunks/s of each, the ratio, and the model alone at the per-document batch sizes
the stage makes (a document's chunks are one batch when it has at most the batch size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    bench_env,
    bench_key,
    clear_namespace,
    free_port,
    median,
    process,
    scratch_database,
    wait_http,
)
from sqlalchemy import create_engine, text

from pipeline.engine.artifacts import PackedStore
from pipeline.settings import Settings
from pipeline.stages.artifacts import CHUNKS

DEFAULT_CORPUS = Path("/work/shared/data/scifact/corpus.jsonl")
DOCUMENT_BYTES = 4096
PREPARE = ["validate", "extract", "ocr", "chunk"]


def documents_from(corpus: Path, count: int) -> list[str]:
    """``count`` texts of about 4 KiB, each made of consecutive abstracts."""
    texts, current = [], ""
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            current += json.loads(line)["text"].strip() + "\n\n"
            if len(current) >= DOCUMENT_BYTES:
                texts.append(current[:DOCUMENT_BYTES])
                current = ""
                if len(texts) == count:
                    break
    return texts


def upload(api: str, key: str, bodies: list[str]) -> None:
    import httpx

    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}) as client:
        for i, body in enumerate(bodies):
            response = client.post(
                "/documents", files={"file": (f"abstracts-{i}.txt", body.encode(), "text/plain")}
            )
            response.raise_for_status()


def wait_for(engine: Any, sql: str, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            if conn.execute(text(sql)).scalar_one() >= expected:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for: {sql}")
        time.sleep(0.2)


def stage_run(
    database_url: str, env: dict[str, str], documents: int, threads: int, logs: Path
) -> dict[str, float]:
    engine = create_engine(Settings.from_env(env).database.sqlalchemy_url)
    args = ["-m", "pipeline", "worker", "--stage", "embed", "--processes", "1"]
    with process([sys.executable, *args, "--threads", str(threads)], env, logs / "embed.log"):
        wait_for(
            engine,
            "SELECT count(*) FROM stage_runs WHERE stage = 'embed' AND status = 'succeeded'",
            documents,
            timeout=1800,
        )
    with engine.connect() as conn:
        span, chunks = conn.execute(
            text(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at)), "
                "(SELECT sum((detail->>'vectors')::int) FROM stage_events "
                " WHERE stage = 'embed' AND event = 'succeeded') "
                "FROM stage_runs WHERE stage = 'embed'"
            )
        ).one()
    engine.dispose()
    return {
        "seconds": float(span),
        "chunks": int(chunks),
        "chunks_per_s": int(chunks) / float(span),
    }


def chunk_texts(env: dict[str, str]) -> list[str]:
    """The chunk texts the stage embedded (decoded from the stored chunk plans)."""
    settings = Settings.from_env(env)
    engine = create_engine(settings.database.sqlalchemy_url)
    store = PackedStore(CHUNKS)
    texts: list[str] = []
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM documents ORDER BY created_at")).scalars().all()
        for document_id in ids:
            texts.extend(draft.text for draft in store.load(conn, document_id).chunks)
    engine.dispose()
    return texts


MODEL_ALONE = r"""
import json, sys, threading, time
from pipeline.embedding import make_embedder
from pipeline.settings import Settings

texts, threads, batch = json.load(sys.stdin), int(sys.argv[1]), int(sys.argv[2])
embedder = make_embedder(Settings.from_env())
embedder.embed(texts[:batch])  # warm up
shares = [texts[i::threads] for i in range(threads)]

def work(share):
    for offset in range(0, len(share), batch):
        embedder.embed(share[offset : offset + batch])

started = time.monotonic()
workers = [threading.Thread(target=work, args=(share,)) for share in shares]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(json.dumps({"chunks_per_s": len(texts) / (time.monotonic() - started)}))
"""


def model_run(env: dict[str, str], texts: list[str], threads: int, batch: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", MODEL_ALONE, str(threads), str(batch)],
        input=json.dumps(texts),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["chunks_per_s"])


def one_run(bodies: list[str], threads: int, logs: Path) -> dict[str, Any]:
    namespace = f"bench-embed-{os.getpid()}-{time.monotonic_ns() % 100000}"
    with scratch_database("embed-stage") as database_url:
        env = {**bench_env(database_url, namespace), "PIPELINE_EMBEDDER": "minilm"}
        settings = Settings.from_env(env)
        key = bench_key(settings)
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        engine = create_engine(settings.database.sqlalchemy_url)
        try:
            stages = [option for stage in PREPARE for option in ("--stage", stage)]
            prepare = ["-m", "pipeline", "worker", *stages, "--processes", "1"]
            with (
                process(
                    [sys.executable, "-m", "pipeline", "api", "--port", str(port)],
                    env,
                    logs / "api.log",
                ),
                process([sys.executable, *prepare, "--threads", "2"], env, logs / "prepare.log"),
            ):
                wait_http(api + "/ready", timeout=60)
                upload(api, key, bodies)
                wait_for(
                    engine,
                    "SELECT count(*) FROM stage_runs WHERE stage = 'embed' AND status = 'queued'",
                    len(bodies),
                    timeout=600,
                )
            stage = stage_run(database_url, env, len(bodies), threads, logs)
            texts = chunk_texts(env)
            model = model_run(env, texts, threads, settings.embedding.batch_size)
        finally:
            engine.dispose()
            clear_namespace(namespace)
    per_document = len(texts) / len(bodies)
    return {
        "stage": stage["chunks_per_s"],
        "model": model,
        "ratio": stage["chunks_per_s"] / model,
        "chunks": len(texts),
        "chunks_per_document": per_document,
        "texts": texts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    options = parser.parse_args()
    bodies = documents_from(options.corpus, options.documents)
    logs = Path(tempfile.mkdtemp(prefix="bench-embed-stage-"))
    results = [one_run(bodies, options.threads, logs) for _ in range(options.runs)]
    for number, result in enumerate(results, 1):
        print(
            f"run {number}: stage {result['stage']:.1f} chunks/s, model alone "
            f"{result['model']:.1f} chunks/s, ratio {result['ratio']:.2f} "
            f"({result['chunks']} chunks, {result['chunks_per_document']:.1f} per document)"
        )
    print(
        f"median: stage {median([r['stage'] for r in results]):.1f}, model "
        f"{median([r['model'] for r in results]):.1f} chunks/s, ratio "
        f"{median([r['ratio'] for r in results]):.2f}"
    )
    env = {**os.environ, "PIPELINE_EMBEDDER": "minilm"}
    texts = results[-1]["texts"]
    for batch in (1, 2, 4, 5, 8):
        rate = model_run(env, texts, options.threads, batch)
        print(f"model alone, batch {batch}, {options.threads} threads: {rate:.1f} chunks/s")


if __name__ == "__main__":
    main()
