"""A webhook receiver for tests: a small HTTP server on 127.0.0.1 that records every
request and answers from a script, and what the database says about deliveries."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Engine, text

README = Path(__file__).parents[2] / "README.md"


class Received(msgspec.Struct, frozen=True):
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """Answers each path's requests from its script, in order (``(status, headers)``; once
    the script is used up, 204), and records them all."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.time(),
                        )
                    )
                    script = receiver.scripts.get(self.path) or []
                    status, headers = script.pop(0) if script else (204, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *answers: tuple[int, dict[str, str]]) -> None:
        with self.lock:
            self.scripts[path] = list(answers)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [item for item in self.received if item.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def readme_verifier() -> Callable[..., Any]:
    """The signature check the README gives receivers, run as it is written there."""
    found = re.search(
        r"<!-- webhook-verify -->\s*```python\n(.*?)```", README.read_text(), re.DOTALL
    )
    assert found, "the README's webhook verification snippet (<!-- webhook-verify -->)"
    namespace: dict[str, Any] = {}
    exec(compile(found.group(1), "README.md", "exec"), namespace)
    verify: Callable[..., Any] = namespace["verify"]
    return verify


def deliveries(engine: Engine, endpoint_id: uuid.UUID | str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, event_id, event_type, document_id, status, attempts, fence, "
                "payload, last_error, last_status_code, created_at FROM webhook_deliveries "
                "WHERE endpoint_id = :id ORDER BY created_at, id"
            ),
            {"id": str(endpoint_id)},
        ).mappings()
        return [dict(row) for row in rows]


def attempts(engine: Engine, delivery_id: uuid.UUID | str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT attempt, started_at, status_code, latency_ms, error "
                "FROM webhook_attempts WHERE delivery_id = :id ORDER BY id"
            ),
            {"id": str(delivery_id)},
        ).mappings()
        return [dict(row) for row in rows]
