"""DOCX equations, numbering and checkboxes; Markdown list numbers and task boxes (issue 14).

The quality fixtures of these classes come out exactly as their reference texts (the DOCX
ones are written by tests/fixtures/builders/docxmd.py); each rule is then pinned on the
smallest document that shows it: number formats and counting (starts, restarts, levels,
styles), every OMML construct, both kinds of checkbox, the limits on the extra parts, and
the Markdown list cases.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from tests.support.golden import FIXTURES

from pipeline.errors import ArchiveTooLarge, CorruptContent
from pipeline.processing.extract import extract
from pipeline.processing.extract.docx import read_capped
from pipeline.processing.extract.docx.numbering import format_number
from pipeline.processing.extract.docx.omml import is_atom
from pipeline.processing.extract.markdown import extract_markdown
from pipeline.processing.limits import DocxLimits, ExtractLimits
from pipeline.processing.sniff import sniff

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
M = "http://schemas.openxmlformats.org/officeDocument/2006/math"
W14 = "http://schemas.microsoft.com/office/word/2010/wordml"
CASES = [
    "docx/omml_equations_note.docx",
    "docx/numbered_policy.docx",
    "docx/checkbox_form.docx",
    "docx/tables_report.docx",
    "markdown/ordered_list_start_numbers.md",
    "markdown/nested_ordered_lists.md",
    "markdown/task_lists.md",
]


# ------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("case", CASES)
def test_quality_fixture_reads_as_its_reference(case: str) -> None:
    path = FIXTURES / "quality" / case
    data = path.read_bytes()
    sniffed = sniff(data)
    assert sniffed.kind == path.parent.name
    expected = path.with_name(path.name.split(".")[0] + ".expected.txt")
    text = extract(data, sniffed.kind, sniffed.encoding).text
    assert text == expected.read_text("utf-8").removesuffix("\n")


# ------------------------------------------------------------ DOCX helpers


def docx(body: str, *, numbering: str | None = None, styles: str | None = None) -> bytes:
    """A minimal package: ``body`` is the inside of ``w:body``; the other parts are the
    inside of ``w:numbering`` and ``w:styles``."""
    namespaces = f'xmlns:w="{W}" xmlns:m="{M}" xmlns:w14="{W14}"'
    parts = {
        "[Content_Types].xml": "<Types/>",
        "word/document.xml": f"<w:document {namespaces}><w:body>{body}</w:body></w:document>",
    }
    if numbering is not None:
        parts["word/numbering.xml"] = f'<w:numbering xmlns:w="{W}">{numbering}</w:numbering>'
    if styles is not None:
        parts["word/styles.xml"] = f'<w:styles xmlns:w="{W}">{styles}</w:styles>'
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in parts.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def text_of(body: str, **parts: str) -> list[str]:
    return extract(docx(body, **parts), "docx", None).text.split("\n\n")


def p(text: str, *, num: int | None = None, ilvl: int | None = None, style: str = "") -> str:
    props = f'<w:pStyle w:val="{style}"/>' if style else ""
    if num is not None or ilvl is not None:
        props += "<w:numPr>"
        props += f'<w:ilvl w:val="{ilvl}"/>' if ilvl is not None else ""
        props += f'<w:numId w:val="{num}"/>' if num is not None else ""
        props += "</w:numPr>"
    runs = f"<w:r><w:t>{text}</w:t></w:r>" if text else ""
    return f"<w:p><w:pPr>{props}</w:pPr>{runs}</w:p>"


def lvl(ilvl: int, fmt: str, text: str, start: int | None = 1, extra: str = "") -> str:
    start_element = f'<w:start w:val="{start}"/>' if start is not None else ""
    return (
        f'<w:lvl w:ilvl="{ilvl}">{start_element}<w:numFmt w:val="{fmt}"/>{extra}'
        f'<w:lvlText w:val="{text}"/></w:lvl>'
    )


def abstract(key: int, *levels: str, extra: str = "") -> str:
    return f'<w:abstractNum w:abstractNumId="{key}">{extra}{"".join(levels)}</w:abstractNum>'


def num(num_id: int, key: int, overrides: str = "") -> str:
    return f'<w:num w:numId="{num_id}"><w:abstractNumId w:val="{key}"/>{overrides}</w:num>'


def start_override(ilvl: int, start: int) -> str:
    return f'<w:lvlOverride w:ilvl="{ilvl}"><w:startOverride w:val="{start}"/></w:lvlOverride>'


OUTLINE = abstract(
    0, lvl(0, "decimal", "%1."), lvl(1, "lowerLetter", "%1.%2)"), lvl(2, "lowerRoman", "(%3)")
)


# --------------------------------------------------------------- numbering


@pytest.mark.parametrize(
    ("number", "kind", "shown"),
    [
        (7, "decimal", "7"),
        (7, "decimalZero", "07"),
        (12, "decimalZero", "12"),
        (1, "lowerLetter", "a"),
        (26, "upperLetter", "Z"),
        (27, "lowerLetter", "aa"),
        (54, "upperLetter", "BBB"),
        (4, "lowerRoman", "iv"),
        (1994, "upperRoman", "MCMXCIV"),
        (0, "upperRoman", "0"),
        (0, "lowerLetter", "0"),
        (1, "ordinal", "1st"),
        (12, "ordinal", "12th"),
        (23, "ordinal", "23rd"),
        (5, "none", ""),
        (7, "zero3", "007"),
        (7, "japaneseCounting", "7"),
    ],
)
def test_number_formats(number: int, kind: str, shown: str) -> None:
    assert format_number(number, kind) == shown


def test_levels_count_and_reset_deeper_levels() -> None:
    body = "".join(
        [
            p("One", num=1, ilvl=0),
            p("One a", num=1, ilvl=1),
            p("One a i", num=1, ilvl=2),
            p("One a ii", num=1, ilvl=2),
            p("One b", num=1, ilvl=1),
            p("Two", num=1, ilvl=0),
            p("Two a", num=1, ilvl=1),
            p("Not numbered"),
            p("Three", num=1),  # no w:ilvl: level 0
        ]
    )
    assert text_of(body, numbering=OUTLINE + num(1, 0)) == [
        "1. One",
        "1.a) One a",
        "(i) One a i",
        "(ii) One a ii",
        "1.b) One b",
        "2. Two",
        "2.a) Two a",
        "Not numbered",
        "3. Three",
    ]


def test_start_values_restarts_and_shared_definitions() -> None:
    numbering = (
        abstract(0, lvl(0, "decimal", "%1.", start=4))
        + abstract(1, lvl(0, "upperLetter", "%1."))
        + num(1, 0)
        + num(2, 0)  # the same definition: the list continues
        + num(3, 0, start_override(0, 1))  # "restart numbering"
        + num(4, 1, start_override(0, 3))  # "set numbering value"
    )
    body = "".join(
        [
            p("a", num=1),
            p("b", num=1),
            p("c", num=2),
            p("d", num=3),
            p("e", num=3),
            p("f", num=4),
            p("g", num=1),
        ]
    )
    assert text_of(body, numbering=numbering) == [
        "4. a",
        "5. b",
        "6. c",
        "1. d",
        "2. e",
        "C. f",
        "3. g",
    ]


def test_level_restart_setting_and_legal_numbering() -> None:
    numbering = abstract(
        0,
        lvl(0, "upperRoman", "Article %1"),
        lvl(1, "decimal", "Section %2", extra='<w:lvlRestart w:val="0"/>'),
        lvl(2, "lowerLetter", "%1.%2.%3", extra="<w:isLgl/>"),
    ) + num(1, 0)
    body = "".join(
        [
            p("Name", num=1, ilvl=0),
            p("Scope", num=1, ilvl=1),
            p("Members", num=1, ilvl=0),
            p("Eligibility", num=1, ilvl=1),  # lvlRestart 0: Section 2, not Section 1
            p("Age", num=1, ilvl=2),
        ]
    )
    assert text_of(body, numbering=numbering) == [
        "Article I Name",
        "Section 1 Scope",
        "Article II Members",
        "Section 2 Eligibility",
        "2.2.1 Age",
    ]


def test_empty_numbered_paragraph_still_counts() -> None:
    body = p("First", num=1) + p("", num=1) + p("Third", num=1)
    assert text_of(body, numbering=OUTLINE + num(1, 0)) == ["1. First", "3. Third"]


def test_bullets_and_unknown_lists() -> None:
    numbering = abstract(0, lvl(0, "bullet", "\uf0b7"), lvl(1, "bullet", "o")) + num(1, 0)
    body = "".join(
        [
            p("Apples", num=1, ilvl=0),
            p("Green", num=1, ilvl=1),
            p("Missing instance", num=9),
            p("Missing level", num=1, ilvl=5),
            p("Explicitly none", num=0),
        ]
    )
    assert text_of(body, numbering=numbering) == [
        "\u2022 Apples",
        "\u2022 Green",
        "Missing instance",
        "Missing level",
        "Explicitly none",
    ]


HEADING_STYLES = (
    '<w:style w:type="paragraph" w:default="1" w:styleId="Normal"/>'
    '<w:style w:type="paragraph" w:styleId="Heading1"><w:basedOn w:val="Normal"/>'
    '<w:pPr><w:numPr><w:numId w:val="1"/></w:numPr></w:pPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="Heading2"><w:basedOn w:val="Heading1"/>'
    '<w:pPr><w:numPr><w:ilvl w:val="1"/></w:numPr></w:pPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="Heading3"><w:basedOn w:val="Heading1"/></w:style>'
    '<w:style w:type="paragraph" w:styleId="Loop"><w:basedOn w:val="Loop"/></w:style>'
)
HEADINGS = abstract(
    0,
    lvl(0, "decimal", "%1.", extra='<w:pStyle w:val="Heading1"/>'),
    lvl(1, "decimal", "%1.%2", extra='<w:pStyle w:val="Heading2"/>'),
    lvl(2, "decimal", "%1.%2.%3", extra='<w:pStyle w:val="Heading3"/>'),
) + num(1, 0)


def test_headings_numbered_through_their_styles() -> None:
    body = "".join(
        [
            p("Introduction", style="Heading1"),
            p("Background", style="Heading2"),  # ilvl from its own style
            p("History", style="Heading3"),  # ilvl from the level that names the style
            p("Body text.", style="Normal"),
            p("Methods", style="Heading1"),
            p("Unnumbered heading", style="Heading1", num=0),
            p("Looping style", style="Loop"),
        ]
    )
    assert text_of(body, numbering=HEADINGS, styles=HEADING_STYLES) == [
        "1. Introduction",
        "1.1 Background",
        "1.1.1 History",
        "Body text.",
        "2. Methods",
        "Unnumbered heading",
        "Looping style",
    ]


def test_definition_borrowing_a_numbering_style() -> None:
    styles = (
        '<w:style w:type="numbering" w:styleId="LegalList">'
        '<w:pPr><w:numPr><w:numId w:val="1"/></w:numPr></w:pPr></w:style>'
    )
    numbering = (
        abstract(0, lvl(0, "lowerRoman", "%1)"), extra='<w:styleLink w:val="LegalList"/>')
        + abstract(1, extra='<w:numStyleLink w:val="LegalList"/>')
        + num(1, 0)
        + num(2, 1)
    )
    body = p("Borrowed", num=2) + p("Next", num=2) + p("Same list", num=1)
    assert text_of(body, numbering=numbering, styles=styles) == [
        "i) Borrowed",
        "ii) Next",
        "iii) Same list",
    ]


def test_word_2010_custom_format_and_its_fallback() -> None:
    mc = "http://schemas.openxmlformats.org/markup-compatibility/2006"
    level = (
        f'<w:lvl w:ilvl="0" xmlns:mc="{mc}"><w:start w:val="1"/><mc:AlternateContent>'
        '<mc:Choice Requires="w14"><w:numFmt w:val="custom" w:format="001, 002, 003, ..."/>'
        '</mc:Choice><mc:Fallback><w:numFmt w:val="decimal"/></mc:Fallback>'
        '</mc:AlternateContent><w:lvlText w:val="%1."/></w:lvl>'
    )
    numbering = abstract(0, level) + num(1, 0)
    assert text_of(p("Padded", num=1), numbering=numbering) == ["001. Padded"]


def test_numbered_paragraphs_in_table_cells_share_the_count() -> None:
    cell = "<w:tc>" + p("In a cell", num=1) + "</w:tc>"
    body = p("Before", num=1) + f"<w:tbl><w:tr>{cell}<w:tc>{p('x')}</w:tc></w:tr></w:tbl>"
    assert text_of(body, numbering=OUTLINE + num(1, 0)) == ["1. Before", "2. In a cell | x"]


def test_numbering_without_a_numbering_part_is_ignored() -> None:
    assert text_of(p("Plain", num=1)) == ["Plain"]


# -------------------------------------------------------------------- OMML


def math(content: str) -> str:
    return f"<w:p><m:oMath>{content}</m:oMath></w:p>"


def r(text: str) -> str:
    return f"<m:r><m:t>{text}</m:t></m:r>"


def arg(local: str, content: str) -> str:
    return f"<m:{local}>{content}</m:{local}>"


LIMIT = f"<m:limLow>{arg('e', r('lim'))}{arg('lim', r('n→∞'))}</m:limLow>"


@pytest.mark.parametrize(
    ("content", "linear"),
    [
        (f"<m:f>{arg('num', r('a+b'))}{arg('den', r('2'))}</m:f>", "(a+b)/2"),
        (
            "<m:f><m:fPr><m:type m:val='noBar'/></m:fPr>"
            f"{arg('num', r('n'))}{arg('den', r('k'))}</m:f>",
            "n\u00a6k",
        ),
        (f"<m:sSub>{arg('e', r('x'))}{arg('sub', r('i'))}</m:sSub>", "x_i"),
        (f"<m:sSup>{arg('e', r('x'))}{arg('sup', r('n+1'))}</m:sSup>", "x^(n+1)"),
        (
            f"<m:sSubSup>{arg('e', r('x'))}{arg('sub', r('i'))}{arg('sup', r('2'))}</m:sSubSup>",
            "x_i^2",
        ),
        (f"<m:sPre>{arg('sub', r('1'))}{arg('sup', r('4'))}{arg('e', r('He'))}</m:sPre>", "_1^4He"),
        (
            f"<m:rad><m:radPr><m:degHide m:val='1'/></m:radPr><m:deg/>{arg('e', r('x+1'))}</m:rad>",
            "sqrt(x+1)",
        ),
        (f"<m:rad>{arg('deg', r('3'))}{arg('e', r('8'))}</m:rad>", "root(3, 8)"),
        (
            "<m:nary><m:naryPr><m:chr m:val='\u220f'/></m:naryPr>"
            f"{arg('sub', r('i=1'))}{arg('sup', r('n'))}{arg('e', r('i'))}</m:nary>",
            "\u220f_(i=1)^n i",
        ),
        (
            "<m:nary><m:naryPr><m:subHide m:val='1'/><m:supHide m:val='1'/></m:naryPr>"
            f"<m:sub/><m:sup/>{arg('e', r('f dx'))}</m:nary>",
            "\u222b f dx",
        ),
        (f"<m:d>{arg('e', r('a'))}{arg('e', r('b'))}</m:d>", "(a|b)"),
        (
            "<m:d><m:dPr><m:begChr m:val='{'/><m:sepChr m:val=','/><m:endChr m:val=''/>"
            f"</m:dPr>{arg('e', r('x'))}{arg('e', r('y'))}</m:d>",
            "{x,y",
        ),
        (
            "<m:m><m:mPr/>"
            f"<m:mr>{arg('e', r('1'))}{arg('e', r('2'))}</m:mr>"
            f"<m:mr>{arg('e', r('3'))}{arg('e', r('4'))}</m:mr></m:m>",
            "1, 2; 3, 4",
        ),
        (f"<m:eqArr>{arg('e', r('x+y=2'))}{arg('e', r('x-y=0'))}</m:eqArr>", "x+y=2; x-y=0"),
        (f"<m:func>{arg('fName', r('sin'))}{arg('e', r('x'))}</m:func>", "sin x"),
        (
            f"<m:func>{arg('fName', LIMIT)}{arg('e', r('a'))}</m:func>",
            "lim_(n→∞) a",
        ),
        (f"<m:limUpp>{arg('e', r('X'))}{arg('lim', r('def'))}</m:limUpp>", "X^def"),
        (f"<m:acc>{arg('e', r('a'))}</m:acc>", "\u00e2"),
        (
            f"<m:acc><m:accPr><m:chr m:val='\u0307'/></m:accPr>{arg('e', r('x'))}</m:acc>",
            "\u1e8b",
        ),
        (
            f"<m:bar><m:barPr><m:pos m:val='top'/></m:barPr>{arg('e', r('z'))}</m:bar>",
            "z\u0305",
        ),
        (f"<m:bar>{arg('e', r('z'))}</m:bar>", "z\u0332"),
        (f"<m:box>{arg('e', r('a=b'))}</m:box>", "a=b"),
        (
            "<m:groupChr><m:groupChrPr><m:chr m:val='\u23df'/></m:groupChrPr>"
            f"{arg('e', r('a+b'))}</m:groupChr>",
            "a+b",
        ),
        (
            "<m:phant><m:phantPr><m:show m:val='0'/></m:phantPr>"
            f"{arg('e', r('hidden'))}</m:phant>{r('x')}",
            "x",
        ),
        (
            f"<m:sSup>{arg('e', r('x'))}{arg('sup', r('2'))}</m:sSup>{r('dx')}",
            "x^2 dx",
        ),
        (r("E=m") + "<w:r><w:t>c</w:t></w:r>", "E=mc"),
    ],
)
def test_omml_constructs_as_linear_text(content: str, linear: str) -> None:
    assert text_of(math(content)) == [linear]


@pytest.mark.parametrize(
    ("text", "atom"),
    [
        ("x", True),
        ("12", True),
        ("3.5", True),
        ("max", True),
        ("(a+b)", True),
        ("[1, 2]", True),
        ("a+b", False),
        ("2a", False),
        ("(a)+(b)", False),
        ("", True),
    ],
)
def test_what_needs_no_parentheses(text: str, atom: bool) -> None:
    assert is_atom(text) is atom


def test_display_equations_and_inline_math_in_their_paragraph() -> None:
    display = (
        "<w:p><m:oMathPara><m:oMathParaPr/>"
        f"<m:oMath>{r('y=1')}</m:oMath><m:oMath>{r('z=2')}</m:oMath></m:oMathPara></w:p>"
    )
    inline = (
        "<w:p><w:r><w:t xml:space='preserve'>Since </w:t></w:r>"
        f"<m:oMath>{r('x&gt;0')}</m:oMath><w:r><w:t>, done.</w:t></w:r></w:p>"
    )
    assert text_of(display + inline) == ["y=1 z=2", "Since x>0, done."]


def test_deepest_readable_equation_stays_within_the_recursion_limit() -> None:
    depth = 120  # each fraction nests two elements: 240 levels, under libxml2's 256
    content = r("1")
    for _ in range(depth):
        content = f"<m:f>{arg('num', r('1'))}{arg('den', content)}</m:f>"
    text = text_of(math(content))[0]
    assert text.count("/") == depth


# -------------------------------------------------------------- checkboxes


def control(checked: str | None, glyph: str = "\u2610") -> str:
    state = "" if checked is None else f'<w14:checked w14:val="{checked}"/>'
    return (
        f"<w:sdt><w:sdtPr><w14:checkbox>{state}</w14:checkbox></w:sdtPr>"
        f"<w:sdtContent><w:r><w:t>{glyph}</w:t></w:r></w:sdtContent></w:sdt>"
    )


def legacy(state: str) -> str:
    return (
        f'<w:r><w:fldChar w:fldCharType="begin"><w:ffData><w:checkBox>{state}</w:checkBox>'
        "</w:ffData></w:fldChar></w:r><w:r><w:instrText> FORMCHECKBOX </w:instrText></w:r>"
        '<w:r><w:fldChar w:fldCharType="end"/></w:r>'
    )


@pytest.mark.parametrize(
    ("box", "shown"),
    [
        (control("1", "\u2612"), "[x]"),
        (control("true", "\u2612"), "[x]"),
        (control("0", "\u2612"), "[ ]"),  # the state decides, not the glyph shown
        (control(None), "[ ]"),
        (legacy("<w:checked/>"), "[x]"),
        (legacy('<w:checked w:val="0"/><w:default w:val="1"/>'), "[ ]"),
        (legacy('<w:default w:val="1"/>'), "[x]"),
        (legacy('<w:default w:val="0"/>'), "[ ]"),
    ],
)
def test_checkboxes(box: str, shown: str) -> None:
    paragraph = f"<w:p>{box}<w:r><w:t>Agreed</w:t></w:r></w:p>"
    assert text_of(paragraph) == [f"{shown} Agreed"]


def test_other_content_controls_keep_their_text() -> None:
    sdt = (
        '<w:p><w:sdt><w:sdtPr><w:alias w:val="Date"/><w:date/></w:sdtPr>'
        "<w:sdtContent><w:r><w:t>4 March 2024</w:t></w:r></w:sdtContent></w:sdt></w:p>"
    )
    assert text_of(sdt) == ["4 March 2024"]


# ------------------------------------------------------------ hostile parts


def test_numbering_part_is_held_to_the_part_limit() -> None:
    padding = "<w:abstractNum/>" * 200
    data = docx(p("x", num=1), numbering=padding)
    limits = ExtractLimits(docx=DocxLimits(max_part_bytes=2000))
    with pytest.raises(ArchiveTooLarge, match=r"'word/numbering\.xml' expands to more than"):
        extract(data, "docx", None, limits)


def test_parts_read_share_one_running_budget() -> None:
    """What the parts really inflate to counts together, whatever the directory said."""
    info = zipfile.ZipInfo("word/styles.xml")
    info.file_size = info.compress_size = 1000
    limits = DocxLimits(max_expanded_bytes=4096)
    assert len(read_capped(io.BytesIO(b" " * 1000), info, limits, read_before=3096)) == 1000
    with pytest.raises(ArchiveTooLarge, match=r"^DOCX expands to more than 4 KiB"):
        read_capped(io.BytesIO(b" " * 1000), info, limits, read_before=3097)


def test_numbering_part_declaring_entities_is_refused() -> None:
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {chr(98 + i)} "{f"&{chr(97 + i)};" * 10}">' for i in range(8)
    )
    numbering_xml = (
        f'<?xml version="1.0"?><!DOCTYPE w:numbering [{entities}]>'
        f'<w:numbering xmlns:w="{W}"><w:abstractNum w:abstractNumId="&i;"/></w:numbering>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "word/document.xml",
            f'<w:document xmlns:w="{W}"><w:body>{p("x", num=1)}</w:body></w:document>',
        )
        archive.writestr("word/numbering.xml", numbering_xml)
    with pytest.raises(CorruptContent, match="billion laughs"):
        extract(buffer.getvalue(), "docx", None)


def test_malformed_numbering_part_is_named() -> None:
    data = docx(p("x", num=1), numbering="<w:num>")
    with pytest.raises(CorruptContent) as caught:
        extract(data, "docx", None)
    assert caught.value.reason.startswith("DOCX is corrupt: its numbering.xml is not well-formed")


# ---------------------------------------------------------------- Markdown


@pytest.mark.parametrize(
    ("source", "blocks"),
    [
        ("3. three\n1. four\n", ["3. three", "4. four"]),
        ("1) a\n1) b\n", ["1) a", "2) b"]),
        ("0. zero\n", ["0. zero"]),
        (
            "1. outer\n   1. inner\n   2. inner two\n2. next\n",
            ["1. outer", "1. inner", "2. inner two", "2. next"],
        ),
        ("5. - nested first\n   - second\n", ["5. nested first", "second"]),
        ("- a\n- b\n", ["a", "b"]),
        ("1. first paragraph\n\n   second paragraph\n", ["1. first paragraph", "second paragraph"]),
        ("2. ```\n   code\n   ```\n", ["2. code"]),
        ("1.\n2. two\n", ["2. two"]),
        ("- [x] done\n- [ ] open\n- [X] upper\n", ["[x] done", "[ ] open", "[x] upper"]),
        ("1. [X] first\n", ["1. [x] first"]),
        ("Not a list [X] here.\n", ["Not a list [X] here."]),
        ("- [X]\n", ["[x]"]),
    ],
)
def test_markdown_list_numbers_and_task_boxes(source: str, blocks: list[str]) -> None:
    assert extract_markdown(source).split("\n\n") == blocks


def test_reference_texts_end_with_one_newline() -> None:
    for case in CASES:
        path = FIXTURES / "quality" / case
        expected = path.with_name(path.name.split(".")[0] + ".expected.txt").read_bytes()
        assert expected.endswith(b"\n")
        assert not expected.endswith(b"\n\n")
