"""``pipeline ingest``: upload files through the HTTP API and follow them."""

from __future__ import annotations

import mimetypes
import sys
import time
from pathlib import Path

import click
import httpx

from pipeline.client.progress import Progress, View, follow, writer
from pipeline.client.stream import EventStream, StreamRefused
from pipeline.filenames import for_terminal

LOCAL_KEY_FILE = Path(".pipeline") / "api-key"
"""Where ``pipeline up`` leaves its key; used when no key is given."""
MAX_RATE_LIMITED_WAITS = 100


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, envvar="PIPELINE_URL")
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the documents (on the API's event stream) until every one is done.",
)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
@click.option(
    "--api-key",
    envvar="PIPELINE_API_KEY",
    default=None,
    help="The API key (scopes ingest, and read for --wait); default: PIPELINE_API_KEY, "
    "else .pipeline/api-key (written by `pipeline up`).",
)
def ingest(
    paths: tuple[Path, ...], url: str, wait: bool, timeout: float, api_key: str | None
) -> None:
    """Upload PATHS (files, or folders of files) to the API.

    Exits non-zero if an upload is refused or, with --wait, if a document fails. Waits
    out the API's rate limit (429) as it asks; a refused key (401, 403) stops at once.
    With --wait, outcomes are printed on stdout and progress on stderr: live in a
    terminal, one line per state change otherwise.
    """
    files = sorted({file for path in paths for file in _files(path)})
    refused = 0
    ids: dict[str, Path] = {}
    headers = _auth_headers(api_key)
    with httpx.Client(base_url=url, timeout=httpx.Timeout(60.0), headers=headers) as client:
        # Subscribed before the first upload, so that no event of ours is missed.
        stream = _open_stream(client) if wait else None
        for file in files:
            document_id, problem = _upload(client, file)
            if document_id is None:
                refused += 1
                click.echo(f"refused  {for_terminal(str(file))}: {for_terminal(problem)}", err=True)
            else:
                ids[document_id] = file
                click.echo(f"accepted {for_terminal(str(file))} -> {document_id}")
        failed = _follow(stream, ids, timeout) if stream is not None and ids else 0
        if stream is not None:
            stream.close()
    if refused or failed:
        raise SystemExit(1)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return [child for child in path.rglob("*") if child.is_file()]
    return [path]


def _auth_headers(api_key: str | None) -> dict[str, str]:
    if api_key is None and LOCAL_KEY_FILE.is_file():
        api_key = LOCAL_KEY_FILE.read_text().strip()
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _refuse_key(response: httpx.Response) -> None:
    """A key the API does not accept fails every request alike: stop at the first."""
    if response.status_code in (401, 403):
        raise click.ClickException(
            f"the API refused the key ({response.status_code}): {_detail(response)}; "
            "pass --api-key or set PIPELINE_API_KEY (`pipeline keys create` makes one)"
        )


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.1, float(response.headers.get("retry-after", "1")))
    except ValueError:  # an HTTP date, from something between us and the API
        return 1.0


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


def _upload(client: httpx.Client, file: Path) -> tuple[str | None, str]:
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    for _ in range(MAX_RATE_LIMITED_WAITS):
        with file.open("rb") as handle:
            response = client.post("/documents", files={"file": (file.name, handle, content_type)})
        if response.status_code != 429:
            break
        time.sleep(_retry_after(response))  # the key's upload rate limit
    _refuse_key(response)
    if response.status_code == 202:
        return str(response.json()["id"]), ""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return None, f"{response.status_code} {detail}"


def _open_stream(client: httpx.Client) -> EventStream:
    try:
        return EventStream(client, "/events", {"transitions": "true"})
    except StreamRefused as refused:
        if refused.status_code in (401, 403):
            raise click.ClickException(
                f"the API refused the key for --wait ({refused}); it needs the read scope"
            ) from None
        raise click.ClickException(f"the API refused its event stream: {refused}") from None
    except httpx.HTTPError as error:
        raise click.ClickException(f"cannot reach the API at {client.base_url}: {error}") from None


def _follow(stream: EventStream, ids: dict[str, Path], timeout: float) -> int:
    """Follow the stream until every document is done; how many did not succeed."""
    progress = Progress({document_id: str(path) for document_id, path in ids.items()})
    view = View(progress, writer(sys.stdout), writer(sys.stderr), live=sys.stderr.isatty())
    deadline = time.monotonic() + timeout
    follow(stream, progress, view.changed, lambda: time.monotonic() < deadline)
    view.done()
    pending = len(ids) - sum(
        progress.count(outcome) for outcome in ("succeeded", "failed", "deleted")
    )
    if pending:
        click.echo(f"timed out with {pending} document(s) still processing", err=True)
    click.echo(
        f"{progress.count('succeeded')} of {len(ids)} succeeded, {progress.count('failed')} failed",
        err=True,
    )
    return len(ids) - progress.count("succeeded")
