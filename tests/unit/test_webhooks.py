"""Webhooks without a network: signatures, address classification, URL checks,
``Retry-After`` and the backoff's bounds."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pipeline.webhooks import signing
from pipeline.webhooks.destinations import (
    DestinationRefused,
    check_destination,
    check_url,
    refusal,
    resolve_checked,
)
from pipeline.webhooks.policy import RetryPolicy
from pipeline.webhooks.sender import parse_retry_after

# -- signing ---------------------------------------------------------------------------------


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The vector published with the Standard Webhooks specification (and its libraries).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    got = signing.signature(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_carry_one_signature_per_secret_current_first() -> None:
    current, previous = signing.new_secret(), signing.new_secret()
    headers = signing.headers([current, previous], "msg_x", 1700000000, b"{}")
    assert headers["webhook-id"] == "msg_x"
    assert headers["webhook-timestamp"] == "1700000000"
    first, second = headers["webhook-signature"].split(" ")
    assert first == signing.signature(current, "msg_x", 1700000000, b"{}")
    assert second == signing.signature(previous, "msg_x", 1700000000, b"{}")
    assert first != second


def test_a_new_secret_is_32_random_bytes_after_whsec() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(signing.secret_key(secret)) == 32
    assert secret != signing.new_secret()
    with pytest.raises(ValueError, match="whsec_"):
        signing.secret_key("not-a-secret")


# -- destinations ----------------------------------------------------------------------------

REFUSED = [
    "127.0.0.1",
    "127.255.0.3",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.10.10",
    "100.64.0.1",
    "100.100.100.200",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",
    "2002:7f00:1::",
    "2001:db8::1",
]
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_internal_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_metadata_addresses_say_so() -> None:
    assert "metadata" in (refusal(ipaddress.ip_address("169.254.169.254")) or "")


def fixed(*addresses: str):  # type: ignore[no-untyped-def]
    return lambda host, port: list(addresses)


def test_one_internal_address_refuses_the_whole_host() -> None:
    with pytest.raises(DestinationRefused, match="PIPELINE_WEBHOOKS_ALLOW_PRIVATE"):
        resolve_checked(
            "mixed.example", 443, allow_private=False, resolver=fixed("8.8.8.8", "10.0.0.1")
        )
    assert resolve_checked(
        "mixed.example", 443, allow_private=True, resolver=fixed("8.8.8.8", "10.0.0.1")
    ) == ["8.8.8.8", "10.0.0.1"]


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/",  # 127.0.0.1 as one decimal number
        "https://0x7f000001/",  # ... in hex
        "https://017700000001/",  # ... in octal
        "https://127.1/",
        "https://0177.0.0.1/",
        "https://localhost/",
        "https://[::1]:8443/",
        "https://[::ffff:127.0.0.1]/",
        "https://169.254.169.254/latest/meta-data/",
    ],
)
def test_loopback_and_metadata_urls_are_refused_after_resolving(url: str) -> None:
    with pytest.raises(DestinationRefused, match="PIPELINE_WEBHOOKS_ALLOW_PRIVATE"):
        check_destination(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/hook", "must be https"),
        ("ftp://example.com/", "must be https"),
        ("https://user:pw@example.com/", "credentials"),
        ("https:///path", "names no host"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://exa mple.com/", "whitespace"),
    ],
)
def test_malformed_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(DestinationRefused, match=why):
        check_url(url, allow_private=False)


def test_private_destinations_and_http_when_allowed() -> None:
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True) == (
        "http",
        "127.0.0.1",
        8080,
    )
    check_destination("http://localhost:8080/hook", allow_private=True)


# -- retries ---------------------------------------------------------------------------------


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 120 ") == 120.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None


def test_backoff_stays_within_its_bounds_and_its_ceiling_doubles() -> None:
    policy = RetryPolicy(max_attempts=8, min_backoff_ms=1000, max_backoff_ms=60_000)
    assert [policy.ceiling_ms(n) for n in range(1, 9)] == [
        1000,
        2000,
        4000,
        8000,
        16000,
        32000,
        60000,
        60000,
    ]
    rng = random.Random(7)
    for attempts in range(1, 9):
        delays = [policy.delay_ms(attempts, uniform=rng.uniform) for _ in range(200)]
        assert min(delays) >= 1000
        assert max(delays) <= policy.ceiling_ms(attempts)
    # full jitter: the delays after the same attempt spread over the whole window
    spread = [policy.delay_ms(6, uniform=rng.uniform) for _ in range(200)]
    assert min(spread) < 10_000
    assert max(spread) > 25_000
    assert policy.delay_ms(1, uniform=lambda low, high: high) == 1000
    assert policy.delay_ms(20, uniform=lambda low, high: high) == 60_000


def test_retry_after_replaces_the_backoff_capped_at_the_maximum() -> None:
    policy = RetryPolicy(max_attempts=8, min_backoff_ms=1000, max_backoff_ms=60_000)
    assert policy.delay_ms(1, 0.25) == 250
    assert policy.delay_ms(1, 30) == 30_000
    assert policy.delay_ms(1, 3600) == 60_000
    assert not policy.exhausted(7)
    assert policy.exhausted(8)
