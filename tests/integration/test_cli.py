"""The real commands, as an operator runs them: db upgrade, keys, api, worker, ingest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.settings import Settings
from tests.support.processes import free_port

pytestmark = pytest.mark.slow
PIPELINE = [sys.executable, "-m", "pipeline"]


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.broker.url,
        # Apart from the in-process test worker's namespace, so only the CLI's worker runs these.
        "PIPELINE_REDIS_NAMESPACE": settings.broker.namespace + "-cli",
    }


@pytest.fixture
def services(cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    subprocess.run([*PIPELINE, "db", "upgrade"], env=cli_env, check=True, timeout=60)
    created = subprocess.run(
        [*PIPELINE, "keys", "create", "--tenant", "cli-test", "--scope", "ingest,read"],
        env=cli_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    cli_env["PIPELINE_API_KEY"] = created.stdout.strip()  # `pipeline ingest` reads it
    port = free_port()
    logs = [(tmp_path / "api.log").open("w"), (tmp_path / "worker.log").open("w")]
    processes = [
        subprocess.Popen(
            [*PIPELINE, "api", "--port", str(port)], env=cli_env, stdout=logs[0], stderr=logs[0]
        ),
        subprocess.Popen(
            [*PIPELINE, "worker", "--processes", "1", "--threads", "2"],
            env=cli_env,
            stdout=logs[1],
            stderr=logs[1],
        ),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError((tmp_path / "api.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


def test_ingest_wait_reports_success_and_failure(
    services: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Heading\n\nThe aardvark ambles at dawn.\n")
    (docs / "b.txt").write_text("Bioluminescent plankton glow at night.\n")
    ok = subprocess.run(
        [*PIPELINE, "ingest", str(docs), "--url", services, "--wait", "--timeout", "60"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("succeeded") == 2  # outcomes on stdout, one per document
    # Piped, progress is one line per state change on stderr, never redrawn in place;
    # and no library logs a line per request.
    assert "a.md  index succeeded" in ok.stderr
    assert "b.txt  extract running" in ok.stderr
    assert "\r" not in ok.stderr
    assert "HTTP Request:" not in ok.stderr
    auth = {"Authorization": f"Bearer {cli_env['PIPELINE_API_KEY']}"}
    hits = httpx.get(services + "/search", params={"q": "bioluminescent"}, headers=auth)
    assert hits.json()["hits"][0]["filename"] == "b.txt"  # hybrid: the nearest first
    params = {"q": "bioluminescent", "mode": "lexical"}
    hits = httpx.get(services + "/search", params=params, headers=auth)
    assert [hit["filename"] for hit in hits.json()["hits"]] == ["b.txt"]
    assert httpx.get(services + "/search", params={"q": "bioluminescent"}).status_code == 401

    (tmp_path / "bad.dat").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(300))
    bad = subprocess.run(
        [
            *PIPELINE,
            "ingest",
            str(tmp_path / "bad.dat"),
            "--url",
            services,
            "--wait",
            "--timeout",
            "60",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert bad.returncode == 1
    assert "failed" in bad.stdout


def test_ingest_with_a_refused_key_stops_with_one_line(
    services: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("Some text.\n")
    refused = subprocess.run(
        [*PIPELINE, "ingest", str(tmp_path / "a.txt"), "--url", services],
        env={**cli_env, "PIPELINE_API_KEY": "pk_0123456789ab_" + "A" * 43},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "the API refused the key (401)" in refused.stderr
    assert "Traceback" not in refused.stderr
