"""Stage messages and the broker's JSON encoding."""

from __future__ import annotations

import pickle
import uuid

import dramatiq
import msgspec
import pytest
from dramatiq.errors import DecodeError

from pipeline.broker import MsgspecJSONEncoder
from pipeline.messages import Delivery, StageMessage


def test_stage_message_round_trips_through_actor_args() -> None:
    message = StageMessage(uuid.uuid4(), "chunk", 3)
    assert StageMessage.from_args(message.to_args()) == message


@pytest.mark.parametrize(
    "payload",
    [
        {"document_id": "not-a-uuid", "stage": "chunk", "generation": 1},
        {"document_id": str(uuid.uuid4()), "stage": "Paint it!", "generation": 1},
        {"document_id": str(uuid.uuid4()), "stage": "chunk"},
        {"document_id": str(uuid.uuid4()), "stage": "chunk", "generation": 1, "extra": 1},
        "a string",
    ],
)
def test_malformed_payloads_are_rejected(payload: object) -> None:
    with pytest.raises(msgspec.ValidationError):
        StageMessage.from_args(payload)


def test_encoder_writes_json_and_refuses_garbage() -> None:
    encoder = MsgspecJSONEncoder()
    data = {"queue_name": "chunk", "args": [{"generation": 1}], "options": {}}
    encoded = encoder.encode(data)
    assert encoded.startswith(b"{")
    assert encoder.decode(encoded) == data
    with pytest.raises(DecodeError):
        encoder.decode(b"\x80\x04pickle")
    with pytest.raises(DecodeError):
        encoder.decode(b"[1, 2]")


@pytest.mark.parametrize("generation", [0, -1, 2**31, 2**40])
def test_generations_outside_a_positive_integer_column_are_rejected(generation: int) -> None:
    payload = {"document_id": str(uuid.uuid4()), "stage": "chunk", "generation": generation}
    with pytest.raises(msgspec.ValidationError, match="generation"):
        StageMessage.from_args(payload)


def test_an_undecodable_delivery_keeps_the_bytes_as_storable_text() -> None:
    data = pickle.dumps({"args": [1]}) + b"\xff tail"
    raw = Delivery.undecodable("validate", "id-1", data).message["raw"]
    assert "\x00" not in raw
    assert raw.startswith("\\x80")
    assert "\\x00" in raw
    assert raw.endswith("\\xff tail")


def test_a_forged_message_with_nul_is_recorded_with_the_nul_escaped() -> None:
    forged = dramatiq.Message(
        queue_name="chunk",
        actor_name="chunk",
        args=({"document_id": "a\x00b", "stage": "chunk", "generation": 1},),
        kwargs={"k\x00": "v\x00"},
        options={},
    )
    stored = Delivery.from_message(forged).message
    assert stored["args"] == [{"document_id": "a\\x00b", "stage": "chunk", "generation": 1}]
    assert stored["kwargs"] == {"k\\x00": "v\\x00"}
    assert b"\\u0000" not in msgspec.json.encode(stored)  # what jsonb refuses
