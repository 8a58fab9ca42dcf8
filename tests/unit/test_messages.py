"""Stage messages and the broker's JSON encoding."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from dramatiq.errors import DecodeError

from pipeline.broker import MsgspecJSONEncoder
from pipeline.messages import StageMessage


def test_stage_message_round_trips_through_actor_args() -> None:
    message = StageMessage(uuid.uuid4(), "chunk", 3)
    assert StageMessage.from_args(message.to_args()) == message


@pytest.mark.parametrize(
    "payload",
    [
        {"document_id": "not-a-uuid", "stage": "chunk", "generation": 1},
        {"document_id": str(uuid.uuid4()), "stage": "paint", "generation": 1},
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
