"""Embedders, and the one place that picks one from the settings.

``PIPELINE_EMBEDDER`` chooses: ``minilm`` (all-MiniLM-L6-v2, refuses to start
without it), ``hashing`` (the dependency-free fallback), or ``auto`` (the model when
the ``model`` dependency group is installed, else hashing with one warning). Only a
*missing* model is a reason to fall back: a file that is present but fails its sha256
check, or an explicit path that does not exist, always raises, because falling back
would quietly change the vector space of everything embedded from then on.

The model is loaded once per process (the API and the worker both ask for it, and
loading hashes 23 MB) and shared by every thread; unless
``PIPELINE_EMBED_SHARED_BATCHES`` is off, its calls are shared too
(:mod:`pipeline.embedding.batching`): concurrent requests, the embed attempts of
several documents or the queries of several searches, go to the model as one batch.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from pipeline.embedding import carriers
from pipeline.embedding.base import Embedder, embed_batched
from pipeline.embedding.batching import SharedBatches
from pipeline.embedding.hashing import HashingEmbedder
from pipeline.errors import ModelNotInstalled
from pipeline.monitoring.metrics import EmbedMetrics
from pipeline.settings import Settings

__all__ = ["Embedder", "HashingEmbedder", "embed_batched", "make_embedder"]

logger = logging.getLogger("pipeline.embedding")

_RUNTIME_MODULES: Final = ("onnxruntime", "tokenizers")
_LoadKey = tuple[str | None, str | None, int]
_SharedKey = tuple[_LoadKey, int, int]
_loaded: dict[_LoadKey, Embedder | ModelNotInstalled] = {}
_shared: dict[_SharedKey, SharedBatches] = {}
_lock = threading.Lock()


def make_embedder(settings: Settings) -> Embedder:
    """The embedder ``settings.embedding.embedder`` asks for (see the module docstring)."""
    embedding = settings.embedding
    if embedding.embedder == "hashing":
        return HashingEmbedder(dimensions=embedding.dimensions)
    key: _LoadKey = (embedding.model_path, embedding.tokenizer_path, embedding.threads)
    with _lock:
        found = _loaded.get(key)
        fresh = found is None
        if found is None:
            found = _load_or_missing(key)
            _loaded[key] = found
        if not isinstance(found, ModelNotInstalled):
            if not embedding.shared_batches:
                return found
            shared_key: _SharedKey = (key, embedding.callers, embedding.call_texts)
            shared = _shared.get(shared_key)
            if shared is None:
                shared = _shared[shared_key] = SharedBatches(
                    found,
                    max_texts=embedding.call_texts,
                    callers=embedding.callers,
                    observer=EmbedMetrics(),
                )
            return shared
    if embedding.embedder == "minilm":
        raise ModelNotInstalled(f"PIPELINE_EMBEDDER=minilm, but {found.reason}")
    if fresh:
        logger.warning(
            "embedding with the hashing embedder (lexical only, %d dimensions): "
            "all-MiniLM-L6-v2 is not available: %s",
            embedding.dimensions,
            found.reason,
        )
    return HashingEmbedder(dimensions=embedding.dimensions)


def _load_or_missing(key: _LoadKey) -> Embedder | ModelNotInstalled:
    """The model, or the reason it is not installed (kept, so it is logged once)."""
    try:
        return _load(*key)
    except ModelNotInstalled as error:
        return error


def _load(model_path: str | None, tokenizer_path: str | None, threads: int) -> Embedder:
    try:  # imported here: without onnxruntime, ``auto`` must still work
        from pipeline.embedding.minilm import MiniLMEmbedder
    except ImportError as error:
        if error.name not in _RUNTIME_MODULES:
            raise
        raise ModelNotInstalled(
            f"the package {error.name}, which runs the model, is not installed; "
            f"{carriers.INSTALL_HINT}"
        ) from None
    return MiniLMEmbedder(
        carriers.locate(carriers.ONNX_MODEL, model_path),
        carriers.locate(carriers.TOKENIZER, tokenizer_path),
        threads=threads,
    )
