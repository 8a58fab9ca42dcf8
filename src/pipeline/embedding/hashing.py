"""The dependency-free embedder: the fallback when the model is not installed.

:class:`HashingEmbedder` is signed feature hashing ("the hashing trick") of
lower-cased word unigrams and bigrams. It needs no model files or network, is fully
deterministic across processes and machines (``blake2b``, not Python's per-process
randomised ``hash()``), and still gives useful lexical similarity: texts sharing
words and word pairs get a high cosine. It captures no meaning beyond shared words,
hence ``semantic = False``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from itertools import pairwise
from typing import Final

_WORD: Final = re.compile(r"\w+")


class HashingEmbedder:
    """Signed feature hashing of word unigrams and bigrams, L2-normalised.

    Each feature is hashed with 8-byte ``blake2b``; the hash modulo ``dimensions``
    picks the component and its top bit picks the sign (+1/-1), so collisions
    cancel out on average instead of piling up. Text without words gets the zero
    vector (it cannot be normalised). ``name`` is stored with every vector: it must
    change whenever the vectors would.
    """

    semantic = False

    def __init__(self, dimensions: int = 256) -> None:
        if dimensions < 1:
            raise ValueError("dimensions must be at least 1")
        self.dimensions = dimensions
        self.name = f"hashing-v1-{dimensions}"

    def _vector(self, text: str, slots: dict[str, tuple[int, float]]) -> list[float]:
        vector = [0.0] * self.dimensions
        words = _WORD.findall(text.lower())
        features = words + [f"{a} {b}" for a, b in pairwise(words)]
        for feature in features:
            slot = slots.get(feature)
            if slot is None:
                digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "big")
                slot = (value % self.dimensions, -1.0 if value >> 63 else 1.0)
                slots[feature] = slot
            vector[slot[0]] += slot[1]
        norm = math.sqrt(math.fsum(x * x for x in vector))
        if norm == 0.0:
            return vector
        return [x / norm for x in vector]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for ``texts``; hashes are memoised for this call only."""
        slots: dict[str, tuple[int, float]] = {}
        return [self._vector(text, slots) for text in texts]
