"""Hostile file names through the API: stored and echoed sanitised, never in a header.

Names arrive two ways: the multipart ``filename`` (written raw here, because HTTP
clients escape CR, LF and quotes before they reach the wire) and the ``?filename=``
query parameter, which wins when both are given.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from pipeline.filenames import sanitise_filename

BODY = b"A short note about hostile file names.\n"
BOUNDARY = "pipelineboundary7c1e"
HOSTILE = [
    "../../etc/passwd",
    "C:\\Windows\\x.txt",
    "a\r\nSet-Cookie: injected=1",
    "name\x00.txt",
    "\x1b]0;pwned\x07title.txt",
    "invoice\u202egnp.exe",
    "..",
    "x" * 2000 + ".txt",
    "\u2066bidi\u2069\u200b.md",
]


def multipart(disposition: bytes) -> tuple[bytes, dict[str, str]]:
    """A one-part multipart body whose part header is written byte for byte."""
    body = (
        f"--{BOUNDARY}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; '
        + disposition
        + b"\r\nContent-Type: text/plain\r\n\r\n"
        + BODY
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def assert_clean_headers(response: httpx.Response) -> None:
    assert "set-cookie" not in response.headers
    for name, value in response.headers.raw:
        assert b"\r" not in name + value
        assert b"\n" not in name + value


def stored_name(client: TestClient[Any], response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    assert_clean_headers(response)
    document = client.get(f"/documents/{response.json()['id']}")
    assert_clean_headers(document)
    return str(document.json()["filename"])


@pytest.mark.parametrize("name", HOSTILE)
def test_query_filename_is_stored_and_echoed_sanitised(client: TestClient[Any], name: str) -> None:
    sent = name[:1024]  # the parameter's documented limit
    response = client.post(
        "/documents",
        params={"filename": sent},
        content=BODY + uuid.uuid4().bytes.hex().encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert stored_name(client, response) == sanitise_filename(sent)


@pytest.mark.parametrize("name", HOSTILE)
def test_multipart_filename_and_query_filename_take_the_query_one(
    client: TestClient[Any], name: str
) -> None:
    body, headers = multipart(b'filename="ignored.txt"')
    response = client.post(
        "/documents", params={"filename": name[:1024]}, content=body, headers=headers
    )
    assert stored_name(client, response) == sanitise_filename(name[:1024])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'filename="../../etc/passwd"', "passwd"),
        (b'filename="C:\\\\temp\\\\report.pdf"', "report.pdf"),
        (b'filename="a\x1b[2Jb\x07.txt"', "a[2Jb.txt"),
        (b'filename="\xe2\x80\xaeevil.txt"', "evil.txt"),
        (b'filename="name\x00.txt"', "name.txt"),
        (b'filename="."', "upload"),
        (b'filename=" .. "', "upload"),
    ],
)
def test_raw_multipart_filename_is_stored_and_echoed_sanitised(
    client: TestClient[Any], raw: bytes, expected: str
) -> None:
    body, headers = multipart(raw)
    response = client.post("/documents", content=body, headers=headers)
    assert stored_name(client, response) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # CRLF ends the part's header line: no file part, a 422 problem.
        (b'filename="a\r\nSet-Cookie: injected=1"', None),
        # A lone LF or CR stays in the name and becomes a space.
        (b'filename="a\nSet-Cookie: injected=1"', "a Set-Cookie: injected=1"),
        (b'filename="a\rb"', "a b"),
    ],
)
def test_line_breaks_in_a_multipart_part_header_cannot_inject(
    client: TestClient[Any], raw: bytes, expected: str | None
) -> None:
    body, headers = multipart(raw)
    response = client.post("/documents", content=body, headers=headers)
    if expected is None:
        assert response.status_code == 422, response.text
        assert_clean_headers(response)
    else:
        assert stored_name(client, response) == expected


@pytest.mark.parametrize(
    "raw",
    [b'filename=""', b"filename*=UTF-8''%E2%80%AEevil%0D%0ASet-Cookie%3A%20x.txt"],
)
def test_a_file_part_without_a_plain_filename_is_refused(
    client: TestClient[Any], raw: bytes
) -> None:
    """Without ``filename`` the part is a text field, not a file (``filename*`` is not
    used in multipart, RFC 7578 section 4.2): a 422 problem that echoes nothing."""
    body, headers = multipart(raw)
    response = client.post("/documents", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert_clean_headers(response)
    assert "evil" not in response.text


def test_listing_shows_the_sanitised_name(client: TestClient[Any]) -> None:
    marker = uuid.uuid4().hex
    response = client.post(
        "/documents",
        params={"filename": f"../{marker}\r\n\u202e.txt"},
        content=BODY + marker.encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 202, response.text
    listing = client.get("/documents", params={"limit": 50})
    assert_clean_headers(listing)
    names = {item["id"]: item["filename"] for item in listing.json()["items"]}
    assert names[response.json()["id"]] == f"{marker} .txt"


@pytest.mark.parametrize(
    "name",
    ["n" * 5_000 + ".txt", "\u00e9" * 2_500 + ".pdf.txt", "x" * 20_000],
)
def test_a_multipart_filename_of_thousands_of_bytes_is_cut_to_255(
    client: TestClient[Any], name: str
) -> None:
    """The README promises names are cut to 255 bytes: a long one is not a 400."""
    body, headers = multipart(b'filename="' + name.encode() + b'"')
    response = client.post("/documents", content=body, headers=headers)
    stored = stored_name(client, response)
    assert stored == sanitise_filename(name)
    assert len(stored.encode()) <= 255


def test_a_part_header_beyond_the_parser_limit_is_413_saying_so(
    client: TestClient[Any],
) -> None:
    body, headers = multipart(b'filename="' + b"x" * 40_000 + b'"')
    response = client.post("/documents", content=body, headers=headers)
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    assert "header" in detail
    assert "32768 bytes" in detail
