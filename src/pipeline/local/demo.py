"""``pipeline demo``: ingest the bundled samples into a running stack and show progress."""

from __future__ import annotations

import mimetypes
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import httpx
import msgspec

from pipeline.client.progress import Progress, View, follow, writer
from pipeline.client.stream import EventStream

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
    out: TextIO | None = None,
) -> DemoSummary:
    """Upload the samples, follow them on the event stream, then search.

    Progress goes to ``out`` (stdout by default): live on one line in a terminal, one
    line per state change elsewhere; ``echo`` prints the rest.
    """
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    stream_to = out or sys.stdout
    with httpx.Client(
        base_url=api_url, timeout=httpx.Timeout(30, read=60), headers=headers
    ) as client:
        stream = EventStream(client, "/events", {"transitions": "true"})  # before the uploads
        ids = {_upload(client, path): path.name for path in sample_files()}
        echo(f"uploaded {len(ids)} sample documents: {', '.join(sorted(ids.values()))}")
        progress = Progress(ids)
        live = stream_to.isatty()
        view = View(progress, writer(stream_to), writer(stream_to), live=live)
        deadline = time.monotonic() + timeout
        follow(stream, progress, view.changed, lambda: time.monotonic() < deadline)
        stream.close()
        view.done()
        if not progress.finished:
            raise TimeoutError(f"documents still processing after {timeout:g} s")
        documents = [client.get(f"/documents/{document_id}").json() for document_id in ids]
        found = client.get("/search", params={"q": query, "limit": 3}).json()
    hits = found["hits"]
    echo(f'\nsearch "{query}" ({found["mode"]}):')
    for hit in hits:
        snippet = " ".join(str(hit["snippet"]).split())
        lists = "+".join(hit["found_by"])
        echo(
            f"  {hit['score']:.4f}  {hit['filename']} #{hit['chunk_ordinal']} ({lists}): {snippet}"
        )
    for document in documents:
        if document["status"] == "failed":
            echo(f"  failed: {document['filename']}: {document['failure_reason']}")
    succeeded = sum(document["status"] == "succeeded" for document in documents)
    return DemoSummary(
        documents=len(documents),
        succeeded=succeeded,
        failed=len(documents) - succeeded,
        seconds=round(time.monotonic() - started, 2),
        search_query=query,
        search_hits=len(hits),
    )


def _upload(client: httpx.Client, path: Path) -> str:
    declared = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = client.post("/documents", files={"file": (path.name, path.read_bytes(), declared)})
    response.raise_for_status()
    return str(response.json()["id"])
