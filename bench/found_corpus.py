"""Build a corpus of real-world documents found on this machine, each with a reference text.

    uv sync --group corpus --group markitdown     # pandoc, Playwright; MarkItDown beside us
    uv run python bench/found_corpus.py [--out .pipeline/corpus]
    uv run python bench/extraction.py --corpus .pipeline/corpus [--worst 3]

Nobody on this project wrote these documents; they ship with Debian, CPython, Node.js
and the Rust toolchain. What a machine lacks is skipped and said so. The layout is the
quality fixture set's (``<out>/<type>/<case>.<ext>`` + ``<case>.expected.txt``), and
``<out>/SOURCES.md`` names where each case came from and how its reference was made:

- **text**: CPython's ``test/cjkencodings`` (Big5, GB2312, GBK, GB18030, HZ, EUC-JP,
  Shift_JIS, ISO-2022-JP/KR, EUC-KR, CP949, Johab, ...), each beside its UTF-8 twin as
  the reference; and Debian ``copyright`` files, referenced by themselves.
- **markdown**: Node.js's API docs (``/usr/share/doc/nodejs/api/*.md``) and READMEs;
  reference: pandoc's reading of the same file, rendered as plain text.
- **html**: Node.js's API pages, the Rust books (mdBook) and a DocBook page, as shipped,
  with their navigation, tables of contents and footers. Reference: the text of the
  page's content element (``#apicontent``, ``<main>``), which the site's own markup names,
  so the score measures main-content extraction.
- **pdf**: pages of those sites printed by Chromium (Skia's PDF writer), whose
  reference is the page's rendered text in print media (``innerText``, what the PDF
  shows), and Debian's ``shared-mime-info-spec.pdf`` (DocBook through FOP), referenced by
  its HTML edition's text; plus "scanned" cases: a printed page rasterised at 150 dpi
  into an image-only PDF, referenced by its text layer.
- **docx**: pandoc's DOCX writer on Node.js Markdown and mdBook chapters (lists with
  ``numbering.xml``, tables, code); reference: pandoc's plain text of the same source.
- **image**: the same rasterised pages as PNG.

The references are other tools' readings, so a perfect extractor does not score 1.0
(a table's header, a list marker, a page number differ); both extractors are scored
against the same ones.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
RUST_DOCS: Final = sorted(Path.home().glob(".rustup/toolchains/*/share/doc/rust/html"))
NODE_DOCS: Final = Path("/usr/share/doc/nodejs/api")
MDBOOKS: Final = ("book", "nomicon", "reference", "rust-by-example", "cargo", "edition-guide")
MAX_BYTES: Final = 1_500_000
_BLOCKS: Final = frozenset(
    [
        "p",
        "div",
        "section",
        "article",
        "main",
        "header",
        "footer",
        "nav",
        "aside",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "li",
        "dl",
        "dt",
        "dd",
        "table",
        "thead",
        "tbody",
        "tr",
        "td",
        "th",
        "pre",
        "blockquote",
        "figure",
        "figcaption",
        "br",
        "hr",
        "details",
        "summary",
    ]
)


@dataclass(frozen=True)
class Case:
    """One corpus document: where it came from, its type, and how its reference was made."""

    kind: str
    name: str
    source: str
    reference_from: str


def spread(items: Sequence[Path], count: int) -> list[Path]:
    """``count`` items evenly spaced through ``items`` (deterministic, all if fewer)."""
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def slug(path: Path, *parts: str) -> str:
    stem = "-".join((*parts, path.stem))
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-").lower()


class Corpus:
    """Writes cases into ``out`` and remembers their sources for SOURCES.md."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.cases: list[Case] = []
        self.skipped: list[str] = []

    def add(self, kind: str, name: str, ext: str, data: bytes, reference: str, case: Case) -> None:
        folder = self.out / kind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.{ext}").write_bytes(data)
        (folder / f"{name}.expected.txt").write_text(reference.strip() + "\n", "utf-8")
        self.cases.append(case)

    def write_sources(self) -> None:
        lines = [
            "# Where each case of this corpus came from",
            "",
            "Built by `bench/found_corpus.py`; see its docstring.",
            "",
            "| type | case | source | reference |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c.kind} | {c.name} | `{c.source}` | {c.reference_from} |" for c in self.cases
        ]
        if self.skipped:
            lines += ["", "Skipped (not on this machine):", ""]
            lines += [f"- {reason}" for reason in self.skipped]
        (self.out / "SOURCES.md").write_text("\n".join(lines) + "\n", "utf-8")


# -- references ------------------------------------------------------------------------


def element_text(path: Path, selector: str) -> str:
    """The text of the page's content element, block elements on lines of their own."""
    import lxml.html

    tree = lxml.html.fromstring(path.read_bytes())
    found = tree.xpath(selector)
    if not found:
        raise LookupError(f"{path}: no {selector}")
    root = found[0]
    # Scripts and the page's controls (a code block's "copy" button) are not its text.
    for dropped in root.xpath(
        ".//script|.//style|.//noscript|.//template|.//button|.//input|.//select"
    ):
        dropped.drop_tree()
    parts: list[str] = []

    def walk(node: lxml.html.HtmlElement) -> None:
        block = isinstance(node.tag, str) and node.tag in _BLOCKS
        if block:
            parts.append("\n")
        if node.text and isinstance(node.tag, str):
            parts.append(node.text)
        for child in node:
            walk(child)
            if child.tail:
                parts.append(child.tail)
        if block:
            parts.append("\n")

    walk(root)
    return re.sub(r"\n\s*\n+", "\n\n", "".join(parts))


def pandoc_plain(source: Path, from_format: str) -> str:
    import pypandoc

    text: str = pypandoc.convert_file(
        str(source), "plain", format=from_format, extra_args=["--wrap=none"]
    )
    return text


def markdown_reference(source: Path) -> str:
    """pandoc's reading of a Markdown file, as plain text.

    Through HTML, because pandoc's plain writer drops raw HTML (Node.js's docs hold
    tables in it); footnotes off, because pandoc repeats a note's text at every
    reference to it.
    """
    import pypandoc

    html: str = pypandoc.convert_file(str(source), "html", format="gfm-footnotes")
    text: str = pypandoc.convert_text(html, "plain", format="html", extra_args=["--wrap=none"])
    return text


# -- sources -----------------------------------------------------------------------------


def cjk_dirs() -> list[Path]:
    places = [
        (Path(sys.base_prefix), "lib/python3*/test/cjkencodings"),
        (Path("/usr/lib"), "python3*/test/cjkencodings"),
        (Path.home(), ".pyenv/versions/3*/lib/python3*/test/cjkencodings"),
    ]
    return [path for root, pattern in places for path in sorted(root.glob(pattern))]


def text_cases(corpus: Corpus) -> None:
    folders = cjk_dirs()
    if not folders:
        corpus.skipped.append("CPython's test/cjkencodings (install a Python with its test suite)")
    else:
        folder = folders[-1]
        for twin in sorted(folder.glob("*-utf8.txt")):
            encoded = twin.with_name(twin.name.replace("-utf8", ""))
            name = "cjk-" + encoded.stem.replace("_", "-")
            corpus.add(
                "text",
                name,
                "txt",
                encoded.read_bytes(),
                twin.read_text("utf-8"),
                Case("text", name, str(encoded), f"its UTF-8 twin `{twin.name}`"),
            )
    copyrights = sorted(Path("/usr/share/doc").glob("*/copyright"))
    for path in spread([p for p in copyrights if 2_000 < p.stat().st_size < MAX_BYTES], 25):
        name = slug(path.parent, "copyright")
        data = path.read_bytes()
        try:
            reference = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        corpus.add("text", name, "txt", data, reference, Case("text", name, str(path), "itself"))


def markdown_sources() -> list[Path]:
    node = sorted(NODE_DOCS.glob("*.md")) if NODE_DOCS.is_dir() else []
    node = [p for p in node if 3_000 < p.stat().st_size < MAX_BYTES]
    readmes = sorted(Path("/usr/share/doc").glob("*/README.md"))
    readmes += sorted(Path.home().glob(".pyenv/*.md"))
    for docs in RUST_DOCS[:1]:
        readmes += sorted(docs.parent.glob("*/README.md"))
    return spread(node, 24) + [p for p in readmes if 1_000 < p.stat().st_size < MAX_BYTES][:12]


def markdown_cases(corpus: Corpus) -> None:
    sources = markdown_sources()
    if not sources:
        corpus.skipped.append("Markdown: no Node.js docs or READMEs")
    for path in sources:
        name = slug(path, path.parent.name)
        reference = markdown_reference(path)
        corpus.add(
            "markdown",
            name,
            "md",
            path.read_bytes(),
            reference,
            Case("markdown", name, str(path), "pandoc: `-f gfm-footnotes -t html`, then plain"),
        )


@dataclass(frozen=True)
class Page:
    path: Path
    selector: str
    site: str


def html_pages() -> list[Page]:
    pages: list[Page] = []
    if NODE_DOCS.is_dir():
        node = [
            p
            for p in sorted(NODE_DOCS.glob("*.html"))
            if p.name not in {"all.html", "index.html"} and 5_000 < p.stat().st_size < MAX_BYTES
        ]
        pages += [Page(p, "//*[@id='apicontent']", "node") for p in spread(node, 20)]
    for docs in RUST_DOCS[:1]:
        for book in MDBOOKS:
            chapters = [
                p
                for p in sorted((docs / book).rglob("*.html"))
                if p.name not in {"print.html", "toc.html", "404.html", "index.html"}
                and 4_000 < p.stat().st_size < MAX_BYTES
                and b"<main>" in p.read_bytes()
            ]
            pages += [Page(p, "//main", book) for p in spread(chapters, 7)]
    return pages


def html_cases(corpus: Corpus, pages: list[Page]) -> None:
    if not pages:
        corpus.skipped.append("HTML: no Node.js docs or Rust books")
    for page in pages:
        name = slug(page.path, page.site)
        try:
            reference = element_text(page.path, page.selector)
        except LookupError:
            continue
        corpus.add(
            "html",
            name,
            "html",
            page.path.read_bytes(),
            reference,
            Case("html", name, str(page.path), f"text of `{page.selector}`"),
        )
    spec = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.html")
    if spec.is_file():
        name = "docbook-shared-mime-info-spec"
        reference = element_text(spec, "//body")
        corpus.add(
            "html",
            name,
            "html",
            spec.read_bytes(),
            reference,
            Case("html", name, str(spec), "text of `body` (a single-page spec)"),
        )


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def printed(pages: list[Page]) -> Iterator[tuple[Page, bytes, str]]:
    """Each page printed to PDF by Chromium, with its rendered text in print media."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as runner:
        browser = runner.chromium.launch(
            executable_path=chromium(), args=["--headless", "--no-sandbox"]
        )
        page = browser.new_page()
        page.emulate_media(media="print")
        for item in pages:
            page.goto(item.path.as_uri(), wait_until="load")
            text: str = page.inner_text("body")
            data = page.pdf(format="A4", print_background=False)
            yield item, data, text
        browser.close()


def first_page(pdf: bytes, dpi: int) -> tuple[bytes, str]:
    """The first page of ``pdf`` as a PNG at ``dpi``, and that page's text layer."""
    import pypdfium2

    document = pypdfium2.PdfDocument(pdf)
    page = document[0]
    text = page.get_textpage().get_text_range()
    image = page.render(scale=dpi / 72).to_pil().convert("L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), text


def image_only_pdf(png: bytes, dpi: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buffer, format="PDF", resolution=dpi)
    return buffer.getvalue()


def pdf_and_image_cases(corpus: Corpus, pages: list[Page]) -> None:
    if chromium() is None:
        corpus.skipped.append("PDF: no Chromium (apt-get install -y chromium)")
        return
    chosen = [p for p in pages if p.site == "node"][::4] + [p for p in pages if p.site != "node"][
        ::2
    ]
    for index, (page, data, text) in enumerate(printed(chosen)):
        name = slug(page.path, "chromium", page.site)
        corpus.add(
            "pdf",
            name,
            "pdf",
            data,
            text,
            Case("pdf", name, str(page.path), "Chromium's `innerText` of the page in print media"),
        )
        if index % 4 == 0:
            png, layer = first_page(data, dpi=150)
            scanned = f"scanned-{name}"
            source = f"page 1 of {name}.pdf at 150 dpi"
            corpus.add(
                "pdf",
                scanned,
                "pdf",
                image_only_pdf(png, 150),
                layer,
                Case("pdf", scanned, source, "that page's text layer"),
            )
            corpus.add(
                "image", scanned, "png", png, layer, Case("image", scanned, source, "the same")
            )
    spec = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
    html = spec.with_suffix(".html")
    if spec.is_file() and html.is_file():
        name = "fop-shared-mime-info-spec"
        corpus.add(
            "pdf",
            name,
            "pdf",
            spec.read_bytes(),
            element_text(html, "//body"),
            Case("pdf", name, str(spec), "the text of its HTML edition's `body`"),
        )


def docx_cases(corpus: Corpus, pages: list[Page]) -> None:
    import pypandoc

    sources: list[tuple[Path, str, str]] = [(p, "gfm", "node") for p in markdown_sources()[:16:2]]
    with tempfile.TemporaryDirectory() as scratch:
        for page in [p for p in pages if p.site != "node"][1::3]:
            fragment = Path(scratch) / f"{slug(page.path, page.site)}.html"
            fragment.write_text(
                "<html><body>" + _outer_html(page.path, page.selector) + "</body></html>", "utf-8"
            )
            sources.append((fragment, "html", page.site))
        for source, from_format, site in sources:
            name = slug(source, "pandoc") if site == "node" else source.stem
            target = Path(scratch) / f"{name}.docx"
            pypandoc.convert_file(str(source), "docx", format=from_format, outputfile=str(target))
            corpus.add(
                "docx",
                name,
                "docx",
                target.read_bytes(),
                pandoc_plain(source, from_format),
                Case("docx", name, str(source), "pandoc's plain text of the same source"),
            )


def _outer_html(path: Path, selector: str) -> str:
    import lxml.html

    tree = lxml.html.fromstring(path.read_bytes())
    element = tree.xpath(selector)[0]
    html: str = lxml.html.tostring(element, encoding="unicode")
    return html


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".pipeline" / "corpus")
    options = parser.parse_args()
    if options.out.exists():
        shutil.rmtree(options.out)
    corpus = Corpus(options.out)
    pages = html_pages()
    text_cases(corpus)
    markdown_cases(corpus)
    html_cases(corpus, pages)
    pdf_and_image_cases(corpus, pages)
    docx_cases(corpus, pages)
    corpus.write_sources()
    counts: dict[str, int] = {}
    for case in corpus.cases:
        counts[case.kind] = counts.get(case.kind, 0) + 1
    print(f"{len(corpus.cases)} cases in {options.out}: {counts}")
    for reason in corpus.skipped:
        print(f"skipped: {reason}")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as error:
        sys.exit(f"found_corpus: {error}")
