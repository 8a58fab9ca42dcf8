"""Settings come from the environment, with per-stage overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pipeline.environ import Rule
from pipeline.settings import (
    NOT_POLICIES,
    POLICY_VARIABLE,
    Settings,
    SettingsError,
    to_sqlalchemy_url,
)
from pipeline.stages.builtin import CHUNK, EMBED, EXTRACT, PIPELINE


def test_defaults_name_the_local_servers() -> None:
    settings = Settings.from_env({})
    assert settings.database.url == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert settings.broker.url == "redis://127.0.0.1:6379/0"
    assert settings.limits.max_upload_bytes == 25 * 1024 * 1024
    assert settings.stages.policy_overrides == {}
    assert settings.stages.definition == "pipeline.stages.builtin:PIPELINE"
    assert settings.stages.policy("extract", EXTRACT.policy).time_limit_ms == 60_000
    assert settings.api.server == "uvicorn"
    assert settings.api.forwarded_allow_ips == "127.0.0.1,::1"  # uvicorn's own default


def test_the_api_server_is_chosen_in_any_case() -> None:
    assert Settings.from_env({"PIPELINE_API_SERVER": "Granian"}).api.server == "granian"
    assert Settings.from_env({"PIPELINE_API_SERVER": ""}).api.server == "uvicorn"


def test_per_stage_overrides_touch_only_their_stage() -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_EXTRACT_TIME_LIMIT_S": "90",
            "PIPELINE_EXTRACT_MAX_RETRIES": "2",
            "PIPELINE_EMBED_MIN_BACKOFF_S": "0.5",
            "PIPELINE_MAX_UPLOAD_BYTES": "1000",
        }
    )
    assert settings.stages.policy("extract", EXTRACT.policy).time_limit_ms == 90_000
    assert settings.stages.policy("extract", EXTRACT.policy).max_retries == 2
    assert settings.stages.policy("extract", EXTRACT.policy).max_attempts == 3
    assert settings.stages.policy("embed", EMBED.policy).min_backoff_ms == 500
    assert settings.stages.policy("embed", EMBED.policy).time_limit_ms == EMBED.policy.time_limit_ms
    assert settings.stages.policy("chunk", CHUNK.policy) == CHUNK.policy
    assert settings.limits.max_upload_bytes == 1000


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
        ("PIPELINE_API_SERVER", "hypercorn", "uvicorn, granian"),
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
    assert (
        defaults.embedding.embedder,
        defaults.embedding.batch_size,
        defaults.embedding.threads,
    ) == ("auto", 8, 1)
    assert (defaults.search.candidates, defaults.search.exact_max_vectors) == (100, 100_000)
    chosen = Settings.from_env(
        {
            "PIPELINE_EMBEDDER": " Hashing ",
            "PIPELINE_EMBEDDING_MODEL_PATH": "/models/model.onnx",
            "PIPELINE_EMBEDDING_TOKENIZER_PATH": "/models/tokenizer.json",
            "PIPELINE_EMBED_THREADS": "2",
            "PIPELINE_SEARCH_EXACT_MAX_VECTORS": "0",
        }
    )
    assert chosen.embedding.embedder == "hashing"
    assert chosen.embedding.model_path == "/models/model.onnx"
    assert chosen.embedding.tokenizer_path == "/models/tokenizer.json"
    assert chosen.embedding.threads == 2
    assert chosen.search.exact_max_vectors == 0


def test_backoff_bounds_must_be_ordered() -> None:
    with pytest.raises(SettingsError, match="MAX_BACKOFF_S"):
        Settings.from_env(
            {"PIPELINE_INDEX_MIN_BACKOFF_S": "10", "PIPELINE_INDEX_MAX_BACKOFF_S": "5"}
        )


def test_seconds_are_held_as_the_field_says() -> None:
    settings = Settings.from_env(
        {"PIPELINE_RECONCILER_INTERVAL_S": "0.25", "PIPELINE_QUEUED_GRACE_S": "1.5"}
    )
    assert settings.reconciler.interval_s == 0.25
    assert settings.stages.queued_grace_ms == 1_500


def test_replace_changes_only_the_named_fields_and_checks_them() -> None:
    settings = Settings.from_env({})
    changed = settings.replace(access={"ingest_burst": 1}, database={"pool_size": 2})
    assert (changed.access.ingest_burst, changed.database.pool_size) == (1, 2)
    assert changed.access.auth_cache_ms == settings.access.auth_cache_ms
    assert changed.broker == settings.broker
    assert settings.access.ingest_burst == 100
    with pytest.raises(msgspec.ValidationError, match="unknown field `ingest_bursts`"):
        settings.replace(access={"ingest_bursts": 1})
    with pytest.raises(msgspec.ValidationError, match="Expected `int`, got `str`"):
        settings.replace(access={"ingest_burst": "1"})


def declared_variables() -> list[str]:
    return [
        rule.name
        for group in msgspec.structs.fields(Settings)
        if isinstance(group.type, type)
        for field in msgspec.structs.fields(group.type)
        for rule in getattr(field.type, "__metadata__", ())
        if isinstance(rule, Rule) and hasattr(rule, "name")
    ]


def test_no_setting_of_its_own_is_read_as_a_stage_policy() -> None:
    looks_like_policy = {name for name in declared_variables() if POLICY_VARIABLE.match(name)}
    assert looks_like_policy == NOT_POLICIES


def test_every_variable_is_documented() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    names = declared_variables()
    assert {"DATABASE_URL", "PIPELINE_AUTH_CACHE_S", "PIPELINE_CURSOR_SECRET"} <= set(names)
    assert [name for name in names if f"`{name}`" not in readme] == []


def test_database_url_gets_the_psycopg_driver() -> None:
    assert to_sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert to_sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(SettingsError):
        to_sqlalchemy_url("mysql://u@h/db")


def test_stage_order() -> None:
    assert PIPELINE.names == ("validate", "extract", "ocr", "chunk", "embed", "index")


def test_overrides_work_for_any_stage_name() -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_PII_REDACT_MAX_RETRIES": "1",
            "PIPELINE_LANGUAGE_TIME_LIMIT_S": "5",
            "PIPELINE_PARSER_TIME_LIMIT_S": "7",  # a setting of its own, not a stage's
        }
    )
    assert sorted(settings.stages.policy_overrides) == ["language", "pii_redact"]
    default = EXTRACT.policy
    assert settings.stages.policy("pii_redact", default).max_retries == 1
    assert settings.stages.policy("pii_redact", default).time_limit_ms == default.time_limit_ms
    assert settings.stages.policy("language", default).time_limit_ms == 5_000
    assert settings.limits.parser_time_limit_ms == 7_000


def test_an_override_below_the_minimum_backoff_is_refused() -> None:
    settings = Settings.from_env({"PIPELINE_CHUNK_MAX_BACKOFF_S": "0.1"})
    with pytest.raises(SettingsError, match="PIPELINE_CHUNK_MAX_BACKOFF_S must not be below"):
        settings.stages.policy("chunk", CHUNK.policy)
