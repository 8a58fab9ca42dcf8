"""all-MiniLM-L6-v2: its vectors against the fp32 reference, truncation, batching,
thread safety, the sha256 checks of its files, and the choice between it and hashing."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.embedding import HashingEmbedder, make_embedder
from pipeline.embedding.batching import SharedBatches
from pipeline.embedding.carriers import ONNX_MODEL, TOKENIZER, ModelFile, locate, sha256_of
from pipeline.embedding.minilm import MAX_WORD_PIECES, MiniLMEmbedder
from pipeline.errors import ModelFileMismatch, ModelFileMissing, ModelNotInstalled, PipelineError
from pipeline.settings import Settings

REFERENCE = json.loads(
    (Path(__file__).parent.parent / "fixtures/embedding/minilm_reference.json").read_text("utf-8")
)
WORDS = ["the", "glacier", "retreated", "slowly", "while", "ice", "thickness", "grew"]


def _long_text(words: int) -> str:
    return " ".join(WORDS[n % len(WORDS)] for n in range(words))


def _dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def _cosine(a: list[float], b: list[float]) -> float:
    return _dot(a, b) / math.sqrt(_dot(a, a) * _dot(b, b))


@pytest.fixture(scope="module")
def model() -> MiniLMEmbedder:
    embedder = make_embedder(
        Settings().replace(embedding={"embedder": "minilm", "shared_batches": False})
    )
    assert isinstance(embedder, MiniLMEmbedder)
    return embedder


def test_identity(model: MiniLMEmbedder) -> None:
    assert model.name == "all-MiniLM-L6-v2"
    assert len(model.name) <= 64  # the chunks' embedding_model column
    assert model.dimensions == 384
    assert model.semantic is True


def test_vectors_match_the_fp32_reference(model: MiniLMEmbedder) -> None:
    vectors = model.embed(REFERENCE["sentences"])
    assert len(vectors) == len(REFERENCE["vectors"]) == 6
    for vector, reference in zip(vectors, REFERENCE["vectors"], strict=True):
        assert len(vector) == 384
        assert math.isclose(math.sqrt(_dot(vector, vector)), 1.0, abs_tol=1e-5)
        assert _cosine(vector, reference) >= 0.999
    for pair, expected in REFERENCE["similarities"].items():
        first, second = (int(n) for n in pair.split(","))
        assert abs(_dot(vectors[first], vectors[second]) - expected) <= 0.01, pair


def test_paraphrases_are_closer_than_unrelated_sentences(model: MiniLMEmbedder) -> None:
    """What hashing cannot do: the vitamin D pair shares few words yet scores high."""
    _, _, baby, _, vitamin, low_levels = model.embed(REFERENCE["sentences"])
    assert _dot(vitamin, low_levels) > 0.8
    assert _dot(vitamin, baby) < 0.1


def test_long_text_is_truncated_at_256_word_pieces(model: MiniLMEmbedder) -> None:
    long = _long_text(2_000)
    assert MAX_WORD_PIECES == 256  # the model's max_seq_length, [CLS] and [SEP] included
    assert model.encode([long]).word_pieces == [256]
    assert model.encode([long]).input_ids.shape == (1, 256)
    (vector,) = model.embed([long])
    assert len(vector) == 384
    assert math.isclose(math.sqrt(_dot(vector, vector)), 1.0, abs_tol=1e-5)
    # What lies past the 256th piece cannot change the vector.
    (longer,) = model.embed([long + " entirely different closing words about bakeries"])
    assert max(abs(x - y) for x, y in zip(vector, longer, strict=True)) < 1e-6
    # ... while a change inside the window does.
    (changed,) = model.embed(["bakeries " + long])
    assert _cosine(vector, changed) < 0.9999


def test_a_batch_is_padded_to_its_longest_text_only(model: MiniLMEmbedder) -> None:
    encoded = model.encode(["A man is eating food.", "A man is eating a piece of bread."])
    assert encoded.word_pieces == [8, 11]  # [CLS] + words and the period + [SEP]
    assert encoded.input_ids.shape == (2, 11)  # not the 128 tokenizer.json ships with
    assert encoded.input_ids[0, 8:].tolist() == [0, 0, 0]
    assert encoded.token_type_ids.tolist() == [[0] * 11, [0] * 11]


def test_batching_does_not_change_vectors(model: MiniLMEmbedder) -> None:
    texts = [*REFERENCE["sentences"], _long_text(40), _long_text(400), "", "Ice."]
    one_by_one = [model.embed([text])[0] for text in texts]
    together = model.embed(texts)
    for single, batched in zip(one_by_one, together, strict=True):
        assert max(abs(x - y) for x, y in zip(single, batched, strict=True)) <= 1e-4


def test_empty_input(model: MiniLMEmbedder) -> None:
    assert model.embed([]) == []
    (empty,) = model.embed([""])  # still [CLS] [SEP]: a unit vector, not NaN
    assert math.isclose(math.sqrt(_dot(empty, empty)), 1.0, abs_tol=1e-5)


def test_concurrent_calls_agree_with_sequential_ones(model: MiniLMEmbedder) -> None:
    batches = [[f"{sentence} ({n})" for sentence in REFERENCE["sentences"]] for n in range(8)]
    sequential = [model.embed(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(model.embed, batches))
    for left, right in zip(sequential, concurrent, strict=True):
        for a, b in zip(left, right, strict=True):
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-6


def test_the_model_is_loaded_once_per_process(model: MiniLMEmbedder) -> None:
    shared = make_embedder(Settings().replace(embedding={"embedder": "minilm"}))
    assert isinstance(shared, SharedBatches)  # calls shared across threads by default
    assert shared.model is model
    assert make_embedder(Settings().replace(embedding={"embedder": "auto"})) is shared
    unshared = Settings().replace(embedding={"embedder": "auto", "shared_batches": False})
    assert make_embedder(unshared) is model
    other = make_embedder(Settings().replace(embedding={"embedder": "minilm", "threads": 2}))
    assert other is not model
    (mine,), (theirs,) = other.embed(["Ice."]), model.embed(["Ice."])
    assert mine == pytest.approx(theirs, abs=1e-5)


def test_hashing_is_chosen_by_name() -> None:
    embedder = make_embedder(
        Settings().replace(embedding={"embedder": "hashing", "dimensions": 32})
    )
    assert isinstance(embedder, HashingEmbedder)
    assert (embedder.name, embedder.dimensions, embedder.semantic) == ("hashing-v1-32", 32, False)


def test_carrier_files_are_the_pinned_ones() -> None:
    for file in (ONNX_MODEL, TOKENIZER):
        assert sha256_of(locate(file)) == file.sha256


def test_a_changed_byte_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    shutil.copyfile(locate(ONNX_MODEL), copy)
    with copy.open("r+b") as stream:
        stream.seek(1_000_000)
        byte = stream.read(1)
        stream.seek(1_000_000)
        stream.write(bytes([byte[0] ^ 0x01]))
    actual = sha256_of(copy)
    for choice in ("minilm", "auto"):  # a mismatch is never a reason to fall back
        with pytest.raises(ModelFileMismatch) as caught:
            make_embedder(
                Settings().replace(embedding={"embedder": choice, "model_path": str(copy)})
            )
        assert str(copy) in caught.value.reason
        assert ONNX_MODEL.sha256 in caught.value.reason
        assert actual in caught.value.reason
        assert isinstance(caught.value, PipelineError)


def test_an_explicit_path_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "tokenizer.json"
    for choice in ("minilm", "auto"):
        with pytest.raises(ModelFileMissing, match="PIPELINE_EMBEDDING_TOKENIZER_PATH") as caught:
            make_embedder(
                Settings().replace(embedding={"embedder": choice, "tokenizer_path": str(missing)})
            )
        assert str(missing) in caught.value.reason


def test_explicit_paths_to_good_copies_are_used(tmp_path: Path) -> None:
    model_copy = shutil.copyfile(locate(ONNX_MODEL), tmp_path / "m.onnx")
    tokenizer_copy = shutil.copyfile(locate(TOKENIZER), tmp_path / "t.json")
    embedder = make_embedder(
        Settings().replace(
            embedding={
                "embedder": "minilm",
                "model_path": str(model_copy),
                "tokenizer_path": str(tokenizer_copy),
            }
        )
    )
    (vector,) = embedder.embed([REFERENCE["sentences"][0]])
    assert _cosine(vector, REFERENCE["vectors"][0]) >= 0.999


def test_a_missing_carrier_is_not_installed() -> None:
    absent = ModelFile("test file", "no-such-distribution-xyz", "x/y.bin", "0" * 64, "SETTING")
    with pytest.raises(ModelNotInstalled, match="uv sync --group model") as caught:
        locate(absent)
    assert "no-such-distribution-xyz" in caught.value.reason


FALLBACK_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    sys.modules["onnxruntime"] = None  # `import onnxruntime` now fails
    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.name, record.levelname, record.getMessage()))
    logging.getLogger().addHandler(Keep())
    from pipeline.embedding import make_embedder
    from pipeline.errors import ModelNotInstalled
    from pipeline.settings import Settings
    auto = [
        make_embedder(Settings().replace(embedding={"embedder": "auto", "dimensions": 64}))
        for _ in range(3)
    ]
    try:
        make_embedder(Settings().replace(embedding={"embedder": "minilm"}))
        refused = None
    except ModelNotInstalled as error:
        refused = error.reason
    print(json.dumps({
        "auto": sorted({type(e).__name__ + ":" + e.name for e in auto}),
        "records": records,
        "refused": refused,
    }))
    """
)


def test_without_onnxruntime_auto_falls_back_and_minilm_refuses() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    outcome = json.loads(result.stdout)
    assert outcome["auto"] == ["HashingEmbedder:hashing-v1-64"]
    assert len(outcome["records"]) == 1, outcome["records"]
    name, level, message = outcome["records"][0]
    assert (name, level) == ("pipeline.embedding", "WARNING")
    assert "hashing" in message
    assert "onnxruntime" in message
    assert outcome["refused"] is not None
    assert "onnxruntime" in outcome["refused"]
    assert "uv sync --group model" in outcome["refused"]


def test_shared_calls_give_each_caller_the_model_s_own_vectors(model: MiniLMEmbedder) -> None:
    shared = make_embedder(Settings().replace(embedding={"embedder": "minilm"}))
    batches = [
        [f"{sentence} ({n})" for sentence in REFERENCE["sentences"][: 1 + n % 6]] for n in range(12)
    ]
    alone = [model.embed(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=6) as pool:  # they queue behind each other
        together = list(pool.map(shared.embed, batches))
    for left, right in zip(alone, together, strict=True):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):  # padding to a longer text changes ~1e-7
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-5
