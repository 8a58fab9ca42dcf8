"""``pipeline demo``: ingest the bundled samples into a running stack and show progress."""

from __future__ import annotations

import mimetypes
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec

from pipeline.statuses import FINISHED_DOCUMENT_STATUSES, UNFINISHED_STAGE_STATUSES

SAMPLES = Path(__file__).parent / "samples"

DEMO_QUERY = "where is the world's fresh water stored"
"""A question in words no sample uses all of: hybrid search answers it."""


class DemoSummary(msgspec.Struct, frozen=True):
    documents: int
    succeeded: int
    failed: int
    seconds: float
    search_query: str
    search_hits: int


def sample_files() -> list[Path]:
    return sorted(path for path in SAMPLES.iterdir() if path.is_file())


def run_demo(
    api_url: str,
    echo: Callable[[str], None],
    *,
    query: str = DEMO_QUERY,
    timeout: float = 120.0,
    api_key: str | None = None,
) -> DemoSummary:
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=api_url, timeout=30, headers=headers) as client:
        ids = {_upload(client, path): path.name for path in sample_files()}
        echo(f"uploaded {len(ids)} sample documents: {', '.join(sorted(ids.values()))}")
        documents = _follow(client, ids, echo, timeout)
        found = client.get("/search", params={"q": query, "limit": 3}).json()
    hits = found["hits"]
    echo(f'\nsearch "{query}" ({found["mode"]}):')
    for hit in hits:
        snippet = " ".join(str(hit["snippet"]).split())
        lists = "+".join(hit["found_by"])
        echo(
            f"  {hit['score']:.4f}  {hit['filename']} #{hit['chunk_ordinal']} ({lists}): {snippet}"
        )
    outcomes = Counter(document["status"] for document in documents)
    for document in documents:
        if document["status"] == "failed":
            echo(f"  failed: {document['filename']}: {document['failure_reason']}")
    return DemoSummary(
        documents=len(documents),
        succeeded=outcomes["succeeded"],
        failed=len(documents) - outcomes["succeeded"],
        seconds=round(time.monotonic() - started, 2),
        search_query=query,
        search_hits=len(hits),
    )


def _upload(client: httpx.Client, path: Path) -> str:
    declared = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = client.post("/documents", files={"file": (path.name, path.read_bytes(), declared)})
    response.raise_for_status()
    return str(response.json()["id"])


def _follow(
    client: httpx.Client, ids: dict[str, str], echo: Callable[[str], None], timeout: float
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        documents = [client.get(f"/documents/{document_id}").json() for document_id in ids]
        line = _progress_line(documents)
        if line != last:
            echo(line)
            last = line
        if all(document["status"] in FINISHED_DOCUMENT_STATUSES for document in documents):
            return documents
        if time.monotonic() > deadline:
            raise TimeoutError(f"documents still processing after {timeout:g} s")
        time.sleep(0.3)


def _progress_line(documents: list[dict[str, object]]) -> str:
    """One line: for each stage, how many documents finished it (and how many are on it)."""
    names: list[str] = []  # every stage of the documents' plans, in plan order
    statuses: list[dict[str, str]] = []
    for document in documents:
        stages = document["stages"]
        assert isinstance(stages, list)
        statuses.append({row["stage"]: row["status"] for row in stages})
        names.extend(row["stage"] for row in stages if row["stage"] not in names)
    cells = []
    for stage in names:
        done = running = 0
        for by_stage in statuses:
            status = by_stage.get(stage)
            done += status == "succeeded"
            running += status in UNFINISHED_STAGE_STATUSES
        cells.append(f"{stage} {done}/{len(documents)}" + (f" (+{running})" if running else ""))
    finished = sum(document["status"] in FINISHED_DOCUMENT_STATUSES for document in documents)
    return f"progress: {' | '.join(cells)} | done {finished}/{len(documents)}"
