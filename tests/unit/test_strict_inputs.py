"""The bounds behind strict request bodies: JSON nesting, and the pacer's rate."""

from __future__ import annotations

import json
import math

import msgspec
import pytest
from litestar.exceptions import ValidationException

from pipeline.errors import PipelineError
from pipeline.http.json_body import MAX_JSON_DEPTH, BodyTooDeep, decode_strict, exceeds_depth
from pipeline.operations.common import DEFAULT_RATE, MAX_RATE, MIN_RATE, InvalidRate, Pacer
from pipeline.operations.requests import ReplayRequest


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


@pytest.mark.parametrize(
    "value",
    [
        {"ids": ["a", "b"], "filter": {"stage": "chunk"}},
        [[[[[]]]]],
        {"a": [{"b": [{"c": []}]}]},
        {"s": "[[[[{{{{" * 50, "t": '\\"[[[' * 40},
        [[]] * 100,  # many brackets, shallow
        [[[[[[]]]], [[]]], [[[[[[[]]]]]]]],  # the deepest branch is not the first
        [{"a": [{"b": [{}]}]}] * 3,  # arrays and objects alternating
        "just a string with [ and {",
    ],
)
@pytest.mark.parametrize("limit", [1, 3, 5, 32])
def test_depth_scan_agrees_with_the_real_depth(value: object, limit: int) -> None:
    raw = json.dumps(value).encode()
    assert exceeds_depth(raw, limit) == (depth_of(value) > limit)


def test_depth_scan_on_huge_bodies() -> None:
    wide = b"[]," * 1_000_000 + b"[]"
    assert exceeds_depth(b"[" * 10_000_000)
    assert not exceeds_depth(b"[" + wide + b"]")
    assert not exceeds_depth(b"[" * (MAX_JSON_DEPTH - 1) + wide + b"]" * (MAX_JSON_DEPTH - 1))
    assert exceeds_depth(b"[" * MAX_JSON_DEPTH + wide + b"]" * MAX_JSON_DEPTH)


def test_too_deep_is_refused_before_decoding() -> None:
    with pytest.raises(BodyTooDeep):
        decode_strict(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), object)


def test_strict_decoding_names_the_field() -> None:
    with pytest.raises(ValidationException) as caught:
        decode_strict(b'{"ids": [], "dry_run": 0}', ReplayRequest)
    (entry,) = caught.value.extra  # type: ignore[misc]
    assert entry == {"message": "Expected `bool`, got `int`", "key": "dry_run", "source": "body"}


def test_valid_body_decodes_to_the_struct() -> None:
    body = decode_strict(b'{"ids": [], "dry_run": true, "rate": 2}', ReplayRequest)
    assert body == ReplayRequest(ids=[], dry_run=True, rate=2.0)


@pytest.mark.parametrize("rate", [0.0, -1.0, 1e-300, 5e-324, MIN_RATE / 2, MAX_RATE * 2, math.nan])
def test_pacer_refuses_rates_it_cannot_honour(rate: float) -> None:
    with pytest.raises(InvalidRate) as caught:
        Pacer(rate)
    assert isinstance(caught.value, PipelineError)
    assert "between" in caught.value.reason


@pytest.mark.parametrize("rate", [MIN_RATE, 1.0, MAX_RATE])
def test_pacer_spaces_items_at_bounded_rates(rate: float) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(rate, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        pacer.wait()
    assert slept == pytest.approx([1 / rate, 1 / rate])


def test_pacer_without_a_rate_uses_the_default() -> None:
    assert Pacer(None).interval == pytest.approx(1 / DEFAULT_RATE)


def test_request_bound_is_the_pacer_bound() -> None:
    for rate in (MIN_RATE, MAX_RATE):
        request = msgspec.convert({"ids": [], "rate": rate}, ReplayRequest)
        Pacer(request.rate)
    for rate in (MIN_RATE / 2, MAX_RATE * 2):
        with pytest.raises(msgspec.ValidationError, match="rate"):
            msgspec.convert({"ids": [], "rate": rate}, ReplayRequest)
