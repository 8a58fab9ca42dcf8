"""Access: API keys (hashed, shown once, revocable), scopes, public routes, auth off, limits."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner, Result
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.access.keys import Authenticator
from pipeline.access.rate_limit import RateLimiter
from pipeline.cli import main
from pipeline.db.engine import make_async_engine
from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.settings import Settings
from tests.support.api import AsKey, assert_problem, bearer, make_key, upload

TEXT = b"An access-control test document. It has two sentences."
Cli = Callable[..., Result]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    runner = CliRunner()
    env = {"DATABASE_URL": settings.database.url, "PIPELINE_AUTH_CACHE_S": "0"}

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def uncached(settings: Settings, broker: dramatiq.Broker) -> Iterator[TestClient[Any]]:
    """An API that asks Postgres about the key on every request (PIPELINE_AUTH_CACHE_S=0)."""
    app = create_app(settings.replace(access={"auth_cache_ms": 0}), dispatcher=Dispatcher(broker))
    with TestClient(app) as client:
        yield client


# -- keys: stored hashed, shown once, revoked -----------------------------------------


def test_a_key_is_stored_hashed_and_shown_once(
    cli: Cli, engine: Engine, client: TestClient[Any]
) -> None:
    tenant = f"hashed-{uuid.uuid4().hex[:6]}"
    created = cli("keys", "create", "--tenant", tenant, "--scope", "read,ingest", "--name", "ci")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()  # alone on stdout
    prefix, secret = key[:15], key[16:]  # pk_<12 hex>_<secret>
    assert prefix in created.stderr
    assert "shown only this once" in created.stderr
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT a::text AS everything, secret_hash FROM api_keys a WHERE prefix = :p"),
            {"p": prefix},
        ).one()
    assert secret not in row.everything
    assert key not in row.everything
    assert bytes(row.secret_hash) == hashlib.sha256(key.encode()).digest()
    listed = cli("keys", "list", "--tenant", tenant)
    assert listed.exit_code == 0
    assert prefix in listed.output
    assert "ingest,read" in listed.output
    assert secret not in listed.output
    as_key = AsKey(client, key)
    assert upload(as_key, TEXT, "hashed.txt").status_code == 202  # the printed key works


def test_missing_malformed_and_unknown_keys_are_401(client: TestClient[Any]) -> None:
    unknown = "pk_0123456789ab_" + "A" * 43
    cases = [
        (AsKey(client, None).get("/documents"), "needs an API key"),
        (AsKey(client, "not-a-key").get("/documents"), "not valid"),
        (AsKey(client, unknown).get("/documents"), "not valid"),
        (
            AsKey(client, None).get("/documents", headers={"Authorization": "Basic dTpw"}),
            "not valid",
        ),
    ]
    for response, detail in cases:
        assert_problem(response, 401, detail)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_key_may_come_in_x_api_key(client: TestClient[Any], api_key: str) -> None:
    response = AsKey(client, None).get("/documents", headers={"X-API-Key": api_key})
    assert response.status_code == 200, response.text


def test_a_revoked_key_is_refused(cli: Cli, uncached: TestClient[Any]) -> None:
    created = cli("keys", "create", "--tenant", "default", "--scope", "read")
    key = created.stdout.strip()
    prefix = key[:15]
    assert uncached.get("/documents", headers=bearer(key)).status_code == 200
    revoked = cli("keys", "revoke", prefix)
    assert revoked.exit_code == 0
    assert f"revoked key {prefix}" in revoked.output
    assert_problem(uncached.get("/documents", headers=bearer(key)), 401, "revoked")
    again = cli("keys", "revoke", prefix)
    assert again.exit_code == 0
    assert "already revoked" in again.output
    unknown = cli("keys", "revoke", "pk_000000000000")
    assert unknown.exit_code == 1
    assert "no API key" in unknown.output


def test_revocation_takes_effect_when_the_cache_expires(
    settings: Settings, engine: Engine, cli: Cli
) -> None:
    """A verified key is trusted for the cache window, then asked about again."""
    key = make_key(engine, scopes="read")
    now = [0.0]

    async def scenario() -> list[bool]:
        async_engine = make_async_engine(settings)
        auth = Authenticator(async_engine, ttl_s=5.0, clock=lambda: now[0])
        try:
            seen = [await auth.authenticate(key) is not None]
            cli("keys", "revoke", key[:15])
            seen.append(await auth.authenticate(key) is not None)  # cached
            now[0] = 5.1
            seen.append(await auth.authenticate(key) is not None)  # asked again
            return seen
        finally:
            await async_engine.dispose()

    assert asyncio.run(scenario()) == [True, True, False]


def test_bad_key_requests_are_usage_errors(cli: Cli) -> None:
    bad_scope = cli("keys", "create", "--tenant", "acme", "--scope", "read,delete")
    assert bad_scope.exit_code == 2
    assert "unknown scope delete" in bad_scope.output
    bad_tenant = cli("keys", "create", "--tenant", "a b", "--scope", "read")
    assert bad_tenant.exit_code == 2
    assert "tenant" in bad_tenant.output


# -- scopes ---------------------------------------------------------------------------

SOME_ID = "00000000-0000-0000-0000-000000000001"
ROUTES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("ingest", "POST", "/documents?filename=scoped.txt", {"content": TEXT}),
    ("read", "GET", "/documents", {}),
    ("read", "GET", f"/documents/{SOME_ID}", {}),
    ("read", "GET", f"/documents/{SOME_ID}/chunks", {}),
    ("read", "GET", "/search?q=glacier", {}),
    ("admin", "GET", "/dead-letters", {}),
    ("admin", "GET", f"/dead-letters/{SOME_ID}", {}),
    ("admin", "POST", "/dead-letters/replay", {"json": {"ids": [SOME_ID], "dry_run": True}}),
    ("admin", "POST", "/dead-letters/discard", {"json": {"ids": [SOME_ID], "dry_run": True}}),
    ("admin", "POST", f"/documents/{SOME_ID}/rerun", {"json": {"from_stage": "chunk"}}),
    ("admin", "POST", "/rerun", {"json": {"from_stage": "chunk", "ids": [SOME_ID]}}),
    ("admin", "GET", f"/operations/{SOME_ID}", {}),
    ("admin", "GET", "/stages", {}),
    ("admin", "GET", "/metrics", {}),
]


@pytest.mark.parametrize("scope", ["ingest", "read", "admin"])
def test_each_scope_opens_its_routes_and_only_those(
    client: TestClient[Any], engine: Engine, scope: str
) -> None:
    as_key = AsKey(client, make_key(engine, scopes=scope))
    for needed, method, path, kwargs in ROUTES:
        headers = {"Content-Type": "text/plain"} if "content" in kwargs else {}
        response = as_key.request(method, path, headers=headers, **kwargs)
        if needed == scope:
            assert response.status_code not in (401, 403), (method, path, response.text)
            assert response.status_code < 500, (method, path, response.text)
        else:
            problem = assert_problem(response, 403, f"lacks the {needed!r} scope")
            assert problem["required_scope"] == needed


# -- public routes --------------------------------------------------------------------


def test_health_ready_and_schema_are_public_metrics_is_not(client: TestClient[Any]) -> None:
    anonymous = AsKey(client, None)
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").status_code == 200
    assert anonymous.get("/schema/swagger").status_code == 200
    schema = anonymous.get("/schema/openapi.json").json()
    assert_problem(anonymous.get("/metrics"), 401, "needs an API key")
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"]["name"] == "X-API-Key"
    paths = schema["paths"]
    assert paths["/documents"]["post"]["security"] == [
        {"bearer": ["ingest"]},
        {"apiKey": ["ingest"]},
    ]
    assert paths["/search"]["get"]["security"][0] == {"bearer": ["read"]}
    assert paths["/dead-letters/replay"]["post"]["security"][0] == {"bearer": ["admin"]}
    assert paths["/health"]["get"]["security"] == [{}]


def test_metrics_can_be_made_public(settings: Settings, broker: dramatiq.Broker) -> None:
    public = settings.replace(access={"metrics_public": True})
    with TestClient(create_app(public, dispatcher=Dispatcher(broker))) as anonymous:
        response = anonymous.get("/metrics")
        assert response.status_code == 200, response.text
        assert "pipeline_documents" in response.text
        assert_problem(anonymous.get("/stages"), 401, "needs an API key")  # still admin


# -- authentication switched off --------------------------------------------------------


def test_auth_disabled_says_so_loudly_and_acts_as_default(
    settings: Settings, broker: dramatiq.Broker, caplog: pytest.LogCaptureFixture
) -> None:
    off = settings.replace(access={"auth": "disabled"})
    with (
        caplog.at_level(logging.WARNING),
        TestClient(create_app(off, dispatcher=Dispatcher(broker))) as anonymous,
    ):
        warnings = [r for r in caplog.records if "AUTHENTICATION IS DISABLED" in r.getMessage()]
        assert warnings
        assert warnings[0].levelno == logging.WARNING
        accepted = upload(anonymous, TEXT, "no-auth.txt")
        assert accepted.status_code == 202, accepted.text
        assert anonymous.get("/dead-letters").status_code == 200  # every scope
    with TestClient(create_app(settings, dispatcher=Dispatcher(broker))) as required:
        assert required.get(f"/documents/{accepted.json()['id']}").status_code == 401


def test_a_bogus_auth_setting_is_refused_at_start(settings: Settings) -> None:
    result = CliRunner().invoke(
        main,
        ["api", "--port", "1"],
        env={"DATABASE_URL": settings.database.url, "PIPELINE_AUTH": "bogus"},
    )
    assert result.exit_code == 1
    assert "PIPELINE_AUTH must be one of required, disabled, not 'bogus'" in result.output
    assert "Traceback" not in result.output


# -- rate limit -------------------------------------------------------------------------


@pytest.fixture
def limited(settings: Settings, broker: dramatiq.Broker) -> Iterator[TestClient[Any]]:
    """An API whose keys may send one upload at once (burst 1)."""
    app = create_app(settings.replace(access={"ingest_burst": 1}), dispatcher=Dispatcher(broker))
    with TestClient(app) as client:
        yield client


def test_uploads_beyond_a_keys_rate_are_429_with_retry_after(
    limited: TestClient[Any], engine: Engine
) -> None:
    slow = AsKey(limited, make_key(engine, scopes="ingest", rate_limit_per_s=0.5))
    other = AsKey(limited, make_key(engine, scopes="ingest", rate_limit_per_s=0.5))
    assert upload(slow, TEXT, "first.txt").status_code == 202
    refused = upload(slow, TEXT, "second.txt")
    problem = assert_problem(refused, 429, "faster than its limit")
    retry_after = int(refused.headers["retry-after"])
    assert retry_after >= 1
    assert problem["retry_after"] == retry_after
    assert upload(other, TEXT, "other.txt").status_code == 202  # a key of its own
    time.sleep(retry_after)
    assert upload(slow, TEXT, "later.txt").status_code == 202


def test_a_key_without_a_limit_is_not_throttled(limited: TestClient[Any], engine: Engine) -> None:
    unlimited = AsKey(limited, make_key(engine, scopes="ingest", rate_limit_per_s=0))
    for index in range(5):
        assert upload(unlimited, TEXT, f"unlimited-{index}.txt").status_code == 202


def test_without_redis_uploads_are_not_throttled(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> int | None:
        client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
        limiter = RateLimiter(client, "nowhere", rate=1.0, burst=1)
        try:
            return await limiter.acquire("some-key")
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) is None
    assert "not rate limited" in caplog.text
