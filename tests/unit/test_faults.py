"""Fault injection stays off unless switched on on purpose."""

from __future__ import annotations

import pytest

from pipeline.errors import PermanentError, TransientError
from pipeline.faults import ENABLE_VALUE, Faults, FaultSpec, parse_faults
from pipeline.settings import Settings, SettingsError

FAULTS = '[{"stage": "extract", "match": "slow-*", "transient_attempts": 2}]'


def test_off_by_default() -> None:
    assert Settings.from_env({}).faults == ()
    assert not Faults()


def test_faults_without_the_switch_refuse_to_start() -> None:
    with pytest.raises(SettingsError, match="PIPELINE_FAULT_INJECTION"):
        Settings.from_env({"PIPELINE_FAULTS": FAULTS})
    with pytest.raises(SettingsError, match="PIPELINE_FAULT_INJECTION"):
        Settings.from_env({"PIPELINE_FAULTS": FAULTS, "PIPELINE_FAULT_INJECTION": "yes"})


def test_enabled_faults_parse_and_reject_unknown_fields() -> None:
    settings = Settings.from_env(
        {"PIPELINE_FAULTS": FAULTS, "PIPELINE_FAULT_INJECTION": ENABLE_VALUE}
    )
    assert settings.faults == (FaultSpec(stage="extract", match="slow-*", transient_attempts=2),)
    with pytest.raises(ValueError, match="not a valid list"):
        parse_faults('[{"stage": "extract", "explode": true}]', ENABLE_VALUE)
    with pytest.raises(ValueError, match="not a valid list"):
        parse_faults('[{"stage": "No Stage"}]', ENABLE_VALUE)


def test_faults_follow_attempt_numbers_and_filenames() -> None:
    faults = Faults(
        (
            FaultSpec(stage="extract", match="slow-*", transient_attempts=2),
            FaultSpec(stage="chunk", permanent=True),
            FaultSpec(stage="upload", match="lost-*", drop_send=True),
        )
    )
    with pytest.raises(TransientError):
        faults.before_compute("extract", "slow-1.txt", attempt=2)
    faults.before_compute("extract", "slow-1.txt", attempt=3)
    faults.before_compute("extract", "fast.txt", attempt=1)
    with pytest.raises(PermanentError):
        faults.before_compute("chunk", "anything", attempt=9)
    assert faults.drop_send("upload", "lost-1.txt")
    assert not faults.drop_send("upload", "kept.txt")
    assert not faults.hang_parser("extract", "slow-1.txt")
