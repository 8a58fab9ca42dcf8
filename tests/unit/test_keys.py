"""API keys: their format, scopes and tenants, and how settings switch auth and limits."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.access.keys import (
    InvalidKeyRequest,
    Principal,
    _new_key,
    check_tenant,
    parse_key,
    parse_scopes,
)
from pipeline.http.auth import access
from pipeline.settings import Settings, SettingsError


def test_a_new_key_is_a_public_prefix_and_256_random_bits() -> None:
    prefix, key = _new_key()
    assert key.startswith(prefix + "_")
    assert len(key.removeprefix(prefix + "_")) == 43  # 32 bytes, url-safe base64
    parsed = parse_key(key)
    assert parsed == (prefix, hashlib.sha256(key.encode()).digest())
    assert _new_key()[1] != key


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "pk_",
        "Bearer pk_0123456789ab_" + "a" * 43,
        "pk_0123456789ab_" + "a" * 42,  # secret too short
        "pk_0123456789ab_" + "a" * 44,  # too long
        "pk_0123456789AB_" + "a" * 43,  # the prefix is lower-case hex
        "pk_0123456789ab_" + "a" * 42 + "!",
        "sk_0123456789ab_" + "a" * 43,
    ],
)
def test_malformed_keys_are_refused_without_a_lookup(presented: str) -> None:
    assert parse_key(presented) is None


def test_scopes_are_checked_and_put_in_order() -> None:
    assert parse_scopes("admin, ingest") == ["ingest", "admin"]
    assert parse_scopes(["READ", "read"]) == ["read"]
    with pytest.raises(InvalidKeyRequest, match="unknown scope delete"):
        parse_scopes("read,delete")
    with pytest.raises(InvalidKeyRequest, match="at least one scope"):
        parse_scopes(" , ")


@pytest.mark.parametrize("tenant", ["", "-acme", "acme corp", "a/b", "x" * 201, "ácme"])
def test_odd_tenant_names_are_refused(tenant: str) -> None:
    with pytest.raises(InvalidKeyRequest, match="tenant"):
        check_tenant(tenant)


def test_principal_scopes_and_label() -> None:
    reader = Principal(tenant="acme", scopes=frozenset({"read"}), prefix="pk_0123456789ab")
    assert reader.allows("read")
    assert not reader.allows("admin")
    assert reader.label == "acme/pk_0123456789ab"


def test_routes_declare_their_scope_in_the_openapi_security() -> None:
    assert access("public") == {"opt": {"access": "public"}, "security": [{}]}
    read = access("read")
    assert read["security"] == [{"bearer": ["read"]}, {"apiKey": ["read"]}]
    assert access("metrics")["security"] == [{"bearer": ["admin"]}, {"apiKey": ["admin"]}]


def test_auth_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.access.auth == "required"
    assert settings.access.auth_cache_ms == 5_000
    assert settings.access.ingest_rate_per_s == 50.0
    assert settings.access.ingest_burst == 100
    assert settings.access.metrics_public is False


def test_auth_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_AUTH": "disabled",
            "PIPELINE_AUTH_CACHE_S": "0",
            "PIPELINE_INGEST_RATE_PER_S": "0",
            "PIPELINE_INGEST_BURST": "5",
            "PIPELINE_METRICS_PUBLIC": "true",
        }
    )
    assert settings.access.auth == "disabled"
    assert settings.access.auth_cache_ms == 0  # every request asks Postgres
    assert settings.access.ingest_rate_per_s == 0  # unlimited
    assert settings.access.ingest_burst == 5
    assert settings.access.metrics_public is True


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PIPELINE_AUTH", "bogus", "must be one of required, disabled"),
        ("PIPELINE_AUTH", "off", "must be one of required, disabled"),
        ("PIPELINE_AUTH_CACHE_S", "-1", "positive"),
        ("PIPELINE_INGEST_RATE_PER_S", "-5", "at least 0"),
        ("PIPELINE_INGEST_RATE_PER_S", "nan", "finite"),
        ("PIPELINE_INGEST_BURST", "0", "at least 1"),
        ("PIPELINE_METRICS_PUBLIC", "maybe", "true or false"),
    ],
)
def test_auth_settings_refuse_what_they_cannot_use(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)
