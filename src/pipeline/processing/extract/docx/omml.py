"""Office Math (OMML: ``m:oMath``, ``m:oMathPara``) as linear text.

Equations are rendered as the linear text a person types or reads aloud, close to
Word's own linear format (UnicodeMath), not as LaTeX: ``(a+b)/2``, ``x_i``,
``x^2``, ``sqrt(b^2-4ac)``, ``∑_(i=1)^n x_i``, ``(1, 0; 0, 1)``. Why not LaTeX: the
text goes to a search index and to readers, and linear text keeps the symbols the
author wrote (``∑``, ``π``, ``≤``) where LaTeX would replace them with commands
(``\\sum``, ``\\pi``, ``\\leq``) that are neither in the document nor what anyone
searches for; the linear form also reads as the equation without a renderer.

The rules: a fraction is ``num/den`` (``num¦den`` when drawn without a bar, as in a
binomial); sub- and superscripts are ``_`` and ``^``; a radical is ``sqrt(x)`` or
``root(n, x)``; an n-ary operator is its symbol with its limits (``∫`` when none is
given) followed by its body; a delimiter keeps its characters and separators; a
matrix is written row by row, cells separated by ``", "`` and rows by ``"; "``, and an
equation array line by line (``"; "``); a function is ``sin x``; accents and bars
become combining marks. An argument other than one character, a number, a word or
a bracketed group is put in parentheses, and a script is followed by a space when a
symbol follows it (``x^2 dx``), so the text stays unambiguous.

The walk recurses once per element; the parser caps nesting at 256 levels, which
keeps it well inside Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from lxml import etree

from pipeline.processing.extract.docx.xml import attribute, child, is_on, name

_DEFAULT_NARY: Final = "\u222b"  # ∫
_DEFAULT_ACCENT: Final = "\u0302"  # combining circumflex
_OVERLINE: Final = "\u0305"
_UNDERLINE: Final = "\u0332"
_OPENERS: Final = {"(": ")", "[": "]", "{": "}"}
_SCRIPTED: Final = frozenset({"sSub", "sSup", "sSubSup", "limLow", "limUpp"})
# Word run content that is not text, inside or outside math.
_SKIPPED_W: Final = frozenset({"rPr", "del", "delText", "moveFrom", "instrText", "fldData"})


def math_text(element: etree._Element) -> str:
    """The linear text of an ``m:oMath`` or ``m:oMathPara`` (its equations separated
    by a space)."""
    if name(element) == ("m", "oMathPara"):
        equations = [_render(e) for e in element if name(e) == ("m", "oMath")]
        return " ".join(equation for equation in equations if equation)
    return _render(element)


def _render(element: etree._Element) -> str:
    kind, local = name(element)
    if kind == "m":
        if local == "t":
            return element.text or ""
        handler = _HANDLERS.get(local)
        if handler is not None:
            return handler(element)
        if local.endswith("Pr"):  # m:rPr, m:fPr, m:ctrlPr...: properties, no text
            return ""
    elif kind == "w":
        if local == "t":
            return element.text or ""
        if local in _SKIPPED_W:
            return ""
    elif kind != "mc" or local == "Fallback":
        return ""
    parts: list[str] = []
    scripted = False
    for part in element:
        text = _render(part)
        # "x^2 dx", "a_n a_(n+1)": a script ends where the next symbol begins.
        if scripted and text[:1].isalnum():
            parts.append(" ")
        parts.append(text)
        scripted = name(part)[1] in _SCRIPTED if text else scripted
    return "".join(parts)


def _argument(element: etree._Element, local: str) -> str:
    """The text of the child ``m:<local>`` (``m:num``, ``m:sub``, ``m:e``...), or ""."""
    found = child(element, "m", local)
    return "" if found is None else _render(found)


def _properties(element: etree._Element) -> etree._Element | None:
    return child(element, "m", name(element)[1] + "Pr")


def _property(element: etree._Element, local: str) -> str | None:
    """The ``m:val`` of a property of ``element`` (``m:chr`` in ``m:naryPr``...)."""
    properties = _properties(element)
    found = None if properties is None else child(properties, "m", local)
    return None if found is None else attribute(found, "val")


def _flag(element: etree._Element, local: str) -> bool:
    properties = _properties(element)
    return properties is not None and is_on(child(properties, "m", local))


def is_atom(text: str) -> bool:
    """Whether ``text`` reads as one unit without parentheses: one character, a
    number, a word (``max``, ``sin``) or one bracketed group."""
    if len(text) <= 1 or text.replace(".", "", 1).isdigit() or text.isalpha():
        return True
    closer = _OPENERS.get(text[0])
    if closer is None or text[-1] != closer:
        return False
    depth = 0
    for position, character in enumerate(text):
        if character == text[0]:
            depth += 1
        elif character == closer:
            depth -= 1
            if depth == 0 and position < len(text) - 1:
                return False
    return True


def _group(text: str) -> str:
    return text if is_atom(text) else f"({text})"


def _scripts(sub: str, sup: str) -> str:
    return (f"_{_group(sub)}" if sub else "") + (f"^{_group(sup)}" if sup else "")


def _fraction(element: etree._Element) -> str:
    numerator, denominator = _argument(element, "num"), _argument(element, "den")
    if _property(element, "type") == "noBar":
        return f"{numerator}\u00a6{denominator}"
    return f"{_group(numerator)}/{_group(denominator)}"


def _subscript(element: etree._Element) -> str:
    return _group(_argument(element, "e")) + _scripts(_argument(element, "sub"), "")


def _superscript(element: etree._Element) -> str:
    return _group(_argument(element, "e")) + _scripts("", _argument(element, "sup"))


def _sub_superscript(element: etree._Element) -> str:
    scripts = _scripts(_argument(element, "sub"), _argument(element, "sup"))
    return _group(_argument(element, "e")) + scripts


def _prescript(element: etree._Element) -> str:
    scripts = _scripts(_argument(element, "sub"), _argument(element, "sup"))
    return scripts + _group(_argument(element, "e"))


def _radical(element: etree._Element) -> str:
    degree = "" if _flag(element, "degHide") else _argument(element, "deg")
    body = _argument(element, "e")
    return f"root({degree}, {body})" if degree else f"sqrt({body})"


def _nary(element: etree._Element) -> str:
    operator = _property(element, "chr") or _DEFAULT_NARY
    sub = "" if _flag(element, "subHide") else _argument(element, "sub")
    sup = "" if _flag(element, "supHide") else _argument(element, "sup")
    body = _argument(element, "e")
    return f"{operator}{_scripts(sub, sup)} {body}".rstrip()


def _delimiter(element: etree._Element) -> str:
    opening, closing = _property(element, "begChr"), _property(element, "endChr")
    separator = _property(element, "sepChr")
    parts = [_render(part) for part in element if name(part) == ("m", "e")]
    return (
        ("(" if opening is None else opening)
        + ("|" if separator is None else separator).join(parts)
        + (")" if closing is None else closing)
    )


def _matrix(element: etree._Element) -> str:
    rows = []
    for row in element:
        if name(row) == ("m", "mr"):
            rows.append(", ".join(_render(cell) for cell in row if name(cell) == ("m", "e")))
    return "; ".join(rows)


def _equation_array(element: etree._Element) -> str:
    return "; ".join(_render(line) for line in element if name(line) == ("m", "e"))


def _function(element: etree._Element) -> str:
    function, body = _argument(element, "fName"), _argument(element, "e")
    if not body or body[0] in _OPENERS:
        return function + body
    return f"{function} {body}"


def _lower_limit(element: etree._Element) -> str:
    return _group(_argument(element, "e")) + _scripts(_argument(element, "lim"), "")


def _upper_limit(element: etree._Element) -> str:
    return _group(_argument(element, "e")) + _scripts("", _argument(element, "lim"))


def _accent(element: etree._Element) -> str:
    return _argument(element, "e") + (_property(element, "chr") or _DEFAULT_ACCENT)


def _bar(element: etree._Element) -> str:
    mark = _OVERLINE if _property(element, "pos") == "top" else _UNDERLINE
    return _argument(element, "e") + mark


def _phantom(element: etree._Element) -> str:
    properties = _properties(element)
    show = None if properties is None else child(properties, "m", "show")
    return "" if show is not None and not is_on(show) else _argument(element, "e")


_HANDLERS: Final[dict[str, Callable[[etree._Element], str]]] = {
    "f": _fraction,
    "sSub": _subscript,
    "sSup": _superscript,
    "sSubSup": _sub_superscript,
    "sPre": _prescript,
    "rad": _radical,
    "nary": _nary,
    "d": _delimiter,
    "m": _matrix,
    "eqArr": _equation_array,
    "func": _function,
    "limLow": _lower_limit,
    "limUpp": _upper_limit,
    "acc": _accent,
    "bar": _bar,
    "phant": _phantom,
}
