"""``pipeline demo`` on a machine without servers: embedded Postgres and Redis, end to end."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli.up import _announce
from pipeline.local.demo import sample_files
from pipeline.local.embedded import free_port
from pipeline.local.stack import StackInfo

pytestmark = pytest.mark.slow


def test_samples_cover_every_supported_kind() -> None:
    suffixes = {path.suffix for path in sample_files()}
    assert {".pdf", ".docx", ".html", ".md", ".txt"} <= suffixes


def test_demo_runs_end_to_end_on_embedded_servers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    base = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "demo",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(base),
        ],
        env={**env, "PIPELINE_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Postgres (embedded)" in result.stdout
    assert "Redis    (embedded)" in result.stdout
    documents = len(sample_files())
    assert f"{documents} of {documents} documents succeeded (0 failed)" in result.stdout
    found = result.stdout.split('search "where is the world\'s fresh water stored" (hybrid):')[1]
    assert found.splitlines()[1].split()[1] == "glaciers.txt"  # the best hit
    # the demo made a key (tenant default, every scope), showed it, and left it for the user
    key_file = tmp_path / "data" / "api-key"
    key = key_file.read_text().strip()
    assert f"API key  (tenant default, every scope): {key}" in result.stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # everything it started has stopped: nothing listens on the API port any more
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", base)) != 0


def test_the_banner_shouts_when_auth_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    info = StackInfo("http://127.0.0.1:8000", "postgresql://x", "redis://x", True, True)
    _announce(info)
    assert "WARNING: authentication is DISABLED" in capsys.readouterr().out
