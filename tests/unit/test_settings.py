"""Settings come from the environment, with per-stage overrides and clear errors."""

from __future__ import annotations

import pytest

from pipeline.settings import Settings, SettingsError, to_sqlalchemy_url
from pipeline.stages.builtin import CHUNK, EMBED, EXTRACT, PIPELINE


def test_defaults_name_the_local_servers() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.max_upload_bytes == 25 * 1024 * 1024
    assert settings.policy_overrides == {}
    assert settings.definition == "pipeline.stages.builtin:PIPELINE"
    assert settings.policy("extract", EXTRACT.policy).time_limit_ms == 60_000


def test_per_stage_overrides_touch_only_their_stage() -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_EXTRACT_TIME_LIMIT_S": "90",
            "PIPELINE_EXTRACT_MAX_RETRIES": "2",
            "PIPELINE_EMBED_MIN_BACKOFF_S": "0.5",
            "PIPELINE_MAX_UPLOAD_BYTES": "1000",
        }
    )
    assert settings.policy("extract", EXTRACT.policy).time_limit_ms == 90_000
    assert settings.policy("extract", EXTRACT.policy).max_retries == 2
    assert settings.policy("extract", EXTRACT.policy).max_attempts == 3
    assert settings.policy("embed", EMBED.policy).min_backoff_ms == 500
    assert settings.policy("embed", EMBED.policy).time_limit_ms == EMBED.policy.time_limit_ms
    assert settings.policy("chunk", CHUNK.policy) == CHUNK.policy
    assert settings.max_upload_bytes == 1000


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PIPELINE_EXTRACT_MAX_RETRIES", "many", "whole number"),
        ("PIPELINE_EXTRACT_MAX_RETRIES", "-1", "at least 0"),
        ("PIPELINE_CHUNK_TIME_LIMIT_S", "0", "positive"),
        ("PIPELINE_CHUNK_TIME_LIMIT_S", "soon", "number of seconds"),
        ("PIPELINE_MAX_UPLOAD_BYTES", "0", "at least 1"),
        ("PIPELINE_DB_PRE_PING", "ture", "true or false"),
        ("PIPELINE_EMBEDDER", "bert", "auto, minilm, hashing"),
        ("PIPELINE_EMBED_BATCH_SIZE", "0", "at least 1"),
        ("PIPELINE_SEARCH_CANDIDATES", "0", "at least 1"),
        ("PIPELINE_SEARCH_EXACT_MAX_VECTORS", "-1", "at least 0"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)


def test_embedding_and_search_settings() -> None:
    defaults = Settings.from_env({})
    assert (defaults.embedder, defaults.embed_batch_size, defaults.embed_threads) == ("auto", 8, 1)
    assert (defaults.search_candidates, defaults.search_exact_max_vectors) == (100, 100_000)
    chosen = Settings.from_env(
        {
            "PIPELINE_EMBEDDER": " Hashing ",
            "PIPELINE_EMBEDDING_MODEL_PATH": "/models/model.onnx",
            "PIPELINE_EMBEDDING_TOKENIZER_PATH": "/models/tokenizer.json",
            "PIPELINE_EMBED_THREADS": "2",
            "PIPELINE_SEARCH_EXACT_MAX_VECTORS": "0",
        }
    )
    assert chosen.embedder == "hashing"
    assert chosen.embedding_model_path == "/models/model.onnx"
    assert chosen.embedding_tokenizer_path == "/models/tokenizer.json"
    assert chosen.embed_threads == 2
    assert chosen.search_exact_max_vectors == 0


def test_backoff_bounds_must_be_ordered() -> None:
    with pytest.raises(SettingsError, match="MAX_BACKOFF_S"):
        Settings.from_env(
            {"PIPELINE_INDEX_MIN_BACKOFF_S": "10", "PIPELINE_INDEX_MAX_BACKOFF_S": "5"}
        )


def test_database_url_gets_the_psycopg_driver() -> None:
    assert to_sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert to_sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(SettingsError):
        to_sqlalchemy_url("mysql://u@h/db")


def test_stage_order() -> None:
    assert PIPELINE.names == ("validate", "extract", "chunk", "embed", "index")


def test_overrides_work_for_any_stage_name() -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_PII_REDACT_MAX_RETRIES": "1",
            "PIPELINE_LANGUAGE_TIME_LIMIT_S": "5",
            "PIPELINE_PARSER_TIME_LIMIT_S": "7",  # a setting of its own, not a stage's
        }
    )
    assert sorted(settings.policy_overrides) == ["language", "pii_redact"]
    default = EXTRACT.policy
    assert settings.policy("pii_redact", default).max_retries == 1
    assert settings.policy("pii_redact", default).time_limit_ms == default.time_limit_ms
    assert settings.policy("language", default).time_limit_ms == 5_000
    assert settings.parser_time_limit_ms == 7_000


def test_an_override_below_the_minimum_backoff_is_refused() -> None:
    settings = Settings.from_env({"PIPELINE_CHUNK_MAX_BACKOFF_S": "0.1"})
    with pytest.raises(SettingsError, match="PIPELINE_CHUNK_MAX_BACKOFF_S must not be below"):
        settings.policy("chunk", CHUNK.policy)
