"""What the pipeline needs from an embedder, and the batching the embed stage does.

:class:`Embedder` is all the embed stage and the search depend on, so the model behind
it (all-MiniLM-L6-v2, or the hashing fallback) is chosen once, by
:func:`pipeline.embedding.make_embedder`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol


class Embedder(Protocol):
    """Turns texts into fixed-size vectors; ``name`` identifies the vector space.

    ``name`` is stored with every chunk's vector (at most 64 characters), so vectors
    are only ever compared with vectors of the same name. ``semantic`` says whether
    the vectors capture meaning (a trained model) or only shared words (hashing): the
    search picks its default mode from it.
    """

    name: str
    dimensions: int
    semantic: bool

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector of ``dimensions`` floats per text, in order."""
        ...


def embed_batched(
    embedder: Embedder, texts: Sequence[str], batch_size: int
) -> Iterator[list[list[float]]]:
    """Embed ``texts`` in batches of at most ``batch_size``, yielding each batch's vectors.

    Batches bound the memory of one model call and let the stage report progress
    between them.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return _batches(embedder, texts, batch_size)


def _batches(embedder: Embedder, texts: Sequence[str], size: int) -> Iterator[list[list[float]]]:
    for offset in range(0, len(texts), size):
        yield embedder.embed(texts[offset : offset + size])
