"""The operator console over HTTP: sessions, CSRF, tenant isolation, and its actions.

The browser tests (``tests/browser``) drive the pages in Chromium; these check what a
browser cannot be trusted to: every page refuses a request without a valid session,
a form without its CSRF token does nothing, a session ends with sign-out and with
its key, and another tenant's objects are 404 pages.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.access.keys import revoke_key
from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.settings import Settings
from tests.support.api import make_key
from tests.support.dead_letters import dead_gif

pytestmark = pytest.mark.usefixtures("worker")

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PRE = re.compile(r'name="pre" value="([^"]+)"')


@pytest.fixture
def browser(settings: Settings, broker: dramatiq.Broker) -> Iterator[TestClient[Any]]:
    """A client with no API key: only the console's cookie, like a browser."""
    app = create_app(settings, dispatcher=Dispatcher(broker))
    with TestClient(app, base_url="http://testserver.local") as client:
        yield client


def sign_in(client: TestClient[Any], key: str) -> Any:
    page = client.get("/console/sign-in")
    assert page.status_code == 200, page.text
    pre = PRE.search(page.text)
    assert pre is not None
    return client.post(
        "/console/sign-in",
        data={"key": key, "pre": pre.group(1), "next": "/console"},
        follow_redirects=False,
    )


def csrf_of(client: TestClient[Any], path: str = "/console") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found is not None
    return found.group(1)


def console_routes(client: TestClient[Any]) -> list[tuple[str, str]]:
    """Every console route that needs a session: (method, a concrete path)."""
    routes = []
    for route in client.app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not route.path.startswith("/console") or handler.opt.get("console") == "anonymous":
                continue
            path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path)
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                routes.append((method, path))
    return routes


def test_without_a_session_every_page_goes_to_sign_in(browser: TestClient[Any]) -> None:
    routes = console_routes(browser)
    assert ("GET", "/console") in routes
    assert any(m == "POST" for m, _ in routes)
    for method, path in routes:
        response = browser.request(method, path, follow_redirects=False)
        if method == "GET" and not path.endswith("/stream"):
            assert response.status_code == 303, (method, path, response.text)
            assert response.headers["location"].startswith("/console/sign-in?next=")
        else:
            assert response.status_code == 401, (method, path, response.text)
        assert "csrf" not in response.text


def test_sign_in_with_an_admin_key_and_sign_out(browser: TestClient[Any], engine: Engine) -> None:
    key = make_key(engine, scopes="admin,read", name="operator")
    answer = sign_in(browser, key)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; over TLS it is Secure
    assert key not in cookie
    page = browser.get("/console")
    assert page.status_code == 200
    assert "Overview" in page.text
    assert "(operator)" in page.text  # the key's name, shown and audited
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    session_cookie = browser.cookies.get("pipeline_console")
    assert session_cookie

    out = browser.post("/console/sign-out", data={"csrf": csrf_of(browser)}, follow_redirects=False)
    assert out.status_code == 303
    # The old cookie, presented again, opens nothing: the session row is gone.
    browser.cookies.set("pipeline_console", session_cookie, path="/console")
    again = browser.get("/console", follow_redirects=False)
    assert again.status_code == 303
    assert "/console/sign-in" in again.headers["location"]


def test_keys_that_cannot_sign_in(browser: TestClient[Any], engine: Engine) -> None:
    ingest = make_key(engine, scopes="ingest,read")
    refused = sign_in(browser, ingest)
    assert refused.status_code == 403
    assert "lacks the admin scope" in refused.text
    assert "pipeline_console=" not in refused.headers.get("set-cookie", "")
    unknown = sign_in(browser, "pk_000000000000_" + "A" * 43)
    assert unknown.status_code == 401
    # No pre-sign-in token (a form posted from another page): refused before the key.
    admin = make_key(engine, scopes="admin")
    forged = browser.post("/console/sign-in", data={"key": admin}, follow_redirects=False)
    assert forged.status_code == 403
    assert browser.get("/console", follow_redirects=False).status_code == 303


def test_a_form_without_its_csrf_token_is_refused(
    browser: TestClient[Any], engine: Engine, client: TestClient[Any]
) -> None:
    document_id, letter_id = dead_gif(client)
    assert sign_in(browser, make_key(engine, scopes="admin")).status_code == 303
    forged = browser.post(
        "/console/dead-letters/discard", data={"id": letter_id, "reason": "forged"}
    )
    assert forged.status_code == 403
    assert "security token" in forged.text
    wrong = browser.post(
        "/console/dead-letters/discard",
        data={"id": letter_id, "reason": "forged", "csrf": "x" * 43},
    )
    assert wrong.status_code == 403
    elsewhere = browser.post(
        "/console/dead-letters/discard",
        data={"id": letter_id, "reason": "forged", "csrf": csrf_of(browser)},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403
    for method, path in console_routes(browser):
        if method == "POST":
            assert browser.post(path, data={"reason": "x"}).status_code == 403, path
    with engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM dead_letters WHERE id = :id"), {"id": letter_id}
        ).scalar_one()
    assert status == "dead"  # nothing forged was done

    # With the token, the same form does it, and the audit names the key.
    done = browser.post(
        "/console/dead-letters/discard",
        data={"id": letter_id, "reason": "not needed", "csrf": csrf_of(browser)},
    )
    assert done.status_code == 200
    assert "discarded" in done.text
    with engine.connect() as conn:
        detail = conn.execute(
            text(
                "SELECT detail FROM stage_events WHERE document_id = :id "
                "AND event = 'discarded' ORDER BY id DESC LIMIT 1"
            ),
            {"id": document_id},
        ).scalar_one()
    assert detail["by"].startswith("default/pk_")
    assert detail["reason"] == "not needed"


def test_another_tenants_objects_are_404_pages(
    browser: TestClient[Any], engine: Engine, client: TestClient[Any]
) -> None:
    document_id, letter_id = dead_gif(client)  # tenant default's
    other = make_key(engine, tenant=f"other-{uuid.uuid4().hex[:6]}", scopes="admin")
    assert sign_in(browser, other).status_code == 303
    for path in (
        f"/console/documents/{document_id}",
        f"/console/dead-letters/{letter_id}",
        "/console/documents/not-a-uuid",
        f"/console/jobs/{uuid.uuid4()}",
    ):
        page = browser.get(path)
        assert page.status_code == 404, path
        assert "Not found" in page.text
        assert "<html" in page.text
    listing = browser.get("/console/dead-letters")
    assert letter_id not in listing.text
    token = csrf_of(browser)
    deleted = browser.post(
        f"/console/documents/{document_id}/delete",
        data={"confirm": "yes", "csrf": token},
    )
    assert deleted.status_code == 404
    replay = browser.post("/console/dead-letters/replay", data={"id": letter_id, "csrf": token})
    assert replay.status_code == 200
    assert "no such" in replay.text
    assert client.get(f"/documents/{document_id}").status_code == 200


def test_a_revoked_keys_session_ends(browser: TestClient[Any], engine: Engine) -> None:
    key = make_key(engine, scopes="admin")
    assert sign_in(browser, key).status_code == 303
    assert browser.get("/console").status_code == 200
    with engine.begin() as conn:
        revoke_key(conn, key[:15])
    assert browser.get("/console", follow_redirects=False).status_code == 303


def test_a_sign_in_link_works_once(browser: TestClient[Any], engine: Engine) -> None:
    from pipeline.access.console import create_link_token

    key = make_key(engine, scopes="admin")
    with engine.begin() as conn:
        token, _ = create_link_token(conn, key[:15], 60)
    page = browser.get(f"/console/link/{token}")
    assert page.status_code == 200
    assert "Sign in with this link" in page.text
    assert browser.get("/console", follow_redirects=False).status_code == 303  # GET signs nobody in
    pre = PRE.search(page.text)
    assert pre is not None
    used = browser.post(
        "/console/link", data={"token": token, "pre": pre.group(1)}, follow_redirects=False
    )
    assert used.status_code == 303
    assert browser.get("/console").status_code == 200
    browser.cookies.clear()
    page = browser.get(f"/console/link/{token}")
    pre = PRE.search(page.text)
    assert pre is not None
    again = browser.post("/console/link", data={"token": token, "pre": pre.group(1)})
    assert again.status_code == 401


def test_pages_and_document_actions(
    browser: TestClient[Any], engine: Engine, client: TestClient[Any]
) -> None:
    document_id, letter_id = dead_gif(client, "console-page.dat")
    assert sign_in(browser, make_key(engine, scopes="admin")).status_code == 303
    listing = browser.get(
        "/console/documents", params={"filename": "console-page", "status": "failed"}
    )
    assert listing.status_code == 200
    assert document_id in listing.text
    none = browser.get("/console/documents", params={"filename": "no-such-name-anywhere"})
    assert document_id not in none.text
    bad = browser.get("/console/documents", params={"since": "yesterday"})
    assert bad.status_code == 400
    assert "since" in bad.text
    page = browser.get(f"/console/documents/{document_id}")
    assert page.status_code == 200
    assert 'data-testid="failure-reason"' in page.text
    assert letter_id in page.text
    assert "claimed" in page.text
    assert "dead" in page.text
    letter = browser.get(f"/console/dead-letters/{letter_id}")
    assert letter.status_code == 200
    assert "UnsupportedContent" in letter.text
    assert "<h2>Message</h2>" in letter.text
    preview = browser.get(
        "/console/dead-letters/preview", params={"action": "replay", "id": letter_id}
    )
    assert preview.status_code == 200
    assert "Would replay <strong>1</strong>" in preview.text
    fragment = browser.get("/console/overview/fragment")
    assert fragment.status_code == 200
    assert "validate" in fragment.text
    token = csrf_of(browser)
    dry = browser.post(
        f"/console/documents/{document_id}/rerun",
        data={"from_stage": "validate", "dry_run": "1", "csrf": token},
    )
    assert dry.status_code == 200
    assert "would rerun" in dry.text
    unknown = browser.post(
        f"/console/documents/{document_id}/rerun",
        data={"from_stage": "nonsense", "csrf": token},
    )
    assert unknown.status_code == 400
    unconfirmed = browser.post(f"/console/documents/{document_id}/delete", data={"csrf": token})
    assert unconfirmed.status_code == 400
    deleted = browser.post(
        f"/console/documents/{document_id}/delete",
        data={"confirm": "yes", "reason": "console test", "csrf": token},
        follow_redirects=False,
    )
    assert deleted.status_code == 303
    assert client.get(f"/documents/{document_id}").status_code == 404
