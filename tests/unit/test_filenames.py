"""Hostile client file names: what is stored and echoed is one safe line of text."""

from __future__ import annotations

import unicodedata

import pytest

from pipeline.filenames import MAX_NAME_BYTES, for_terminal, sanitise_filename

HOSTILE = [
    # path separators and traversal
    ("../../etc/passwd", "passwd"),
    ("/etc/shadow", "shadow"),
    ("C:\\Windows\\System32\\x.dll", "x.dll"),
    ("C:x.txt", "x.txt"),
    ("..\\..\\boot.ini", "boot.ini"),
    ("dir/", "upload"),
    ("a/b\\c/d.txt", "d.txt"),
    ("\uff0e\uff0e\uff0fsecret.txt", "secret.txt"),  # full-width ../
    ("evil\u2215passwd", "passwd"),  # division slash
    # control characters, escape sequences
    ("report\x00.pdf", "report.pdf"),
    ("a\x00/../b.txt", "b.txt"),
    ("\x1b[31mred\x1b[0m.txt", "[31mred[0m.txt"),
    ("bell\x07.txt", "bell.txt"),
    ("c1\x9b31m.txt", "c131m.txt"),
    ("del\x7f.txt", "del.txt"),
    # header injection
    ("a\r\nSet-Cookie: x", "a Set-Cookie: x"),
    ("a\rb\nc\u2028d\u2029e\x85f.txt", "a b c d e f.txt"),
    ("name.txt\r\n\r\n<html>", "name.txt <html>"),
    # bidi overrides and invisible characters
    ("invoice\u202egnp.exe", "invoicegnp.exe"),
    ("\u2066x\u2069\u200b\u200d\ufeff.txt", "x.txt"),
    ("lone\ud800surrogate.txt", "lonesurrogate.txt"),
    # empty, dots, spaces
    (None, "upload"),
    ("", "upload"),
    (".", "upload"),
    ("..", "upload"),
    ("...", "upload"),
    ("  ", "upload"),
    ("\x00\x01", "upload"),
    (" .hidden ", "hidden"),
    ("tabs\tand\u00a0\u3000spaces.txt", "tabs and spaces.txt"),
    # ordinary names survive
    ("notes.txt", "notes.txt"),
    ("Résumé (final) v2.pdf", "Résumé (final) v2.pdf"),
    ("e\u0301t\u00e9.md", "\u00e9t\u00e9.md"),  # NFC
    ("データ.docx", "データ.docx"),
]


@pytest.mark.parametrize(("raw", "expected"), HOSTILE)
def test_hostile_names_are_sanitised(raw: str | None, expected: str) -> None:
    assert sanitise_filename(raw) == expected


@pytest.mark.parametrize("raw", [raw for raw, _ in HOSTILE])
def test_sanitised_names_are_one_visible_encodable_line(raw: str | None) -> None:
    name = sanitise_filename(raw)
    assert name
    assert name == sanitise_filename(name)  # idempotent
    assert not {"/", "\\", "\r", "\n", "\x00"} & set(name)
    assert all(unicodedata.category(char) not in ("Cc", "Cf", "Cs") for char in name)
    assert name not in (".", "..")
    name.encode("utf-8")  # storable in Postgres


@pytest.mark.parametrize(
    ("raw", "ending"),
    [
        ("a" * 1000 + ".pdf", ".pdf"),
        ("é" * 1000 + ".md", ".md"),  # two bytes each: never split
        ("😀" * 300, "😀"),
        ("b" * 400 + "." + "c" * 40, "b"),  # too long to be an extension: plain cut
    ],
)
def test_overlong_names_fit_255_bytes_and_keep_a_short_extension(raw: str, ending: str) -> None:
    name = sanitise_filename(raw)
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert len(name.encode()) > MAX_NAME_BYTES - 4
    assert name.endswith(ending)


def test_terminal_output_escapes_what_could_drive_the_terminal() -> None:
    shown = for_terminal("docs/\x1b[2Jevil\u202etxt.exe\r\n.pdf")
    assert shown == "docs/\\x1b[2Jevil\\u202etxt.exe\\r\\n.pdf"
    assert for_terminal("docs/Résumé.pdf") == "docs/Résumé.pdf"
