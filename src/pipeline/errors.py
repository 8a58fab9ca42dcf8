"""Error types shared by every layer, and the tree of every error the package raises.

A stage failure is either *transient* (the same input may succeed later: a lost
connection, a lock timeout, a time limit) or *permanent* (the input itself is the
problem: unsupported, corrupt, encrypted, empty). The executor retries the first
kind and dead-letters the second at once. Every error carries a ``reason``: one
sentence an operator or a client can act on, never a traceback.

Every error the package raises on purpose derives from :class:`PipelineError`; each
class is under its base, with its module (under ``pipeline.``) when not this one::

    PipelineError
    ├── StageError
    │   ├── TransientError
    │   │   └── ParserTimeout                  engine.sandbox
    │   ├── PermanentError
    │   │   ├── EmptyContent
    │   │   ├── UnsupportedContent
    │   │   ├── CorruptContent
    │   │   │   ├── ParserCrashed              engine.sandbox
    │   │   │   └── ParserTooDeep              engine.sandbox
    │   │   ├── EncryptedContent
    │   │   ├── OcrUnavailable                 processing.ocr
    │   │   ├── ContentTooLarge
    │   │   │   ├── ArchiveTooLarge
    │   │   │   ├── TooManyPages
    │   │   │   ├── TextTooLong
    │   │   │   └── ParserMemoryExceeded       engine.sandbox
    │   │   ├── MissingInput                   engine.artifacts
    │   │   └── InvalidOutputs                 engine.artifacts
    │   └── _CrashLoop                         engine.executor
    ├── EmbeddingModelError
    │   ├── ModelNotInstalled
    │   ├── ModelFileMissing
    │   └── ModelFileMismatch
    ├── SettingsError                          environ
    ├── DefinitionError                        stages.pipeline
    ├── UnknownStage                           stages.pipeline
    ├── MigrationsNotFound                     db.migrate
    ├── EmbeddedUnavailable                    local.embedded
    ├── IdempotencyConflict                    ingestion.uploads
    ├── InvalidKeyRequest                      access.keys
    ├── KeyNotFound                            access.keys
    ├── InvalidCursor                          queries.cursors
    ├── InvalidEventId                         events.feed
    ├── TooManyStreams                         events.hub
    ├── SubscriberTooSlow                      events.hub
    ├── StreamRefused                          client.stream
    ├── SemanticSearchUnavailable              search.semantic
    ├── InvalidRate                            operations.common
    ├── NotOperator                            operations.stage_controls
    ├── JobStopped                             operations.jobs
    ├── DestinationRefused                     webhooks.destinations
    ├── EndpointNotFound                       webhooks.endpoints
    ├── ConsoleRefused                         http.console.auth
    │   ├── SignInRequired                     http.console.auth
    │   └── CsrfRefused                        http.console.auth
    ├── ConsoleNotFound                        http.console.auth
    └── BadInput                               http.console.pages

Not in the tree: exceptions private to a module that only carry control flow inside it
(the executor's ``_LostHold``, ``_Failed``, ``_UnknownDocument``), and the HTTP layer's
``Problem`` (``http.problems``, with ``BodyTooDeep`` in ``http.json_body``), which is
Litestar's ``ProblemDetailsException``: a response to send, not an error to handle.
``tests/unit/test_error_tree.py`` checks this tree against the classes.
"""

from __future__ import annotations

TOO_DEEP_REASON = (
    "the document nests structures too deeply to be processed (recursion limit); "
    "re-save it from the program that made it"
)
"""Why a ``RecursionError`` is permanent: the same input recurses as deep every time."""


class PipelineError(Exception):
    """Base class for the errors this package raises on purpose."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StageError(PipelineError):
    """A stage could not do its work."""

    transient: bool = False


class TransientError(StageError):
    """Worth retrying: the same input may succeed on a later attempt."""

    transient = True


class PermanentError(StageError):
    """Never retried: the input, not the environment, is at fault."""


class EmptyContent(PermanentError):
    """The document has no bytes, or no text once extracted."""


class UnsupportedContent(PermanentError):
    """The bytes are not a type the pipeline can read."""


class CorruptContent(PermanentError):
    """The bytes claim a supported type but cannot be parsed."""


class EncryptedContent(PermanentError):
    """The document is password-protected."""


class ContentTooLarge(PermanentError):
    """The document exceeds a size policy."""


class ArchiveTooLarge(ContentTooLarge):
    """A DOCX (ZIP) package expands past a limit: a zip bomb, or something like one."""


class TooManyPages(ContentTooLarge):
    """A PDF has more pages than the page limit allows."""


class TextTooLong(ContentTooLarge):
    """A document yields more text than the later stages are allowed to process."""


class EmbeddingModelError(PipelineError):
    """The embedding model cannot be loaded; raised at start-up, never by a stage."""


class ModelNotInstalled(EmbeddingModelError):
    """A package the model needs (a file carrier, onnxruntime, tokenizers) is missing.

    The one embedding error ``PIPELINE_EMBEDDER=auto`` falls back from (to the hashing
    embedder): the deployment simply left the ``model`` dependency group out.
    """


class ModelFileMissing(EmbeddingModelError):
    """A model file named explicitly in the settings does not exist.

    Not a fallback: whoever set the path wants that file, and a typo must not quietly
    switch the vector space.
    """


class ModelFileMismatch(EmbeddingModelError):
    """A model file's sha256 is not the pinned one: corrupt, truncated or another model.

    Never a fallback either: vectors from a different model would sit next to the
    stored ones under the same model name.
    """
