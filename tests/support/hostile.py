"""Hostile documents, generated when a test needs them (no multi-MB binaries in git).

Each generator builds the smallest file that exercises one defence: a DOCX zip bomb,
PDFs with thousands of pages, absurdly nested objects or page trees, a compressed
content stream that inflates past the memory cap, a content stream too long to read
within the time limit, HTML nested a million levels deep, and text that is one long
line. They are deterministic, and fast to build: compressed parts are written in
slices, never held whole in memory.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import Final

MIB: Final = 1024 * 1024
W_NS: Final = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
NORMAL_TEXT: Final = (
    b"Glaciers store about two thirds of the world's fresh water. They move slowly.\n\n"
    b"A normal document, uploaded after a hostile one, is processed as usual."
)

# ---------------------------------------------------------------------------- DOCX

_CONTENT_TYPES: Final = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="xml" ContentType="application/xml"/></Types>'
)
_PARAGRAPH: Final = b"<w:p><w:r><w:t>Quarterly report</w:t></w:r></w:p>"
_XML_HEAD: Final = f'<w:document xmlns:w="{W_NS}"><w:body>'.encode() + _PARAGRAPH
_XML_TAIL: Final = b"</w:body></w:document>"


def docx_bomb(expanded_bytes: int) -> bytes:
    """A well-formed DOCX whose ``word/document.xml`` inflates to ``expanded_bytes``.

    The padding is whitespace between elements, so the XML stays valid: only the
    size limits can refuse it. Deflate squeezes it about a thousandfold.
    """
    padding = expanded_bytes - len(_XML_HEAD) - len(_XML_TAIL)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        info = zipfile.ZipInfo("word/document.xml", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=expanded_bytes >= 0xFFFFFFFF) as part:
            part.write(_XML_HEAD)
            slice_ = b" " * MIB
            while padding > 0:
                part.write(slice_[: min(padding, MIB)])
                padding -= MIB
            part.write(_XML_TAIL)
    return buffer.getvalue()


def docx_with_parts(count: int) -> bytes:
    """A valid DOCX padded with ``count`` empty extra parts."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("word/document.xml", _XML_HEAD + _XML_TAIL)
        for number in range(count):
            archive.writestr(f"word/media/padding{number}.bin", b"")
    return buffer.getvalue()


def lie_about_size(archive: bytes, name: str, declared: int) -> bytes:
    """``archive`` with the central directory's uncompressed size of ``name`` forged."""
    data = bytearray(archive)
    entry = data.find(b"PK\x01\x02")
    while entry != -1:
        name_length = int.from_bytes(data[entry + 28 : entry + 30], "little")
        if data[entry + 46 : entry + 46 + name_length] == name.encode():
            data[entry + 24 : entry + 28] = declared.to_bytes(4, "little")
            return bytes(data)
        entry = data.find(b"PK\x01\x02", entry + 4)
    raise ValueError(f"{name} is not in the archive")


def docx_nested(depth: int) -> bytes:
    """A DOCX whose body is ``depth`` content controls nested in one another."""
    opening = b"<w:sdt><w:sdtContent>" * depth
    closing = b"</w:sdtContent></w:sdt>" * depth
    xml = _XML_HEAD[: -len(_PARAGRAPH)] + opening + _PARAGRAPH + closing + _XML_TAIL
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("word/document.xml", xml)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- PDF

_FONT: Final = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
_RESOURCES: Final = b"/Resources << /Font << /F1 3 0 R >> >>"


def pdf(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (object n is ``objects[n - 1]``, 1 is the catalog),
    with an exact cross-reference table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _stream(content: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d%s >>\nstream\n" % (len(content), extra) + content + b"\nendstream"


def _one_page(content: bytes, *, page_extra: bytes = b"", stream_extra: bytes = b"") -> bytes:
    """Catalog 1, pages 2, font 3, content 4, the page 5."""
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
            _FONT,
            _stream(content, stream_extra),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            + _RESOURCES
            + b" /Contents 4 0 R"
            + page_extra
            + b" >>",
        ]
    )


def _text(words: bytes) -> bytes:
    return b"BT /F1 12 Tf 72 720 Td (" + words + b") Tj ET"


def pdf_pages(count: int) -> bytes:
    """A PDF of ``count`` pages that all draw the same short line."""
    kids = b" ".join(b"%d 0 R" % (5 + index) for index in range(count))
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] " + _RESOURCES
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % count,
            _FONT,
            _stream(_text(b"Page")),
            *[page + b" /Contents 4 0 R >>"] * count,
        ]
    )


def pdf_nested_arrays(depth: int) -> bytes:
    """A one-page PDF whose page dictionary holds arrays nested ``depth`` deep."""
    return _one_page(_text(b"Nested"), page_extra=b" /Junk " + b"[" * depth + b"]" * depth)


def pdf_deep_page_tree(depth: int) -> bytes:
    """One page at the bottom of a chain of ``depth`` page-tree nodes."""
    objects = [b"<< /Type /Catalog /Pages 4 0 R >>", _FONT, _stream(_text(b"Deep"))]
    for level in range(depth):
        parent = b" /Parent %d 0 R" % (3 + level) if level else b""
        objects.append(b"<< /Type /Pages /Kids [%d 0 R] /Count 1%s >>" % (5 + level, parent))
    objects.append(
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] " % (3 + depth)
        + b"/Resources << /Font << /F1 2 0 R >> >> /Contents 3 0 R >>"
    )
    return pdf(objects)


def pdf_inflate_bomb(expanded_mb: int) -> bytes:
    """A one-page PDF whose content stream inflates to ``expanded_mb`` MiB of spaces."""
    compressor = zlib.compressobj(9)
    slice_ = b" " * MIB
    parts = [compressor.compress(_text(b"Bomb") + b" ")]
    parts += [compressor.compress(slice_) for _ in range(expanded_mb)]
    parts.append(compressor.flush())
    return _one_page(b"".join(parts), stream_extra=b" /Filter /FlateDecode")


def pdf_many_operators(count: int) -> bytes:
    """A one-page PDF showing ``count`` one-letter strings: slow to read, by design."""
    return _one_page(b"BT /F1 12 Tf 72 720 Td " + b"(x) Tj " * count + b"ET")


# ---------------------------------------------------------------------- HTML, text


def html_nested(depth: int, tag: str = "div") -> bytes:
    """``depth`` nested elements around one word (closed, so it is well-formed)."""
    return (f"<{tag}>" * depth + "deep" + f"</{tag}>" * depth).encode()


def one_line_text(size: int) -> bytes:
    """``size`` bytes of words on a single line, with no sentence end anywhere."""
    unit = b"lorem ipsum dolor sit amet consectetur adipiscing elit "
    return (unit * (size // len(unit) + 1))[:size]


def pdf_form_fanout(levels: int, fanout: int) -> bytes:
    """A page that draws a form ``fanout`` times, which draws the next one ``fanout``
    times, ``levels`` deep: a few kilobytes that ask for ``fanout ** levels`` texts
    (the PDF cousin of "billion laughs")."""
    first = 6  # catalog 1, pages 2, font 3, page content 4, page 5, forms 6..
    draw = b"q /X Do Q " * fanout
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
        _FONT,
        _stream(draw),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /XObject << /X %d 0 R >> >> /Contents 4 0 R >>" % first,
    ]
    for level in range(levels):
        last = level == levels - 1
        content = _text(b"x") if last else draw
        resources = (
            _RESOURCES
            if last
            else b"/Resources << /XObject << /X %d 0 R >> >>" % (first + level + 1)
        )
        extra = b" /Type /XObject /Subtype /Form /BBox [0 0 612 792] " + resources
        objects.append(_stream(content, extra))
    return pdf(objects)
