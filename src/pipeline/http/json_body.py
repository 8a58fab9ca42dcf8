"""Reading JSON request bodies: nesting bounded first, then decoded strictly.

Litestar decodes a body into plain Python values and converts them to the handler's
type with coercion on (it does so for query strings, where ``"1"`` must become
``1``). For a JSON body that coercion is wrong: ``{"dry_run": 0}`` became ``False``
and ran a real rerun. And a body nested a thousand levels deep ran the decoder out
of recursion (a 500). So the admin API's requests are :class:`StrictJSONRequest`:

* the body's nesting is measured first, by scanning the bytes (no recursion), and a
  body deeper than :data:`MAX_JSON_DEPTH` is a 400 before any decoder sees it;
* then the body is decoded by msgspec straight into the type the handler declares
  for ``data``, with ``strict=True``: a boolean is ``true`` or ``false``, a number a
  JSON number, a string a JSON string. What is wrong is a 422 naming the field, in
  the same shape as Litestar's own validation errors.

Litestar's later conversion of the decoded Struct is a no-op (an instance of the
declared type passes through), so the handlers and the OpenAPI description still
come from their ``data: JSONBody[...]`` parameters.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.types import Empty

from pipeline.http.problems import Problem

MAX_JSON_DEPTH: Final = 32
"""The deepest nesting of arrays and objects a body may have. The deepest real body
(a request with a filter, or a list of ids) nests two levels; 32 leaves room for
any future body and stays far below what a recursive decoder can take."""

_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
"""A complete JSON string: the brackets inside it are text."""
_AS_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS: Final = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPEN: Final = ord("[")
_ERROR_PATH: Final = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


class BodyTooDeep(Problem):
    """A body nests deeper than :data:`MAX_JSON_DEPTH`: refused before decoding."""

    def __init__(self) -> None:
        super().__init__(
            400,
            f"the request body nests deeper than {MAX_JSON_DEPTH} levels of arrays and objects",
        )


def exceeds_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``raw`` nests more than ``limit`` arrays/objects, outside strings.

    No recursion, and no Python loop over the body. Strings are cut out, and every
    other byte but the brackets deleted, with ``{}`` read as ``[]`` (regex and
    ``translate``, in C). Each pass then deletes the empty pairs, which lowers the
    deepest point by exactly one level, so after ``n`` passes the depth is ``n``
    plus the depth of what is left. What is left is walked only until it is too
    deep or does not balance; it holds no shallow pairs any more, so that walk is
    short. (Unbalanced input may be over-counted by a level; the decoder refuses it
    anyway.)
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the common case
    skeleton = _STRING.sub(b"", raw).translate(_AS_BRACKETS, _NOT_BRACKETS)
    passes = 0
    while skeleton and passes < limit:
        reduced = skeleton.replace(b"[]", b"")
        if len(reduced) == len(skeleton):
            break
        skeleton = reduced
        passes += 1
    depth = passes
    for byte in skeleton:
        depth += 1 if byte == _OPEN else -1
        if depth > limit:
            return True
        if depth < passes:
            return False  # a closer with no opener left: malformed here
    return False


def decode_strict(raw: bytes, target: Any) -> Any:
    """``raw`` as ``target``, without coercion; 400 if it is not JSON, 422 if it does
    not fit ``target`` (with Litestar's error shape, which problems.py renders)."""
    if not raw.strip():
        raise Problem(400, "the request body is empty; it must be a JSON object")
    if exceeds_depth(raw):
        raise BodyTooDeep()
    try:
        return msgspec.json.decode(raw, type=target, strict=True)
    except msgspec.ValidationError as error:
        raise ValidationException(
            detail="the request body is invalid", extra=[_error_entry(str(error))]
        ) from None
    except msgspec.DecodeError as error:
        raise Problem(400, f"the request body is not valid JSON: {error}") from None


def _error_entry(text: str) -> dict[str, Any]:
    """msgspec's "message - at `$.path`" as Litestar's ``{message, key, source}``."""
    match = _ERROR_PATH.match(text)
    message = match.group("message") if match else text
    path = (match.group("path") or "") if match else ""
    key = path.removeprefix(".") or None
    return {"message": message, "key": key, "source": "body"}


class StrictJSONRequest(Request[Any, Any, Any]):
    """A request whose JSON body is bounded and decoded strictly into the type of the
    handler's ``data`` parameter (see the module docstring)."""

    async def json(self) -> Any:
        if self._json is Empty:
            self._json = decode_strict(await self.body(), self._body_type())
        return self._json

    def _body_type(self) -> Any:
        parameter = self.route_handler.parsed_fn_signature.parameters.get("data")
        return Any if parameter is None else parameter.annotation
