"""``pipeline api`` on each ASGI server it offers (uvicorn, Granian), as real processes.

Each server runs the same app with two workers: an upload with an API key is accepted
and can be read back; the client address behind a trusted proxy is the proxy's client
(and a forwarded address from an untrusted peer is ignored); every line it logs is
JSON; SIGTERM runs the lifespan shutdown in every worker (the pools are closed) and
the process exits without a traceback. A server that is not offered, by flag or by
``PIPELINE_API_SERVER``, is refused with one line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from pipeline.cli import main
from pipeline.http.servers import SERVERS
from pipeline.settings import Settings
from tests.support.api import bearer, make_key
from tests.support.processes import Processes, free_port, ready, stack_env, wait_until

pytestmark = pytest.mark.slow

WORKERS = 2
PROXY_CLIENT = "203.0.113.7"  # TEST-NET-3: never a real peer here
UNTRUSTED_PEER = "127.0.0.2"  # loopback, but not in FORWARDED_ALLOW_IPS' default


def records(log: str) -> list[dict[str, Any]]:
    """Every line the API logged, each of which must be a JSON object."""
    found = []
    for line in log.splitlines():
        if line.strip():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"a line that is not JSON: {line!r}") from None
    return found


def started_and_stopped(log: str) -> tuple[set[int], set[int]]:
    """The worker processes whose lifespan startup, and whose shutdown, completed."""
    started: set[int] = set()
    stopped: set[int] = set()
    for record in records(log):
        words = str(record["message"]).split()
        if words[:2] == ["api", "process"] and words[3:] == ["started", "(pools", "open)"]:
            started.add(int(words[2].rstrip(":")))
        if words[:2] == ["api", "process"] and words[3:] == ["stopped", "(pools", "closed)"]:
            stopped.add(int(words[2].rstrip(":")))
    return started, stopped


def deleted_by(engine: Engine, document_id: str) -> str:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT deleted_by FROM documents WHERE id = :id"), {"id": document_id}
        ).scalar_one()
    return str(found)


@pytest.mark.parametrize("server", SERVERS)
def test_the_api_serves_uploads_and_stops_cleanly_on_each_server(
    server: str, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    key = make_key(engine, tenant=f"servers-{uuid.uuid4().hex[:8]}", scopes="ingest,read")
    processes = Processes(stack_env(settings, PIPELINE_LOG_FORMAT="json"), tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = processes.start(
        *("api", "--server", server, "--port", str(port), "--workers", str(WORKERS)),
        "--access-log",
        name="api",
    )
    try:
        wait_until(lambda: ready(url), 60, f"the api on {server}: {processes.log('api')}")
        wait_until(
            lambda: len(started_and_stopped(processes.log("api"))[0]) == WORKERS,
            60,
            f"both workers' lifespan startup: {processes.log('api')}",
        )
        with httpx.Client(base_url=url, headers=bearer(key), timeout=30) as http:
            ids = []
            for name in ("proxied.txt", "direct.txt"):
                body = f"{name} on {server}: a document with a sentence or two.".encode()
                accepted = http.post("/documents", files={"file": (name, body, "text/plain")})
                assert accepted.status_code == 202, accepted.text
                ids.append(accepted.json()["id"])
                shown = http.get(f"/documents/{ids[-1]}")
                assert shown.status_code == 200, shown.text
                assert shown.json()["id"] == ids[-1]
                assert shown.json()["filename"] == name
            assert http.get(f"/documents/{ids[0]}", headers={"Authorization": ""}).status_code == (
                401
            )
            # Behind a proxy on 127.0.0.1 (trusted by default): the proxy's client is the
            # one the audit trail names.
            forwarded = {"X-Forwarded-For": f"{PROXY_CLIENT}, 127.0.0.1"}
            assert http.delete(f"/documents/{ids[0]}", headers=forwarded).status_code == 204
        # The same header from a peer that is not trusted is ignored.
        untrusted = httpx.HTTPTransport(local_address=UNTRUSTED_PEER)
        with httpx.Client(
            base_url=url, headers=bearer(key), timeout=30, transport=untrusted
        ) as http:
            refused = http.delete(f"/documents/{ids[1]}", headers={"X-Forwarded-For": PROXY_CLIENT})
            assert refused.status_code == 204
        assert deleted_by(engine, ids[0]).endswith(f"@{PROXY_CLIENT}")
        assert deleted_by(engine, ids[1]).endswith(f"@{UNTRUSTED_PEER}")

        api.send_signal(signal.SIGTERM)  # as docker stop does: the main process only
        try:
            api.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit after SIGTERM: {processes.log('api')}") from None
    finally:
        processes.stop_all()
    log = processes.log("api")
    # uvicorn re-raises the signal it stopped on; Granian exits 0.
    assert api.returncode in (0, -signal.SIGTERM), log
    assert "Traceback" not in log
    started, stopped = started_and_stopped(log)
    assert len(started) == WORKERS, log
    assert stopped == started, log
    access = [
        str(r["message"])
        for r in records(log)
        if r["logger"] in ("uvicorn.access", "granian.access")
    ]
    assert any(line.startswith(PROXY_CLIENT) and "DELETE /documents/" in line for line in access)
    assert any(line.startswith(UNTRUSTED_PEER) and "DELETE /documents/" in line for line in access)


def test_a_server_not_offered_is_refused_by_flag_and_by_setting(settings: Settings) -> None:
    env = {"DATABASE_URL": settings.database.url}
    flagged = CliRunner().invoke(main, ["api", "--port", "1", "--server", "hypercorn"], env=env)
    assert flagged.exit_code == 2
    assert "Invalid value for '--server': 'hypercorn' is not one of" in flagged.output
    assert "Traceback" not in flagged.output
    configured = CliRunner().invoke(
        main, ["api", "--port", "1"], env={**env, "PIPELINE_API_SERVER": "hypercorn"}
    )
    assert configured.exit_code == 1
    assert (
        "PIPELINE_API_SERVER must be one of uvicorn, granian, not 'hypercorn'" in configured.output
    )
    assert "Traceback" not in configured.output
