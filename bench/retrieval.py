"""Retrieval benchmark: SciFact uploaded through the running pipeline, searched in each mode.

    uv run python bench/retrieval.py --keep --json /tmp/retrieval.json
    uv run python bench/retrieval.py --database-url URL --json /tmp/retrieval.json
    uv run python bench/retrieval.py --limit-docs 50 --modes lexical      # a smoke run

Options: ``--data DIR`` (default ``../shared/data/scifact`` from the repository root),
``--modes hybrid,lexical,semantic``, ``--queries N`` (the first N judged queries),
``--limit-docs N`` (ingest only the first N corpus documents), ``--uploads N`` (concurrent
uploads, 4), ``--database-url URL`` / ``--keep``, ``--json PATH``.

Starts ``pipeline api`` and two workers (validate/extract/chunk/index with 2 threads,
and embed alone with 2 (one a core: the model is the bottleneck); 2 cores
in all), then uploads every corpus abstract as ``<_id>.txt`` (title, blank line,
text) with ``POST /documents`` and waits until every one has succeeded, printing
documents/s and chunks/s. The database is a scratch one (dropped afterwards unless
``--keep``, which prints its URL); ``--database-url`` reuses one, uploading only the
corpus files it does not hold yet, so query runs can be repeated without re-ingesting.

Then, per mode, every claim of the split (``--split``, default train: the files
``queries.SPLIT.jsonl`` and ``qrels.SPLIT.tsv``) with judgements goes to ``GET
/search?mode=...&limit=100&per_document=true``, one request at a time after 10 warm-up
queries; hits map back to corpus ids by file name. Reports nDCG@10 and Recall@100
(definitions in ``retrieval_metrics.py``), p50/p95 latency measured around each request,
and how many queries got no hit, as a markdown table (stdout) and a JSON file
(``--json``).
Judgements about corpus documents the database does not hold are dropped (with
``--limit-docs``, queries left without any are skipped).

The embedder is whatever the environment selects (``PIPELINE_EMBEDDER``, ...): the API
and the workers inherit the same environment, so queries and chunks share one vector
space. SciFact is CC BY-NC 2.0: it is read at run time and never copied into the
repository. Progress goes to stderr; the processes' logs to a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec
from common import (
    PYTHON,
    ROOT,
    bench_env,
    bench_key,
    clear_namespace,
    free_port,
    process,
    scratch_database,
    wait_http,
)
from retrieval_metrics import (
    ModeSummary,
    QueryResult,
    ndcg_at_k,
    parse_qrels,
    recall_at_k,
    summarise,
    unique,
)
from sqlalchemy import Engine, create_engine, text

from pipeline.db.migrate import upgrade
from pipeline.errors import PipelineError
from pipeline.settings import Settings, to_sqlalchemy_url

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
MODES = ("hybrid", "lexical", "semantic")
WARMUP_QUERIES = 10
SEARCH_LIMIT = 100
SUFFIX = ".txt"
TENANT = "default"
"""The bench key's tenant (``common.bench_key``)."""
POLL_S = 1.0
PROGRESS_S = 5.0
STALL_S = 300.0
"""Fail when no document has finished for this long: a lost message, not a slow stage."""


class BenchmarkFailed(PipelineError):
    """The run cannot produce honest numbers: a document failed, a process died, a bad answer."""


# -- the data --------------------------------------------------------------------------


class CorpusDocument(msgspec.Struct, frozen=True):
    id: str = msgspec.field(name="_id")
    title: str = ""
    text: str = ""

    @property
    def filename(self) -> str:
        return f"{self.id}{SUFFIX}"

    def body(self) -> bytes:
        return f"{self.title}\n\n{self.text}".encode()


class Query(msgspec.Struct, frozen=True):
    id: str = msgspec.field(name="_id")
    text: str = ""


T = TypeVar("T")


def read_jsonl(path: Path, kind: type[T]) -> list[T]:
    decoder = msgspec.json.Decoder(kind)
    with path.open("rb") as lines:
        return [decoder.decode(line) for line in lines if line.strip()]


# -- the search API's answer (the contract; fields today's API lacks default to None) ---


class Hit(msgspec.Struct, frozen=True):
    document_id: uuid.UUID
    filename: str


class SearchAnswer(msgspec.Struct, frozen=True):
    query: str
    hits: list[Hit]
    mode: str | None = None
    embedding_model: str | None = None
    per_document: bool | None = None


# -- the report --------------------------------------------------------------------------


class IngestReport(msgspec.Struct, frozen=True):
    documents: int
    chunks: int
    upload_seconds: float
    seconds: float
    docs_per_s: float
    chunks_per_s: float


class ModeReport(msgspec.Struct, frozen=True):
    summary: ModeSummary
    server_mode: str | None
    embedding_model: str | None
    results: list[QueryResult]


class Report(msgspec.Struct, frozen=True):
    data: str
    corpus_documents: int
    indexed_documents: int
    queries: int
    ingest: IngestReport | None
    modes: list[ModeReport]


# -- the processes -----------------------------------------------------------------------


@dataclass
class Stack:
    """The running API and workers, and where their logs go."""

    url: str
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path
    env: dict[str, str]

    def check(self) -> None:
        """Fail at once when a process has exited, with the end of its log."""
        for name, proc in self.processes.items():
            code = proc.poll()
            if code is not None:
                log = self.logs / f"{name}.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise BenchmarkFailed(f"{name} exited with code {code}; end of {log}:\n{tail}")


@contextlib.contextmanager
def stack(database_url: str, logs: Path) -> Iterator[Stack]:
    namespace = f"bench-retrieval-{uuid.uuid4().hex[:6]}"
    env = bench_env(database_url, namespace)
    port = free_port()
    pipeline = [PYTHON, "-m", "pipeline", "--log-level", "WARNING"]
    worker = [*pipeline, "worker", "--processes", "1", "--metrics-port", "0"]
    cheap = [f"--stage={stage}" for stage in ("validate", "extract", "ocr", "chunk", "index")]
    commands = {
        "api": [*pipeline, "api", "--port", str(port)],
        "worker": [*worker, *cheap, "--threads", "2"],
        "embed": [*worker, "--stage=embed", "--threads", "2"],
    }
    try:
        with contextlib.ExitStack() as running:
            procs = {
                name: running.enter_context(process(args, env, logs / f"{name}.log"))
                for name, args in commands.items()
            }
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/health", timeout=60)
            yield Stack(url, procs, logs, env)
    finally:
        clear_namespace(namespace)


@contextlib.contextmanager
def database(database_url: str | None, keep: bool) -> Iterator[str]:
    """The database to run against: the one given (migrated to this code's schema first,
    so a kept database follows new migrations; never dropped), or a scratch one."""
    if database_url is None:
        with scratch_database("retrieval", keep=keep) as url:
            try:
                yield url
            finally:
                if keep:
                    print(f"kept the database: --database-url {url}", file=sys.stderr)
        return
    settings = Settings().replace(database={"url": database_url})
    upgrade(settings)
    os.environ["PIPELINE_API_KEY"] = bench_key(settings)
    try:
        yield database_url
    finally:
        os.environ.pop("PIPELINE_API_KEY", None)


def client(url: str) -> httpx.Client:
    key = os.environ["PIPELINE_API_KEY"]
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=httpx.Timeout(120)
    )


# -- ingest ------------------------------------------------------------------------------

STATE_SQL = text(
    """
    SELECT count(DISTINCT filename) FILTER (WHERE status = 'succeeded'),
           count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed'))
    FROM documents WHERE tenant = :tenant AND filename = ANY(:names)
    """
)
FAILURES_SQL = text(
    """
    SELECT d.filename, d.failure_reason, s.stage, s.error_type, s.error_message
    FROM documents d
    LEFT JOIN stage_runs s ON s.document_id = d.id AND s.error_message IS NOT NULL
    WHERE d.tenant = :tenant AND d.filename = ANY(:names) AND d.status = 'failed'
    ORDER BY d.filename LIMIT 10
    """
)
CHUNKS_SQL = text(
    """
    SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id
    WHERE d.tenant = :tenant AND d.filename = ANY(:names) AND d.status = 'succeeded'
    """
)


def filenames_present(
    engine: Engine, names: Sequence[str], *, succeeded_only: bool = False
) -> set[str]:
    """Which of ``names`` the database holds a document for (a succeeded one, if asked)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT DISTINCT filename FROM documents WHERE tenant = :t "
                "AND filename = ANY(:n) AND (status = 'succeeded' OR NOT :succeeded_only)"
            ),
            {"t": TENANT, "n": list(names), "succeeded_only": succeeded_only},
        )
        return {row[0] for row in rows}


def state(engine: Engine, names: list[str]) -> tuple[int, int, int]:
    """Corpus files with a succeeded document; failed and unfinished documents."""
    with engine.connect() as conn:
        succeeded, failed, unfinished = conn.execute(
            STATE_SQL, {"tenant": TENANT, "names": names}
        ).one()
    return int(succeeded), int(failed), int(unfinished)


def failures(engine: Engine, names: list[str]) -> str:
    with engine.connect() as conn:
        rows = conn.execute(FAILURES_SQL, {"tenant": TENANT, "names": names}).all()
    return "\n".join(
        f"  {name}: {reason} (stage {stage}: {kind}: {message})"
        for name, reason, stage, kind, message in rows
    )


def upload(http: httpx.Client, document: CorpusDocument) -> None:
    files = {"file": (document.filename, document.body(), "text/plain")}
    response = http.post("/documents", files=files)
    if response.status_code != 202:
        raise BenchmarkFailed(
            f"uploading {document.filename}: {response.status_code} {response.text[:500]}"
        )


def ingest(
    run: Stack, engine: Engine, corpus: list[CorpusDocument], concurrency: int
) -> IngestReport | None:
    """Upload the corpus files the database lacks and wait until every corpus file has a
    succeeded document; None when there was nothing to upload (no ingest to time)."""
    names = [d.filename for d in corpus]
    present = filenames_present(engine, names)
    missing = [d for d in corpus if d.filename not in present]
    _, failed, unfinished = state(engine, names)
    log(f"{len(present)} of {len(corpus)} corpus files already in the database")
    if not missing and failed == 0 and unfinished == 0:
        return None
    if unfinished:
        # Left by an interrupted run: their messages were in that run's Redis namespace.
        log(f"{unfinished} unfinished documents: one reconciler sweep re-sends their messages")
        reconcile = [PYTHON, "-m", "pipeline", "--log-level", "WARNING", "reconciler", "--once"]
        with process(reconcile, run.env, run.logs / "reconciler.log") as proc:
            proc.wait()
    started = time.monotonic()
    with client(run.url) as http, ThreadPoolExecutor(concurrency) as pool:
        futures: list[Future[None]] = [pool.submit(upload, http, d) for d in missing]
        try:
            uploaded_at = wait(run, engine, names, futures, started)
        finally:
            pool.shutdown(cancel_futures=True)
    elapsed = time.monotonic() - started
    if not missing:
        return None
    uploaded = [d.filename for d in missing]
    with engine.connect() as conn:
        chunks = int(conn.execute(CHUNKS_SQL, {"tenant": TENANT, "names": uploaded}).scalar_one())
    report = IngestReport(
        documents=len(missing),
        chunks=chunks,
        upload_seconds=uploaded_at - started,
        seconds=elapsed,
        docs_per_s=len(missing) / elapsed,
        chunks_per_s=chunks / elapsed,
    )
    log(
        f"ingested {report.documents} documents ({report.chunks} chunks) in "
        f"{report.seconds:.1f} s: {report.docs_per_s:.1f} docs/s, {report.chunks_per_s:.1f} "
        f"chunks/s (uploads took {report.upload_seconds:.1f} s)"
    )
    return report


def wait(
    run: Stack, engine: Engine, names: list[str], futures: list[Future[None]], started: float
) -> float:
    """Poll until every corpus file has succeeded; returns when the last upload finished.
    Fails on the first failed upload or document, a dead process, or a stall."""
    uploaded_at: float | None = None if futures else started
    last_progress = last_print = started
    last_succeeded = -1
    while True:
        run.check()
        done = [f for f in futures if f.done()]
        for future in done:
            future.result()  # raises the upload's error
        now = time.monotonic()
        if uploaded_at is None and len(done) == len(futures):
            uploaded_at = now
        succeeded, failed, unfinished = state(engine, names)
        if failed:
            raise BenchmarkFailed(f"{failed} documents failed:\n{failures(engine, names)}")
        if succeeded != last_succeeded:
            last_succeeded, last_progress = succeeded, now
        if now - last_print >= PROGRESS_S or succeeded == len(names):
            last_print = now
            log(
                f"[{now - started:6.1f}s] uploaded {len(done)}/{len(futures)}, "
                f"succeeded {succeeded}/{len(names)}, unfinished {unfinished}"
            )
        if succeeded == len(names) and unfinished == 0:
            return now if uploaded_at is None else uploaded_at
        if uploaded_at is not None and now - last_progress > STALL_S:
            raise BenchmarkFailed(
                f"no document finished for {STALL_S:.0f} s ({succeeded}/{len(names)} succeeded,"
                f" {unfinished} unfinished); logs in {run.logs}"
            )
        time.sleep(POLL_S)


# -- search ------------------------------------------------------------------------------


def search(http: httpx.Client, query: str, mode: str) -> tuple[SearchAnswer, float]:
    """One search and the milliseconds it took, request to response."""
    params: dict[str, str | int] = {
        "q": query,
        "mode": mode,
        "limit": SEARCH_LIMIT,
        "per_document": "true",
    }
    started = time.perf_counter()
    response = http.get("/search", params=params)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise BenchmarkFailed(
            f"GET /search ({mode}, {query!r}): {response.status_code} {response.text[:500]}"
        )
    answer = msgspec.json.decode(response.content, type=SearchAnswer)
    if answer.mode is not None and answer.mode != mode:
        raise BenchmarkFailed(f"asked for mode {mode!r}, the API answered {answer.mode!r}")
    return answer, elapsed_ms


def run_mode(
    http: httpx.Client, mode: str, queries: list[Query], qrels: dict[str, set[str]]
) -> ModeReport:
    for i in range(WARMUP_QUERIES):
        search(http, queries[i % len(queries)].text, mode)
    results: list[QueryResult] = []
    first: SearchAnswer | None = None
    for query in queries:
        answer, elapsed_ms = search(http, query.text, mode)
        first = first or answer
        ranking = unique(hit.filename.removesuffix(SUFFIX) for hit in answer.hits)
        relevant = qrels[query.id]
        results.append(
            QueryResult(
                query_id=query.id,
                ndcg_at_10=ndcg_at_k(ranking, relevant, 10),
                recall_at_100=recall_at_k(ranking, relevant, SEARCH_LIMIT),
                latency_ms=elapsed_ms,
                hits=len(ranking),
            )
        )
    assert first is not None
    if first.mode is None:
        log(f"warning: the API does not say which mode it ran (asked {mode!r}): pre-contract?")
    summary = summarise(mode, results)
    log(f"{mode}: nDCG@10 {summary.ndcg_at_10:.4f}, p50 {summary.p50_ms:.1f} ms")
    return ModeReport(summary, first.mode, first.embedding_model, results)


# -- output ------------------------------------------------------------------------------


def table(report: Report) -> str:
    lines = [
        "| mode | nDCG@10 | Recall@100 | p50 ms | p95 ms | queries without hits |",
        "|---|---|---|---|---|---|",
    ]
    for mode in report.modes:
        s = mode.summary
        lines.append(
            f"| {s.mode} | {s.ndcg_at_10:.4f} | {s.recall_at_100:.4f} | {s.p50_ms:.1f} "
            f"| {s.p95_ms:.1f} | {s.queries_without_hits}/{s.queries} |"
        )
    models = sorted({m.embedding_model for m in report.modes if m.embedding_model})
    lines.append(
        f"\n{report.queries} judged SciFact queries over {report.indexed_documents} "
        f"of {report.corpus_documents} corpus documents; limit={SEARCH_LIMIT}, "
        f"per_document=true, sequential after {WARMUP_QUERIES} warm-up queries"
        + (f"; embedding model {', '.join(models)}" if models else "")
    )
    if report.ingest is not None:
        i = report.ingest
        lines.append(
            f"ingest: {i.documents} documents, {i.chunks} chunks in {i.seconds:.1f} s "
            f"({i.docs_per_s:.1f} docs/s, {i.chunks_per_s:.1f} chunks/s)"
        )
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--split",
        default="train",
        help="which queries and judgements: queries.SPLIT.jsonl and qrels.SPLIT.tsv in --data",
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--queries", type=int, default=None, help="the first N judged queries")
    parser.add_argument("--limit-docs", type=int, default=None, help="the first N documents")
    parser.add_argument("--uploads", type=int, default=4, help="concurrent uploads")
    parser.add_argument("--database-url", default=None, help="reuse this (ingested) database")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    options = parser.parse_args(argv)
    options.modes = [m.strip() for m in options.modes.split(",") if m.strip()]
    unknown = set(options.modes) - set(MODES)
    if unknown or not options.modes:
        parser.error(f"--modes takes a comma-separated subset of {', '.join(MODES)}")
    for name in ("queries", "limit_docs", "uploads"):
        value = getattr(options, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return options


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    data: Path = options.data
    every_document = read_jsonl(data / "corpus.jsonl", CorpusDocument)
    corpus = every_document[: options.limit_docs]
    all_queries = read_jsonl(data / f"queries.{options.split}.jsonl", Query)
    all_qrels = parse_qrels((data / f"qrels.{options.split}.tsv").read_text().splitlines())
    logs = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    log(f"{len(corpus)} documents to index; process logs in {logs}")
    with database(options.database_url, options.keep) as database_url:
        engine = create_engine(to_sqlalchemy_url(database_url), pool_size=1)
        try:
            with stack(database_url, logs) as run:
                ingested = ingest(run, engine, corpus, options.uploads)
                indexed = {
                    name.removesuffix(SUFFIX)
                    for name in filenames_present(
                        engine, [d.filename for d in every_document], succeeded_only=True
                    )
                }
                qrels = {q: r & indexed for q, r in all_qrels.items() if r & indexed}
                queries = [q for q in all_queries if q.id in qrels][: options.queries]
                if not queries:
                    raise BenchmarkFailed("no judged query has a relevant document indexed")
                log(f"{len(queries)} judged queries, {len(indexed)} corpus documents indexed")
                with client(run.url) as http:
                    modes = [run_mode(http, mode, queries, qrels) for mode in options.modes]
                run.check()
        finally:
            engine.dispose()
    report = Report(
        data=str(data),
        corpus_documents=len(every_document),
        indexed_documents=len(indexed),
        queries=len(queries),
        ingest=ingested,
        modes=modes,
    )
    print(table(report))
    if options.json is not None:
        options.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        log(f"wrote {options.json}")


if __name__ == "__main__":
    main()
