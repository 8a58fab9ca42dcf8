"""Hostile markup declarations: a DOCX "billion laughs" and HTML inline DTDs.

A DOCX whose ``document.xml`` declares exponentially expanding entities must be refused
with a reason that names that attack (not "nests too deeply", which sends the person
looking for a nesting problem that is not there). An HTML page that opens with a
DOCTYPE carrying an internal subset (``<!DOCTYPE html [ ... ]>``) must yield its content
only: libxml2's HTML parser ends the DOCTYPE at the first ``>`` and reads the rest of
the subset, ``]>`` included, as text.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from tests.support import hostile

from pipeline.errors import CorruptContent
from pipeline.processing.extract import extract
from pipeline.processing.extract.html import html_blocks


def docx_of(document_xml: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        archive.writestr("word/document.xml", document_xml)
    return buffer.getvalue()


def laughs(levels: int) -> bytes:
    """The classic: ``lol<levels>`` expands to 10**levels copies of "lol"."""
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, levels + 1)
    )
    return (
        f'<?xml version="1.0"?><!DOCTYPE w:document [{entities}]>'
        f'<w:document xmlns:w="{hostile.W_NS}"><w:body>'
        f"<w:p><w:r><w:t>&lol{levels};</w:t></w:r></w:p></w:body></w:document>"
    ).encode()


def test_billion_laughs_docx_is_refused_for_its_entities() -> None:
    with pytest.raises(CorruptContent) as caught:
        extract(docx_of(laughs(9)), "docx", None)
    reason = caught.value.reason
    assert "nest" not in reason
    assert reason == (
        'DOCX declares entities that expand exponentially ("billion laughs"); '
        "a Word document never declares entities: re-save it from a word processor"
    )


def test_docx_nested_too_deep_keeps_its_own_reason() -> None:
    with pytest.raises(CorruptContent, match="nests elements too deeply"):
        extract(hostile.docx_nested(300), "docx", None)


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        (
            '<!DOCTYPE html [<!ENTITY x "y"><!ELEMENT p ANY>]><html><body>'
            "<p>Hello world</p></body></html>",
            ["Hello world"],
        ),
        ('<!DOCTYPE html [ <!ENTITY x "y"> ]>\n<p>Hello</p>', ["Hello"]),
        (
            '<!DOCTYPE html SYSTEM "about:legacy-compat" [<!ATTLIST p a CDATA #IMPLIED>]>'
            "<title>T</title><p>Hi &amp; there</p>",
            ["Hi & there"],
        ),
        # Quoted "]>" and ">" inside the subset, a comment in it, and a prolog before it.
        (
            '\ufeff<?xml version="1.0"?>\n<!-- c --><!doctype html [<!ENTITY q "a]>b>c">'
            "<!-- ]> --><!ENTITY r 'x>y'>]  >  <p>Body</p>",
            ["Body"],
        ),
    ],
)
def test_html_inline_dtd_never_leaks_into_the_text(markup: str, expected: list[str]) -> None:
    assert html_blocks(markup) == expected
    assert "]>" not in extract(markup.encode(), "html", None).text


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("<!DOCTYPE html><p>plain</p>", ["plain"]),
        ("<p>a ]> b</p>", ["a ]> b"]),  # "]>" in the content is content
    ],
)
def test_html_without_a_leading_inline_dtd_is_read_as_before(
    markup: str, expected: list[str]
) -> None:
    assert html_blocks(markup) == expected


def test_unterminated_inline_dtd_is_left_to_the_parser_and_stays_linear() -> None:
    # No closing "]>": nothing is removed; many unclosed comments cost one pass.
    markup = "<!DOCTYPE html [" + "<!--" * 200_000 + "<p>text</p>"
    blocks = html_blocks(markup)
    assert isinstance(blocks, list)
