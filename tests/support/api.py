"""Talking to the API in a test: API keys, credentials, uploads and problem answers.

The session's ``client`` fixture sends a key of tenant ``default`` with every scope;
:func:`make_key` and :class:`AsKey` make requests as other tenants or with fewer scopes.
"""

from __future__ import annotations

from typing import Any

import httpx
from litestar.testing import TestClient
from sqlalchemy import Engine

from pipeline.access.keys import create_key

TEST_RATE_PER_S = 10_000.0
"""The session key's upload limit: far above what the tests send, but still checked."""


def make_key(
    engine: Engine,
    tenant: str = "default",
    scopes: str = "ingest,read,admin",
    *,
    rate_limit_per_s: float | None = TEST_RATE_PER_S,
    name: str | None = "tests",
) -> str:
    """A new API key (stored hashed, like ``pipeline keys create`` stores it)."""
    with engine.begin() as conn:
        created = create_key(
            conn, tenant=tenant, scopes=scopes, name=name, rate_limit_per_s=rate_limit_per_s
        )
    return created.key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class AsKey:
    """The session's client sending another key in place of its own (None: no key at all)."""

    def __init__(self, client: TestClient[Any], key: str | None) -> None:
        self.client = client
        self.key = key

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Credentials given in ``headers`` are sent as given; else this key (or none)."""
        given = {name.lower() for name in kwargs.get("headers") or {}}
        request = self.client.build_request(method, url, **kwargs)
        if not given & {"authorization", "x-api-key"}:
            request.headers.pop("authorization", None)
            if self.key is not None:
                request.headers.update(bearer(self.key))
        elif "authorization" not in given:
            request.headers.pop("authorization", None)  # only the X-API-Key given
        return self.client.send(request)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def upload(
    client: TestClient[Any] | AsKey,
    data: bytes,
    filename: str = "doc.txt",
    content_type: str = "text/plain",
    headers: dict[str, str] | None = None,
) -> Any:
    return client.post(
        "/documents",
        files={"file": (filename, data, content_type)},
        headers=headers or {},
    )


def assert_problem(response: Any, status: int, detail_part: str) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status`` whose detail says ``detail_part``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert detail_part in body["detail"], body
    return body
