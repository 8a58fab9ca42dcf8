"""The operator console in real headless Chromium, against a running stack.

One stack for the module (``pipeline api``, a worker, the reconciler; real Postgres and
Redis), one browser. The scenario: sign in, watch the overview change as documents
flow (without a reload), open a failed document's timeline, preview and replay its
dead letter once its cause is fixed (the worker restarted without the fault) and see
the document succeed, pause a stage and see messages wait, resume it and see them
drain, sign out. Every run takes screenshots of each page; with
``PIPELINE_CONSOLE_SCREENSHOTS=docs/console`` they replace the ones the README shows
(otherwise they go to a temporary directory, so a test run leaves the checkout clean).

Needs Debian's Chromium (``apt-get install -y chromium``): Playwright's own browser
download is not used. Without it, the module is skipped and says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from pipeline.settings import Settings
from tests.support.api import bearer, make_key
from tests.support.processes import Processes, free_port, ready, stack_env, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = (
    Path(os.environ["PIPELINE_CONSOLE_SCREENSHOTS"]).resolve()
    if os.environ.get("PIPELINE_CONSOLE_SCREENSHOTS")
    else Path(tempfile.mkdtemp(prefix="console-screenshots-"))
)
BROKEN = {"stage": "extract", "match": "broken-*", "permanent": True}
WAIT_MS = 30_000

playwright_api = pytest.importorskip("playwright.sync_api")
if CHROMIUM is None:
    pytest.skip(
        "no Chromium: install it with `apt-get install -y -q chromium` to run the console's "
        "browser tests",
        allow_module_level=True,
    )


class Stack:
    def __init__(self, processes: Processes, url: str, engine: Engine, key: str) -> None:
        self.processes = processes
        self.url = url
        self.engine = engine
        self.key = key
        self.http = httpx.Client(base_url=url, headers=bearer(key), timeout=10)

    def upload(self, name: str) -> str:
        body = f"{name}: a document for the console. {uuid.uuid4()}\n\nSecond paragraph.".encode()
        response = self.http.post("/documents", files={"file": (name, body, "text/plain")})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def status(self, document_id: str) -> str:
        with self.engine.connect() as conn:
            return str(
                conn.execute(
                    text("SELECT status FROM documents WHERE id = :id"), {"id": document_id}
                ).scalar_one()
            )


@pytest.fixture(scope="module")
def stack(
    settings: Settings, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    logs: Path = tmp_path_factory.mktemp("console-logs")
    # Every bulk replay becomes a background job, so the scenario shows a job's page.
    env = stack_env(settings, [BROKEN], PIPELINE_ADMIN_SYNC_LIMIT="0")
    processes = Processes(env, logs)
    port = free_port()
    processes.start("api", "--port", str(port), name="api")
    processes.worker(name="worker-faulty")
    processes.reconciler()
    url = f"http://127.0.0.1:{port}"
    key = make_key(engine, tenant="default", scopes="ingest,read,admin", name="browser")
    try:
        wait_until(lambda: ready(url), 30, f"the api: {processes.log('api')}")
        built = Stack(processes, url, engine, key)
        yield built
        built.http.close()
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Any]:
    runner = playwright_api.sync_playwright().start()
    browser = runner.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
        browser.close()
        runner.stop()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert (SHOTS / f"{name}.png").stat().st_size > 1000


def stage_cell(page: Any, stage: str, column: str) -> Any:
    return page.locator(f'#overview tr[data-stage="{stage}"] td[data-col="{column}"]')


def test_the_operator_console(stack: Stack, page: Any) -> None:
    expect = playwright_api.expect
    expect.set_options(timeout=WAIT_MS)

    # Sign in: no session goes to the sign-in page; the key signs in.
    page.goto(stack.url + "/console/documents")
    expect(page).to_have_url(f"{stack.url}/console/sign-in?next=%2Fconsole%2Fdocuments")
    shot(page, "sign-in")
    page.get_by_label("API key").fill(stack.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(stack.url + "/console/documents")
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    # The overview changes as documents flow, without a reload.
    before = int(page.get_by_test_id("documents-succeeded").inner_text())
    page.evaluate("window.stillTheSamePage = true")
    flowing = [stack.upload(f"flow-{n}.txt") for n in range(3)]
    expect(page.get_by_test_id("documents-succeeded")).to_have_text(str(before + 3))
    assert page.evaluate("window.stillTheSamePage") is True
    assert all(stack.status(d) == "succeeded" for d in flowing)
    expect(page.get_by_test_id("workers-seen")).not_to_have_text("0")
    shot(page, "overview")

    # A failed document's timeline.
    failed = stack.upload("broken-invoice.txt")
    wait_until(lambda: stack.status(failed) == "failed", 30, "the broken document to fail")
    page.get_by_role("link", name="Documents").click()
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("File name contains").fill("broken-invoice")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name="broken-invoice.txt").click()
    expect(page.get_by_test_id("failure-reason")).to_contain_text("extract")
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_contain_text("claimed")
    expect(timeline).to_contain_text("dead")
    shot(page, "document")

    # Its dead letter: fix the cause (a worker without the fault), preview, replay.
    page.get_by_role("link", name="extract: PermanentError").click()
    expect(page.get_by_role("heading", name="Dead letter: extract")).to_be_visible()
    shot(page, "dead-letter")
    faulty = stack.processes.running[1]
    stack.processes.kill(faulty)
    stack.processes.worker(name="worker-fixed", env={"PIPELINE_FAULTS": ""})
    page.get_by_role("link", name="Dead letters").click()
    page.get_by_label("Stage").select_option("extract")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("button", name="Preview replay…").click()
    summary = page.get_by_test_id("preview-summary")
    expect(summary).to_contain_text("Would replay")
    expect(summary).to_contain_text("Nothing has been changed")
    shot(page, "replay-preview")
    assert stack.status(failed) == "failed"  # the preview changed nothing
    page.get_by_label("Rate (messages per second)").fill("5")
    page.get_by_label("Reason").fill("extract fixed")
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_test_id("job-status")).to_contain_text("succeeded")  # refreshes itself
    shot(page, "job")
    wait_until(lambda: stack.status(failed) == "succeeded", 60, "the replayed document")
    page.goto(f"{stack.url}/console/documents/{failed}")
    expect(page.get_by_text("replayed").first).to_be_visible()

    # Pause a stage: messages wait; resume: they drain.
    page.get_by_role("link", name="Overview").click()
    page.get_by_label("Reason to pause validate").fill("maintenance")
    page.get_by_role("button", name="Pause validate").click()
    row = page.locator('#overview tr[data-stage="validate"]')
    expect(row).to_contain_text("paused")
    waiting = [stack.upload(f"paused-{n}.txt") for n in range(2)]
    expect(stage_cell(page, "validate", "queued")).to_have_text("2")  # live, no reload
    assert {stack.status(d) for d in waiting} == {"pending"}
    shot(page, "overview-paused")
    page.get_by_role("button", name="Resume validate").click()
    expect(row).not_to_contain_text("paused")
    wait_until(
        lambda: {stack.status(d) for d in waiting} == {"succeeded"}, 60, "the waiting documents"
    )
    expect(stage_cell(page, "validate", "queued")).to_have_text("0")
    with stack.engine.connect() as conn:
        audit = conn.execute(
            text(
                "SELECT event, detail FROM stage_events WHERE stage = 'validate' "
                "AND event IN ('paused', 'resumed') ORDER BY id DESC LIMIT 2"
            )
        ).all()
    assert {event for event, _ in audit} == {"paused", "resumed"}
    assert all(detail["by"].startswith("console:default/pk_") for _, detail in audit)

    # On a narrow screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{stack.url}/console/documents/{failed}")
    shot(page, "document-narrow")
    page.set_viewport_size({"width": 1280, "height": 800})

    # Sign out: the session ends.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(stack.url + "/console/sign-in")
    page.goto(stack.url + "/console")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
