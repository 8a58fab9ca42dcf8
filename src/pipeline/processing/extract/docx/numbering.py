"""Automatic numbering: the "1.2.", "(a)", "iv." Word draws before list items and headings.

The numbers are not in the text: a paragraph says which list it belongs to
(``w:numPr``: a ``w:numId`` and a level ``w:ilvl``, directly or through its style,
which is how numbered headings are usually made), and ``word/numbering.xml`` says
how each list counts. There, a ``w:num`` instance points to a ``w:abstractNum``
definition, which describes up to nine levels (``w:lvl``): the start value, the
number format (``w:numFmt``) and the label template (``w:lvlText``, ``"%1.%2."``:
``%n`` is the current number of level n). An instance may override the start of
some levels (``w:lvlOverride/w:startOverride``: "restart numbering") or a whole
level, and a definition may borrow the levels of a numbering style
(``w:numStyleLink``).

Counting follows Word: instances of one definition share its counters (a list
continues across them), an instance with a start override restarts those levels
the first time it is used, and using a level resets the deeper levels (unless
their ``w:lvlRestart`` says otherwise). Every numbered paragraph advances the
counter, including an empty one (Word draws its number too).

Formats rendered: decimal, decimalZero, upperLetter, lowerLetter, upperRoman,
lowerRoman, ordinal, none, Word 2010's zero-padded "001, 002, 003" custom format,
and bullet (always drawn as "•": bullet characters are usually symbol-font code
points that mean nothing as text). Any other format (national scripts, spelled-out
numbers) falls back to decimal, which keeps the count right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from lxml import etree

from pipeline.processing.extract.docx.xml import attribute, child, is_on, name, value
from pipeline.processing.extract.normalize import clean_block

_LEVELS: Final = 9
_BULLET: Final = "\u2022"
_PLACEHOLDERS: Final = tuple(f"%{level + 1}" for level in range(_LEVELS))
_ROMAN: Final = (
    (1000, "m"),
    (900, "cm"),
    (500, "d"),
    (400, "cd"),
    (100, "c"),
    (90, "xc"),
    (50, "l"),
    (40, "xl"),
    (10, "x"),
    (9, "ix"),
    (5, "v"),
    (4, "iv"),
    (1, "i"),
)
_MAX_ROMAN: Final = 3999
_KNOWN_FORMATS: Final = frozenset(
    {
        "decimal",
        "decimalZero",
        "upperLetter",
        "lowerLetter",
        "upperRoman",
        "lowerRoman",
        "ordinal",
        "none",
        "bullet",
    }
)
# A style's basedOn chain longer than this is a loop (Word allows far fewer levels).
_MAX_STYLE_DEPTH: Final = 32


@dataclass(frozen=True, slots=True)
class Level:
    """One level of a list definition (``w:lvl``)."""

    start: int = 0
    format: str = "decimal"
    text: str = ""
    restart_after: int | None = None
    """``w:lvlRestart``: restart when a level up to this one (1-based) is used; 0 never;
    ``None``: when any higher level is used."""
    legal: bool = False
    """``w:isLgl``: every level's number drawn in decimal ("1.1" under "I.")."""
    style: str | None = None
    """``w:pStyle``: the paragraph style that puts a paragraph on this level."""


@dataclass(frozen=True, slots=True)
class Instance:
    """A ``w:num``: a definition, and what this instance overrides."""

    definition: str
    start_overrides: dict[int, int] = field(default_factory=dict)
    level_overrides: dict[int, Level] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StyleNumbering:
    """What a paragraph style (through its ``basedOn`` chain) says about numbering."""

    num_id: str | None
    level: int | None


def format_number(number: int, kind: str) -> str:
    """``number`` in a ``w:numFmt`` format (unknown formats and impossible values:
    decimal; ``"zeroN"``: decimal zero-padded to N digits)."""
    if kind == "none":
        return ""
    if kind.startswith("zero") and kind[4:].isdigit():
        return str(number).zfill(int(kind[4:]))
    if kind == "decimalZero":
        return str(number).zfill(2)
    if kind in ("upperLetter", "lowerLetter") and number > 0:
        letter = chr(ord("a") + (number - 1) % 26) * ((number - 1) // 26 + 1)
        return letter.upper() if kind == "upperLetter" else letter
    if kind in ("upperRoman", "lowerRoman") and 0 < number <= _MAX_ROMAN:
        roman = _roman(number)
        return roman.upper() if kind == "upperRoman" else roman
    if kind == "ordinal":
        return f"{number}{_ordinal_suffix(number)}"
    return str(number)


def _roman(number: int) -> str:
    digits: list[str] = []
    for amount, letters in _ROMAN:
        count, number = divmod(number, amount)
        digits.append(letters * count)
    return "".join(digits)


def _ordinal_suffix(number: int) -> str:
    if 10 <= number % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")


def _int(text: str | None, default: int) -> int:
    try:
        return default if text is None else int(text)
    except ValueError:
        return default


def _level_index(element: etree._Element) -> int | None:
    index = _int(attribute(element, "ilvl"), -1)
    return index if 0 <= index < _LEVELS else None


def _format(lvl: etree._Element) -> str:
    """The level's format: its ``w:numFmt``, or the one inside markup compatibility."""
    direct = child(lvl, "w", "numFmt")
    candidates = [] if direct is None else [direct]
    for wrapper in lvl:
        if name(wrapper) == ("mc", "AlternateContent"):
            candidates.extend(
                fmt for branch in wrapper for fmt in branch if name(fmt) == ("w", "numFmt")
            )
    for candidate in candidates:
        kind = attribute(candidate, "val") or "decimal"
        if kind == "custom":
            # "001, 002, 003, ...": zero-padded decimal; other custom formats: the next one.
            first = (attribute(candidate, "format") or "").split(",")[0].strip()
            if first.isdigit():
                return f"zero{len(first)}"
            continue
        return kind if kind in _KNOWN_FORMATS else "decimal"
    return "decimal"


def parse_level(lvl: etree._Element) -> Level:
    restart = value(lvl, "w", "lvlRestart")
    return Level(
        start=_int(value(lvl, "w", "start"), 0),
        format=_format(lvl),
        text=clean_block(value(lvl, "w", "lvlText") or ""),
        restart_after=None if restart is None else _int(restart, 0),
        legal=is_on(child(lvl, "w", "isLgl")),
        style=value(lvl, "w", "pStyle"),
    )


def _levels(element: etree._Element) -> dict[int, Level]:
    levels: dict[int, Level] = {}
    for lvl in element:
        if name(lvl) == ("w", "lvl") and (index := _level_index(lvl)) is not None:
            levels[index] = parse_level(lvl)
    return levels


def _instance(num: etree._Element) -> Instance | None:
    definition = value(num, "w", "abstractNumId")
    if definition is None:
        return None
    starts: dict[int, int] = {}
    overrides: dict[int, Level] = {}
    for override in num:
        if name(override) != ("w", "lvlOverride") or (index := _level_index(override)) is None:
            continue
        start = value(override, "w", "startOverride")
        if start is not None:
            starts[index] = _int(start, 0)
        lvl = child(override, "w", "lvl")
        if lvl is not None:
            overrides[index] = parse_level(lvl)
    return Instance(definition, starts, overrides)


def _style_numbering(styles: etree._Element | None) -> tuple[dict[str, StyleNumbering], str | None]:
    """Each style's numbering with its ``basedOn`` chain resolved, and the default
    paragraph style."""
    own: dict[str, tuple[str | None, str | None, int | None]] = {}
    default: str | None = None
    for style in () if styles is None else styles:
        if name(style) != ("w", "style") or (style_id := attribute(style, "styleId")) is None:
            continue
        if attribute(style, "type") in (None, "paragraph") and _is_default(style):
            default = style_id
        properties = child(style, "w", "pPr")
        num_pr = None if properties is None else child(properties, "w", "numPr")
        ilvl = None if num_pr is None else value(num_pr, "w", "ilvl")
        own[style_id] = (
            value(style, "w", "basedOn"),
            None if num_pr is None else value(num_pr, "w", "numId"),
            None if ilvl is None else _int(ilvl, 0),
        )
    resolved: dict[str, StyleNumbering] = {}
    for style_id in own:
        num_id: str | None = None
        level: int | None = None
        current: str | None = style_id
        for _ in range(_MAX_STYLE_DEPTH):
            if current is None or current not in own:
                break
            based_on, own_num, own_level = own[current]
            num_id = own_num if num_id is None else num_id
            level = own_level if level is None else level
            current = based_on
        resolved[style_id] = StyleNumbering(num_id, level)
    return resolved, default


def _is_default(style: etree._Element) -> bool:
    return (attribute(style, "default") or "").lower() in ("1", "true", "on")


def _paragraph_numbering(
    properties: etree._Element | None,
) -> tuple[str | None, str | None, str | None]:
    """The style, ``w:numId`` and ``w:ilvl`` a paragraph's ``w:pPr`` sets (one pass)."""
    style = num_id = level = None
    for setting in () if properties is None else properties:
        kind, local = name(setting)
        if kind != "w":
            continue
        if local == "pStyle":
            style = attribute(setting, "val")
        elif local == "numPr":
            for part in setting:
                part_name = name(part)
                if part_name == ("w", "numId"):
                    num_id = attribute(part, "val")
                elif part_name == ("w", "ilvl"):
                    level = attribute(part, "val")
    return style, num_id, level


class Numbering:
    """The numbering of one document, counted paragraph by paragraph in reading order."""

    def __init__(self, numbering: etree._Element | None, styles: etree._Element | None) -> None:
        self._styles, self._default_style = _style_numbering(styles)
        definitions: dict[str, dict[int, Level]] = {}
        style_links: dict[str, str] = {}
        self._instances: dict[str, Instance] = {}
        for element in () if numbering is None else numbering:
            kind = name(element)
            if kind == ("w", "abstractNum") and (key := attribute(element, "abstractNumId")):
                definitions[key] = _levels(element)
                if (link := value(element, "w", "numStyleLink")) is not None:
                    style_links[key] = link
            elif (
                kind == ("w", "num")
                and (num_id := attribute(element, "numId"))
                and (instance := _instance(element)) is not None
            ):
                self._instances[num_id] = instance
        # A definition borrowing a numbering style's levels is that list: one count.
        self._lists = {key: self._linked(key, style_links) for key in definitions}
        self._definitions = {
            key: definitions.get(self._lists[key], levels) for key, levels in definitions.items()
        }
        self._levels: dict[str, dict[int, Level]] = {}  # per instance, overrides applied
        self._counters: dict[str, list[int | None]] = {}
        self._used: set[str] = set()

    def _linked(self, key: str, style_links: dict[str, str]) -> str:
        """The definition whose levels ``key`` borrows through a numbering style."""
        style = self._styles.get(style_links.get(key, ""))
        instance = None if style is None else self._instances.get(style.num_id or "")
        return key if instance is None else instance.definition

    def label(self, properties: etree._Element | None) -> str | None:
        """The number drawn before the paragraph with these ``w:pPr`` (the counters
        advance), or ``None`` when it is not numbered."""
        style, num_id, direct_level = _paragraph_numbering(properties)
        style = style or self._default_style
        inherited = self._styles.get(style or "")
        if num_id is None and inherited is not None:
            num_id = inherited.num_id
        if num_id is None or num_id == "0":
            return None
        instance = self._instances.get(num_id)
        if instance is None:
            return None
        levels = self._levels.get(num_id)
        if levels is None:
            levels = self._definitions.get(instance.definition, {}) | instance.level_overrides
            self._levels[num_id] = levels
        if direct_level is not None:
            index: int | None = _int(direct_level, -1)
        else:
            index = None if inherited is None else inherited.level
        if index is None:
            index = next((i for i, lvl in levels.items() if lvl.style == style), 0)
        if index not in levels:
            return None
        return self._advance(num_id, instance, levels, index)

    def _advance(
        self, num_id: str, instance: Instance, levels: dict[int, Level], index: int
    ) -> str | None:
        list_key = self._lists.get(instance.definition, instance.definition)
        counters = self._counters.setdefault(list_key, [None] * _LEVELS)
        if num_id not in self._used:
            self._used.add(num_id)
            for restarted in instance.start_overrides.keys() | instance.level_overrides.keys():
                counters[restarted] = None

        def start(at: int) -> int:
            if at in instance.start_overrides:
                return instance.start_overrides[at]
            return levels[at].start if at in levels else 0

        current = counters[index]
        counters[index] = start(index) if current is None else current + 1
        for deeper in range(index + 1, _LEVELS):
            after = levels[deeper].restart_after if deeper in levels else None
            if after is None or (after > 0 and index < after):
                counters[deeper] = None
        level = levels[index]
        if level.format == "bullet":
            return _BULLET
        text = level.text
        for at, placeholder in enumerate(_PLACEHOLDERS):
            if "%" not in text:
                break
            if placeholder in text:
                number = counters[at]
                shown = levels.get(at, Level())
                kind = "decimal" if level.legal and shown.format != "none" else shown.format
                text = text.replace(
                    placeholder, format_number(start(at) if number is None else number, kind)
                )
        return text or None
