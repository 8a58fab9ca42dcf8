"""DOCX: the body text of ``word/document.xml``, read with zipfile and lxml.

A DOCX is a ZIP of XML parts; the main document part is read for its content
(headers, footers and comments are page furniture or metadata, not content), and
the numbering and styles parts for the numbers Word draws before list items and
headings. One module per job:

* :mod:`.archive`: the parts, out of a ZIP that may be a bomb (the limits of
  :class:`~pipeline.processing.limits.DocxLimits`, checked before and while
  decompressing);
* :mod:`.xml`: safe parsing (no entities, no DTD, no network, bounded depth);
* :mod:`.body`: paragraphs and table rows as blocks, with checkboxes;
* :mod:`.numbering`: automatic numbering from ``word/numbering.xml``;
* :mod:`.omml`: equations as linear text.
"""

from __future__ import annotations

from pipeline.errors import CorruptContent
from pipeline.processing.extract.docx.archive import (
    DOCUMENT_PART,
    NUMBERING_PART,
    STYLES_PART,
    check_directory,
    read_capped,
    read_parts,
)
from pipeline.processing.extract.docx.body import Body
from pipeline.processing.extract.docx.numbering import Numbering
from pipeline.processing.extract.docx.xml import name, parse
from pipeline.processing.extract.normalize import join_blocks
from pipeline.processing.limits import DocxLimits

__all__ = ["check_directory", "extract_docx", "read_capped"]


def extract_docx(data: bytes, limits: DocxLimits) -> str:
    """Text of a DOCX document (see module docstring).

    Raises:
        ArchiveTooLarge: the package breaks one of ``limits``.
        CorruptContent: not a readable DOCX, nested too deeply, or declaring
            exponentially expanding entities.
    """
    parts = read_parts(data, limits)
    root = parse(parts.document, DOCUMENT_PART)
    body = next((el for el in root if name(el) == ("w", "body")), None)
    if name(root) != ("w", "document") or body is None:
        raise CorruptContent("DOCX is corrupt: its document.xml has no document body; re-save it")
    numbering = None
    if parts.numbering is not None:
        styles = None if parts.styles is None else parse(parts.styles, STYLES_PART)
        numbering = Numbering(parse(parts.numbering, NUMBERING_PART), styles)
    return join_blocks(Body(numbering).blocks(body))
