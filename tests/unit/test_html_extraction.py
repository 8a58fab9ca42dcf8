"""HTML main content: density, noscript, alt text, list numbers, boilerplate blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.processing.extract.html import extract_html, html_blocks
from pipeline.processing.extract.html.parse import drop_noscript

QUALITY = Path(__file__).parents[1] / "fixtures" / "quality" / "html"
# This helper's cases (others' sit beside them, scored by test_extraction_quality).
CASES = [
    QUALITY / f"{name}.html"
    for name in (
        "blog_comments_newsletter", "docs_sidebar_toc", "help_article_feedback",
        "legacy_table_layout", "magazine_obfuscated_classes", "news_teaser_cards",
        "noscript_trap", "press_release_sidebar", "recipe_alt_text_steps",
    )
]  # fmt: skip
PROSE = (
    "The committee met on Tuesday and agreed, after a long debate, that the new "
    "reading room will open in spring with longer hours for students."
)
OTHER = (
    "Visitors can borrow up to twelve books at a time, and the loan period is "
    "three weeks, renewable twice online or at the desk."
)


def _page(body: str) -> str:
    return f"<!DOCTYPE html><html><head><title>T</title></head><body>{body}</body></html>"


def test_the_hard_html_cases_come_out_as_their_reference_text() -> None:
    for case in CASES:
        expected = case.with_suffix(".expected.txt").read_text(encoding="utf-8").strip()
        assert extract_html(case.read_bytes(), "utf-8") == expected, case.name


def test_teaser_cards_in_articles_do_not_hide_a_story_in_divs() -> None:
    cards = "".join(
        f'<article class="card"><h3><a href="/{n}">Teaser headline number {n}</a></h3>'
        f"<p>A short summary of teaser {n}, written to make you click.</p></article>"
        for n in range(3)
    )
    story = (
        f'<div class="x1"><h1>Story</h1><div class="x2"><p>{PROSE}</p><p>{OTHER}</p></div></div>'
    )
    assert html_blocks(_page(f"<main>{cards}{story}</main>")) == ["Story", PROSE, OTHER]


def test_headline_before_the_content_is_kept() -> None:
    markup = _page(f'<div><h1>Headline</h1><a href="/a">Ana</a></div><div><p>{PROSE}</p></div>')
    assert html_blocks(markup) == ["Headline", PROSE]


@pytest.mark.parametrize(
    "trap",
    [
        "<noscript><div>Enable JavaScript",
        '<noscript><iframe src="https://example.invalid/ns">',
        '<noscript><div style="display:none"><img src="x.gif">',
    ],
)
def test_an_unclosed_element_in_noscript_cannot_swallow_the_page(trap: str) -> None:
    markup = _page(f"{trap}</noscript><div><h1>Title</h1><p>{PROSE}</p></div>")
    assert html_blocks(markup) == ["Title", PROSE]


def test_noscript_is_cut_out_up_to_its_end_tag() -> None:
    assert drop_noscript("a<NOSCRIPT x=1>b<noscript>c</noscript >d") == "ad"
    assert drop_noscript("a</noscript>b") == "ab"
    # A start tag that never closes goes alone: what follows is kept.
    assert drop_noscript("a<noscript>b<p>c") == "ab<p>c"


def test_image_alt_text_stands_where_the_image_is() -> None:
    markup = _page(
        '<figure><img src="a.jpg" alt="A red kite over the hill"><figcaption>Caption.</figcaption>'
        '</figure><p>Before <img src="b.png" alt="icon"> after.<img src="s.gif" alt=""></p>'
    )
    assert html_blocks(markup) == ["A red kite over the hill", "Caption.", "Before icon after."]


@pytest.mark.parametrize(
    ("ol", "expected"),
    [
        ("<ol><li>a</li><li>b</li></ol>", ["1. a", "2. b"]),
        ('<ol start="4"><li>a</li><li>b</li></ol>', ["4. a", "5. b"]),
        ('<ol><li>a</li><li value="10">b</li><li>c</li></ol>', ["1. a", "10. b", "11. c"]),
        ("<ol reversed><li>a</li><li>b</li><li>c</li></ol>", ["3. a", "2. b", "1. c"]),
        ('<ol type="a"><li>a</li><li>b</li></ol>', ["a. a", "b. b"]),
        ('<ol type="I" start="3"><li>a</li><li>b</li></ol>', ["III. a", "IV. b"]),
        ("<ul><li>a</li><li>b</li></ul>", ["a", "b"]),
        ("<ol><li>a<ol><li>x</li></ol></li><li>b</li></ol>", ["1. a", "1. x", "2. b"]),
    ],
)
def test_ordered_lists_keep_their_numbers(ol: str, expected: list[str]) -> None:
    assert html_blocks(ol) == expected


@pytest.mark.parametrize(
    "boilerplate",
    [
        '<div id="comments" class="comments-area"><p>Great post, I learned a lot from it, '
        "thanks for writing it all down so clearly.</p></div>",
        '<div class="newsletterBox"><p>Get the best stories every week, straight to you.</p></div>',
        '<section class="related-posts"><p>Also read: our guide to the libraries.</p></section>',
        '<div class="post-tags">Tags: library, students, reading</div>',
        '<div class="share-bar">Share this story with your friends and family.</div>',
        '<div class="cookie-consent"><p>We use cookies to improve this site.</p></div>',
        '<div aria-label="Share this article"><p>Send it to a friend, by mail.</p></div>',
    ],
)
def test_blocks_named_as_boilerplate_are_dropped(boilerplate: str) -> None:
    markup = _page(f"<article><h1>Title</h1><p>{PROSE}</p>{boilerplate}<p>{OTHER}</p></article>")
    assert html_blocks(markup) == ["Title", PROSE, OTHER]


@pytest.mark.parametrize(
    "boilerplate",
    [
        # related posts, a tag cloud, a share bar, a byline of links: unknown class names
        '<div class="q1"><h3>More</h3><a href="/1">One story</a> <a href="/2">Another</a></div>',
        '<div class="q2"><a href="/t/a">rivers</a>, <a href="/t/b">climate</a></div>',
        '<div class="q3"><a href="#">Facebook</a> <a href="#">Email</a></div>',
        '<div class="q4"><a href="/people/ana">Ana Ruiz</a> · <a href="/s">Science</a></div>',
        # a newsletter box: a form with little text
        '<div class="q5"><p>Enjoyed this? Get our letter.</p><input type="email"></div>',
        "<form><p>Your email will not be published.</p><input name=c></form>",
    ],
)
def test_boilerplate_blocks_are_found_by_density_whatever_their_names(boilerplate: str) -> None:
    markup = _page(f'<div class="c9"><h1>Title</h1><p>{PROSE}</p>{boilerplate}<p>{OTHER}</p></div>')
    assert html_blocks(markup) == ["Title", PROSE, OTHER]


@pytest.mark.parametrize(
    "reference",
    [
        # API references: the parameters, typed by links to the types' pages
        '<ul><li><code>delay</code> <a href="/t#n" class="type">&lt;number&gt;</a> | '
        '<a href="/t#u" class="type">&lt;undefined&gt;</a></li></ul>',
        '<ul><li>Returns: <a href="/t#b" class="type">&lt;boolean&gt;</a></li></ul>',
        '<div class="q6"><a href="/t#s">&lt;string&gt;</a></div>',
        # code outside the links marks technical content
        '<ul><li><a href="/api/read"><code>read()</code></a> and <kbd>Ctrl+R</kbd></li>'
        '<li><a href="/api/write">write</a></li></ul>',
    ],
)
def test_type_links_and_code_in_the_content_are_not_link_lists(reference: str) -> None:
    """A link-heavy block is boilerplate only with two links, or one a story's length."""
    markup = _page(f'<div class="c9"><h1>Title</h1><p>{PROSE}</p>{reference}<p>{OTHER}</p></div>')
    blocks = html_blocks(markup)
    assert blocks[0:2] == ["Title", PROSE]
    assert blocks[-1] == OTHER
    assert len(blocks) > 3


def test_a_document_in_sections_is_read_whole_when_one_section_holds_most_of_it() -> None:
    # 75% of the prose in one section: more than the body's share, and the other section
    # adds more than the widening's slack.
    long = "".join(f"<p>{PROSE} ({n})</p>" for n in range(9))
    short = "".join(f"<p>{OTHER} ({n})</p>" for n in range(3))
    markup = _page(
        '<nav><a href="/a">Home</a> <a href="/b">Docs</a> <a href="/c">Blog</a></nav>'
        f'<div id="doc"><section><h2>Options</h2>{long}</section>'
        f"<section><h2>Environment</h2>{short}</section></div>"
    )
    blocks = html_blocks(markup)
    assert blocks[0] == "Options"
    assert blocks[-4:] == ["Environment"] + [f"{OTHER} ({n})" for n in range(3)]
    assert "Home" not in " ".join(blocks)


def test_a_single_related_story_link_is_still_dropped() -> None:
    story = (
        '<div class="q7">Read more: <a href="/s/1">Why cross-border tickets cost so much</a></div>'
    )
    markup = _page(f'<div class="c9"><h1>Title</h1><p>{PROSE}</p>{story}<p>{OTHER}</p></div>')
    assert html_blocks(markup) == ["Title", PROSE, OTHER]


def test_names_only_vote_content_wins_and_tag_classes_are_not_tag_lists() -> None:
    markup = _page(
        f'<div class="site has-sidebar"><article class="post tag-rivers">'
        f'<div class="entry-content comments-open"><p>{PROSE}</p></div>'
        f'<div class="comments"><p>{OTHER}</p></div></article></div>'
    )
    assert html_blocks(markup) == [PROSE]


def test_a_page_inside_one_form_is_read() -> None:
    markup = _page(
        f'<form id="aspnetForm"><div id="content"><p>{PROSE}</p><p>{OTHER}</p></div></form>'
    )
    assert html_blocks(markup) == [PROSE, OTHER]


def test_sections_of_the_content_around_its_body_are_kept() -> None:
    markup = _page(
        f"<div><h2>Intro</h2><p>{PROSE}</p></div><div><h2>More</h2><p>{OTHER}</p></div>"
        "<p>Short line.</p>"
    )
    assert html_blocks(markup) == ["Intro", PROSE, "More", OTHER, "Short line."]


def test_a_page_without_prose_keeps_its_main_element() -> None:
    markup = _page('<div>chrome</div><main><ul><li><a href="/a">A</a></li></ul></main>')
    assert html_blocks(markup) == ["A"]


def test_a_deep_page_with_many_paragraphs_is_measured_in_one_pass() -> None:
    markup = _page("<div>" * 2000 + f"<h1>Title</h1>{f'<p>{PROSE}</p>' * 20_000}")
    blocks = html_blocks(markup)
    assert blocks[0] == "Title"
    assert blocks[1:] == [PROSE] * 20_000


def test_many_link_lists_beside_the_story_are_judged_in_one_pass() -> None:
    lists = '<div class="x"><a href="/a">a</a> <a href="/b">b</a></div>' * 100_000
    markup = _page(f"<div><p>{PROSE}</p>{lists}<p>{OTHER}</p></div>")
    assert html_blocks(markup) == [PROSE, OTHER]
