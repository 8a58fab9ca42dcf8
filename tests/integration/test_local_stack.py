"""``pipeline demo`` on a machine without servers: embedded Postgres and Redis, end to end."""

from __future__ import annotations

import os
import pty
import select
import socket
import stat
import subprocess
import sys
import time
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


def test_demo_runs_end_to_end_on_embedded_servers_in_a_terminal(tmp_path: Path) -> None:
    """``pipeline demo`` as a newcomer runs it: no servers configured (embedded Postgres
    and Redis), in a terminal (a pseudo-terminal here). Progress is one line redrawn in
    place, outcomes stay, and no library logs a line per request."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    base = free_port()
    command = [sys.executable, "-m", "pipeline", "demo", "--data-dir", str(tmp_path / "data")]
    code, shown = run_in_terminal(
        [*command, "--port", str(base)], {**env, "PIPELINE_LOG_FORMAT": "json", "TERM": "xterm"}
    )
    assert code == 0, shown[-3000:]
    assert "Postgres (embedded)" in shown
    assert "Redis    (embedded)" in shown
    documents = len(sample_files())
    assert f"{documents} of {documents} documents succeeded (0 failed)" in shown
    assert "HTTP Request:" not in shown
    assert '"GET /' not in shown  # no access log lines
    assert '"POST /' not in shown
    assert "\r\x1b[Kprogress: validate" in shown  # the live line, redrawn in place
    assert shown.count("succeeded ") >= documents  # one outcome line per document
    assert "index succeeded" not in shown  # per-change lines are for pipes, not terminals
    found = shown.split('search "where is the world\'s fresh water stored" (hybrid):')[1]
    assert found.splitlines()[1].split()[1] == "glaciers.txt"  # the best hit
    # the demo made a key (tenant default, every scope), showed it, and left it for the user
    key_file = tmp_path / "data" / "api-key"
    key = key_file.read_text().strip()
    assert f"API key  (tenant default, every scope): {key}" in shown
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # everything it started has stopped: nothing listens on the API port any more
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", base)) != 0


def run_in_terminal(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` with a pseudo-terminal as its stdin, stdout and stderr; its exit
    code and everything it wrote (terminal line endings as they are)."""
    main_end, child_end = pty.openpty()
    process = subprocess.Popen(
        command, env=env, stdin=child_end, stdout=child_end, stderr=child_end, close_fds=True
    )
    os.close(child_end)
    output = bytearray()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main_end], [], [], 1)
        if ready:
            try:
                chunk = os.read(main_end, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(main_end)
    return process.wait(timeout=30), output.decode(errors="replace").replace("\r\n", "\n")


def test_the_banner_shouts_when_auth_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    info = StackInfo("http://127.0.0.1:8000", "postgresql://x", "redis://x", True, True)
    _announce(info)
    assert "WARNING: authentication is DISABLED" in capsys.readouterr().out
