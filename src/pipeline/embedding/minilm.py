"""all-MiniLM-L6-v2 sentence embeddings, computed offline with onnxruntime.

The model is sentence-transformers' all-MiniLM-L6-v2: a 6-layer BERT whose
sentence vector is the mean of its last hidden states over the real (unpadded) word
pieces, L2-normalised, so a dot product is a cosine. It was trained on inputs of at
most 256 word pieces, so longer texts are truncated there (a chunk of the default 200
tokens is about that long).

The weights are its int8 ONNX export (dynamic quantisation): 23 MB instead of 90, and
faster on a CPU; its vectors have a cosine of at least 0.9995 with the fp32 model's
(``tests/fixtures/embedding/minilm_reference.json``). The tokenizer is the model's own
``tokenizer.json``, which ships truncating at 128 and padding every input to 128: both
are re-set here (truncation at 256, padding to the longest text of the batch), since
padding a short batch to 128 costs time and truncating at 128 loses half a chunk.

One instance serves every thread of a process: ``InferenceSession.run`` is
thread-safe, and the tokenizer is configured once, in ``__init__``, then only read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
import onnxruntime
from tokenizers import Tokenizer

MODEL_NAME: Final = "all-MiniLM-L6-v2"
"""Stored with every vector. It is the int8 ONNX export of the model (see above),
named after the model because its vectors are the model's to within 0.0005 cosine."""
DIMENSIONS: Final = 384
MAX_WORD_PIECES: Final = 256
"""Including ``[CLS]`` and ``[SEP]``: the model's ``max_seq_length``."""
PAD_ID: Final = 0
"""The id of ``[PAD]`` in the vocabulary; padded positions are masked out anyway."""
PAD_TOKEN: Final = "[PAD]"  # noqa: S105 - a vocabulary entry, not a secret
_OUTPUT: Final = "last_hidden_state"

Int64Array = npt.NDArray[np.int64]
Float32Array = npt.NDArray[np.float32]


class Encoded(NamedTuple):
    """A tokenised batch, padded to its longest text: the model's three inputs."""

    input_ids: Int64Array
    attention_mask: Int64Array
    token_type_ids: Int64Array

    @property
    def word_pieces(self) -> list[int]:
        """How many word pieces of each text the model sees (special tokens included)."""
        return [int(count) for count in self.attention_mask.sum(axis=1)]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime's CPU provider, ``threads`` intra-op threads.

    Build it with :func:`pipeline.embedding.make_embedder`, which verifies the files
    and shares one instance per process.
    """

    semantic = True

    def __init__(self, model_path: Path, tokenizer_path: Path, *, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.name = MODEL_NAME
        self.dimensions = DIMENSIONS
        options = onnxruntime.SessionOptions()
        # One call uses ``threads`` cores; Dramatiq's threads give the parallelism
        # across calls, so onnxruntime must not also run graph branches in parallel.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The memory pattern pre-plans one block per input shape on top of the arena:
        # at 16 texts of 256 pieces it raised peak RSS from ~540 to ~820 MiB for no
        # speed (bench/embedding.py). The arena itself stays: without it a call
        # allocates afresh and runs ~45% slower.
        options.enable_mem_pattern = False
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=MAX_WORD_PIECES)
        self._tokenizer.enable_padding(pad_id=PAD_ID, pad_token=PAD_TOKEN)  # to the longest

    def encode(self, texts: Sequence[str]) -> Encoded:
        """The model's inputs for ``texts``: truncated at 256 pieces, padded with 0."""
        encodings = self._tokenizer.encode_batch(list(texts))
        return Encoded(
            input_ids=np.array([e.ids for e in encodings], dtype=np.int64),
            attention_mask=np.array([e.attention_mask for e in encodings], dtype=np.int64),
            token_type_ids=np.array([e.type_ids for e in encodings], dtype=np.int64),
        )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector of 384 floats per text, in order (padding changes nothing)."""
        if not texts:
            return []
        encoded = self.encode(texts)
        (hidden,) = self._session.run(
            [_OUTPUT],
            {
                "input_ids": encoded.input_ids,
                "attention_mask": encoded.attention_mask,
                "token_type_ids": encoded.token_type_ids,
            },
        )
        vectors: list[list[float]] = mean_pool(
            np.asarray(hidden, dtype=np.float32), encoded.attention_mask
        ).tolist()
        return vectors


def mean_pool(hidden: Float32Array, mask: Int64Array) -> Float32Array:
    """Mean of ``hidden`` [batch, sequence, dims] over unmasked positions, L2-normalised.

    Padded positions are excluded from the sum and the count. A vector of norm 0 (not
    seen in practice: every text has at least ``[CLS]`` and ``[SEP]``) stays zero
    rather than becoming NaN.
    """
    weights = mask[..., np.newaxis].astype(np.float32)
    counts = np.maximum(weights.sum(axis=1), np.float32(1.0))
    means = (hidden * weights).sum(axis=1) / counts
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    pooled: Float32Array = np.divide(
        means, norms, out=np.zeros_like(means), where=norms > 0
    ).astype(np.float32, copy=False)
    return pooled
