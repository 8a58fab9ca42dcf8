"""Free text from clients that Postgres stores or compares: never a NUL.

Postgres ``text`` and ``jsonb`` cannot hold U+0000 and psycopg refuses to send it, so
a NUL that got past validation fails the query: a 500 for what is a bad request.
Every free-text field of the API (a search, a filter, a reason, a key) carries this
constraint instead, so the request is refused with a 422 before any work is done, and
the OpenAPI description says so.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

NO_NUL: Final = "^[^\x00]*$"
"""A regular expression every free-text value must match."""

PlainText = Annotated[str, msgspec.Meta(pattern=NO_NUL)]
