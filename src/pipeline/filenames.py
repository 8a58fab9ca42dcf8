"""Client-supplied file names, made safe to store, echo and print.

A file name arrives from the client (a multipart ``filename``, ``filename*`` or the
``?filename=`` query parameter) and is only ever a label: the pipeline never uses it
as a path. It is nonetheless stored, returned in JSON, shown by the CLI and written to
logs, so :func:`sanitise_filename` turns whatever arrives into one plain line of
visible text at the boundary, and nothing downstream has to think about it again.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

DEFAULT_NAME: Final = "upload"
MAX_NAME_BYTES: Final = 255
"""The common file-system limit, in UTF-8 bytes (the column allows more)."""
MAX_EXTENSION_CHARS: Final = 16
"""A longer "extension" is part of the name, not a type hint worth keeping on truncation."""

# Separators a path can be split on by some system or reader: POSIX and Windows, and
# the look-alikes a display could show as one (full-width, division slash).
_SEPARATORS: Final = re.compile("[/\\\\\uff0f\uff3c\u2215\u29f5]")
_DRIVE: Final = re.compile(r"^[A-Za-z]:")
_SPACES: Final = re.compile(r"\s+")
# Categories removed outright: controls (C0, DEL, C1: NUL, ESC, CR, LF...), format
# characters (bidi overrides and isolates, zero-width joiners, BOM) and lone
# surrogates (which cannot be encoded for Postgres).
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs"})
# Line and paragraph separators and every other kind of space become one plain space.
_SPACE_CATEGORIES: Final = frozenset({"Zs", "Zl", "Zp"})
_ESCAPED_CATEGORIES: Final = _DROPPED_CATEGORIES | {"Zl", "Zp"}
_WHITESPACE_CONTROLS: Final = frozenset("\t\n\v\f\r\x1c\x1d\x1e\x1f\x85")


def sanitise_filename(name: str | None) -> str:
    """A display name safe to store and echo: one line, no directories, no controls.

    Keeps only the last path component (``../../etc/passwd`` is ``passwd``,
    ``C:\\x\\y.txt`` is ``y.txt``), drops control and format characters (so no CR/LF
    can reach a header or a log line, no escape sequence a terminal, no bidi override
    can disguise the extension), folds every space to one, trims dots and spaces at
    the ends (no ``.`` or ``..``), and caps the length at 255 UTF-8 bytes, keeping a
    short extension. An empty result is ``upload``.
    """
    if not name:
        return DEFAULT_NAME
    name = unicodedata.normalize("NFC", _visible(name))
    name = _SEPARATORS.split(name)[-1]
    name = _DRIVE.sub("", name)
    name = _SPACES.sub(" ", name).strip(" .")
    return _truncate(name).strip(" .") or DEFAULT_NAME


def _visible(name: str) -> str:
    """Whitespace controls become spaces; other invisible or unencodable characters go."""
    kept: list[str] = []
    for char in name:
        category = unicodedata.category(char)
        if char in _WHITESPACE_CONTROLS or category in _SPACE_CATEGORIES:
            kept.append(" ")
        elif category not in _DROPPED_CATEGORIES:
            kept.append(char)
    return "".join(kept)


def _truncate(name: str) -> str:
    """At most :data:`MAX_NAME_BYTES` UTF-8 bytes, on a character boundary, extension kept."""
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > MAX_EXTENSION_CHARS:
        return _cut(name, MAX_NAME_BYTES)
    suffix = f".{extension}"
    return _cut(stem, MAX_NAME_BYTES - len(suffix.encode())).rstrip(" .") + suffix


def _cut(text: str, limit: int) -> str:
    return text.encode()[:limit].decode(errors="ignore")


def for_terminal(text: str) -> str:
    """``text`` with every control or format character shown as an escape (CLI output).

    A local path is printed as it is, except that nothing in it can move the cursor,
    clear the screen or reorder the line: those characters are written as ``\\x1b``,
    ``\\u202e`` and so on.
    """
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in _ESCAPED_CATEGORIES
        else char
        for char in text
    )
