"""The embed stage's throughput with the model embedder, beside the model's own.

    uv run python bench/embed_stage.py [--documents 120] [--runs 3]
        [--variants unshared,unshared-4,unshared-b4,shared,shared-4,shared-1x2,shared-32]
        [--corpus /work/shared/data/scifact/corpus.jsonl]

Documents of about 4 KiB of real text (SciFact abstracts, read at run time: four or five
chunks each) are taken through validate, extract, ocr and chunk by a worker for those
stages; their embed rows then wait, queued, with their messages. Then, in the same run,
for each variant (``VARIANTS``: its worker threads and embedding settings) on a backlog
of its own:

- the stage: a ``pipeline worker --stage embed --processes 1 --threads T`` drains it;
  its throughput is the chunks it embedded over the span from its first claim to its
  last completion (the model's load is not counted);
- the model alone (``CEILINGS``): the same chunk texts, in a process of its own, in
  batches as large as it likes, from one or two calling threads, on the same two
  cores, timed the same way; the best of them is what the stage is compared with.

The variants' order alternates from run to run. Prints chunks/s of each and the ratio.
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
    """One embed worker drains the backlog; chunks/s from its first claim to its last
    completion (the model's load is not counted)."""
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


def _shared(callers: int, cores: int, texts: int) -> dict[str, str]:
    return {
        "PIPELINE_EMBED_SHARED_BATCHES": "true",
        "PIPELINE_EMBED_CALLERS": str(callers),
        "PIPELINE_EMBED_THREADS": str(cores),
        "PIPELINE_EMBED_CALL_TEXTS": str(texts),
    }


_UNSHARED = {"PIPELINE_EMBED_SHARED_BATCHES": "false", "PIPELINE_EMBED_THREADS": "1"}
VARIANTS: dict[str, tuple[int, dict[str, str]]] = {
    # name: (worker threads, environment)
    "unshared": (2, _UNSHARED),
    "unshared-4": (4, _UNSHARED),
    "unshared-b4": (2, {**_UNSHARED, "PIPELINE_EMBED_BATCH_SIZE": "4"}),
    "shared": (4, _shared(2, 1, 8)),
    "shared-4": (4, _shared(2, 1, 4)),
    "shared-1x2": (4, _shared(1, 2, 8)),
    "shared-32": (4, _shared(1, 2, 32)),
}
"""Worker configurations of the embed stage on two cores. ``unshared``: each worker
thread calls the model itself, on one core (two threads, as ``deploy/k8s`` runs it, or
four, ``pipeline worker``'s default; ``-b4``: in batches of 4 chunks, not 8).
``shared``: four threads feed shared calls of at most 8 texts from two inference
threads of one core each; ``-4``: calls of at most 4 (the defaults); ``-1x2``: one
inference thread using both cores; ``-32``: calls of up to 32 texts."""

CEILINGS: dict[str, tuple[int, int, str]] = {
    # name: (calling threads, batch, intra-op threads)
    "2 callers x 1 core, batch 4": (2, 4, "1"),
    "2 callers x 1 core, batch 8": (2, 8, "1"),
    "1 caller x 2 cores, batch 8": (1, 8, "2"),
    "1 caller x 2 cores, batch 32": (1, 32, "2"),
}
"""The model alone, batched as it likes, on the same two cores: the stage's throughput
is compared with the best of these."""


def prepare(bodies: list[str], env: dict[str, str], logs: Path) -> None:
    """Upload ``bodies`` and take them through the stages before embed."""
    settings = Settings.from_env(env)
    key = bench_key(settings)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    engine = create_engine(settings.database.sqlalchemy_url)
    stages = [option for stage in PREPARE for option in ("--stage", stage)]
    before_embed = ["-m", "pipeline", "worker", *stages, "--processes", "1"]
    try:
        with (
            process(
                [sys.executable, "-m", "pipeline", "api", "--port", str(port)],
                env,
                logs / "api.log",
            ),
            process([sys.executable, *before_embed, "--threads", "2"], env, logs / "prepare.log"),
        ):
            wait_http(api + "/ready", timeout=60)
            upload(api, key, bodies)
            wait_for(
                engine,
                "SELECT count(*) FROM stage_runs WHERE stage = 'embed' AND status = 'queued'",
                len(bodies),
                timeout=600,
            )
    finally:
        engine.dispose()


def one_run(bodies: list[str], variants: list[str], logs: Path) -> dict[str, Any]:
    """Each variant drains its own backlog; then the model alone, on the same chunks."""
    result: dict[str, Any] = {}
    texts: list[str] = []
    for variant in variants:
        threads, extra = VARIANTS[variant]
        namespace = f"bench-embed-{os.getpid()}-{time.monotonic_ns() % 100000}"
        with scratch_database("embed-stage") as database_url:
            env = {**bench_env(database_url, namespace), "PIPELINE_EMBEDDER": "minilm", **extra}
            try:
                prepare(bodies, env, logs)
                result[variant] = stage_run(database_url, env, len(bodies), threads, logs)
                texts = chunk_texts(env)
            finally:
                clear_namespace(namespace)
    base = {**os.environ, "PIPELINE_EMBEDDER": "minilm", "PIPELINE_EMBED_SHARED_BATCHES": "false"}
    ceilings = {
        name: model_run({**base, "PIPELINE_EMBED_THREADS": cores}, texts, callers, batch)
        for name, (callers, batch, cores) in CEILINGS.items()
    }
    result["ceilings"] = ceilings
    result["ceiling"] = max(ceilings.values())
    result["chunks"] = len(texts)
    result["chunks_per_document"] = len(texts) / len(bodies)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default="unshared,shared")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    options = parser.parse_args()
    variants = options.variants.split(",")
    bodies = documents_from(options.corpus, options.documents)
    logs = Path(tempfile.mkdtemp(prefix="bench-embed-stage-"))
    results = []
    for number in range(1, options.runs + 1):
        result = one_run(bodies, variants if number % 2 else variants[::-1], logs)
        results.append(result)
        ceilings = ", ".join(f"{name} {rate:.1f}" for name, rate in result["ceilings"].items())
        print(
            f"run {number} ({result['chunks']} chunks, "
            f"{result['chunks_per_document']:.1f} per document): model alone {ceilings}"
        )
        for variant in variants:
            stage = result[variant]
            print(
                f"  {variant}: {stage['chunks_per_s']:.1f} chunks/s "
                f"({stage['chunks_per_s'] / result['ceiling']:.2f} of the best model-alone)"
            )
    print("median:")
    print(f"  model alone (best): {median([r['ceiling'] for r in results]):.1f} chunks/s")
    for variant in variants:
        rates = [r[variant]["chunks_per_s"] for r in results]
        ratios = [r[variant]["chunks_per_s"] / r["ceiling"] for r in results]
        print(f"  {variant}: {median(rates):.1f} chunks/s, {median(ratios):.2f} of the model")


if __name__ == "__main__":
    main()
