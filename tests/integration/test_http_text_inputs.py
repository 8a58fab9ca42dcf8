"""Free-text inputs with a NUL are refused with a 422, never passed on to Postgres.

Found by the fuzzer (test_fuzz_http.py): Postgres text cannot hold U+0000, so a NUL in
a search, a filter or a reason failed its query with a 500.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support.api import assert_problem

# Fixed, so that every pytest-xdist worker collects the same test ids.
UNKNOWN_ID = uuid.UUID("9a7e3c51-2d84-4b6f-8e10-c4f59b2d6e37")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/search", {"q": "glacier\x00"}),
        ("/dead-letters", {"error_type": "Corrupt\x00Input"}),
    ],
)
def test_nul_in_a_query_parameter_is_422(
    client: TestClient[Any], path: str, params: dict[str, str]
) -> None:
    (name,) = params
    assert_problem(client.get(path, params=params), 422, f"query parameter `{name}`")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/dead-letters/replay", {"filter": {"error_type": "\x00"}}, "filter.error_type"),
        ("/dead-letters/discard", {"filter": {"error_type": "a\x00b"}}, "filter.error_type"),
        ("/dead-letters/replay", {"ids": [str(uuid.uuid4())], "reason": "x\x00"}, "reason"),
        ("/dead-letters/discard", {"ids": [str(uuid.uuid4())], "reason": "x\x00"}, "reason"),
        (
            "/rerun",
            {"from_stage": "chunk", "ids": [str(uuid.uuid4())], "reason": "\x00"},
            "reason",
        ),
        (f"/documents/{UNKNOWN_ID}/rerun", {"from_stage": "chunk", "reason": "\x00"}, "reason"),
    ],
)
def test_nul_in_a_json_body_is_422(
    client: TestClient[Any], path: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(path, json=body)
    assert_problem(response, 422, "request body")
    assert field in response.json()["detail"]
