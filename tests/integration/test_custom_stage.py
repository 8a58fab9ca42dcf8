"""A stage of a user's own, added without touching the package: real processes.

``tests.support.acme.ingest`` (a package outside ``src/``) places a language-detection stage
between OCR and chunk. The API, a worker for the new stage's queue alone, a worker
for the rest and a reconciler run as subprocesses with ``PIPELINE_DEFINITION`` pointing
at it; the new stage's rows, events, retries, dead letters, replay and rerun behave like
the built-ins'. Then the definition changes under documents in flight.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import Engine, text

from pipeline.settings import Settings
from pipeline.stages.builtin import PIPELINE as BUILTIN
from tests.support.acme.ingest import PIPELINE as ACME
from tests.support.acme.language import Language
from tests.support.processes import ProcessStack, stack_maker, wait_until

pytestmark = pytest.mark.slow
ACME_DEFINITION = "tests.support.acme.ingest:PIPELINE"
ENGLISH = (
    b"The river carries water from the mountains to the sea, and it is the oldest road "
    b"of the valley.\n\nIn spring the water is high and the fields are green."
)
GERMAN = (
    "Der Fluss bringt das Wasser von den Bergen in das Meer, und er ist die älteste "
    "Straße des Tals.\n\nIm Frühling ist das Wasser hoch und die Wiesen sind grün."
).encode()
ROOT = Path(__file__).resolve().parents[2]


class Stack(ProcessStack):
    def workers(self, **env: str) -> None:
        """A worker for the language queue alone, one for the other stages, a reconciler."""
        others = [arg for name in ACME.names if name != "language" for arg in ("--stage", name)]
        self.processes.worker("--stage", "language", name="language", env=env)
        self.processes.worker(*others, "--operations", name="worker")
        self.processes.reconciler()

    def wait(self, document_id: str, status: str = "succeeded", timeout: float = 60) -> None:
        try:
            wait_until(lambda: self.status(document_id) == status, timeout, f"{status} document")
        except AssertionError:
            for name in ("language", "worker", "reconciler"):
                print(name, self.processes.log(name)[-3000:])
            raise

    def rows(self, document_id: str) -> list[tuple[str, int, str, int]]:
        with self.engine.connect() as conn:
            return [
                tuple(row)  # type: ignore[misc]
                for row in conn.execute(
                    text(
                        "SELECT stage, position, status, generation FROM stage_runs "
                        "WHERE document_id = :id ORDER BY position"
                    ),
                    {"id": document_id},
                )
            ]

    def language(self, document_id: str) -> Language:
        with self.engine.connect() as conn:
            payload = conn.execute(
                text("SELECT payload FROM artifacts WHERE document_id = :id AND name = 'language'"),
                {"id": document_id},
            ).scalar_one()
        return msgspec.msgpack.decode(payload, type=Language)

    def state_events(self, document_id: str, stage: str) -> list[str]:
        """The row's transitions, without the events that depend on timing: the
        reconciler re-sending a row while a worker boots, a copy that arrives second
        dropped."""
        timing = {"resent", "dropped"}
        return [event for event in self.events(document_id, stage) if event not in timing]

    def events(self, document_id: str, stage: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT event FROM stage_events WHERE document_id = :id "
                        "AND stage = :stage ORDER BY id"
                    ),
                    {"id": document_id, "stage": stage},
                ).scalars()
            )


@pytest.fixture
def make_stack(settings: Settings, engine: Engine, tmp_path: Path, api_key: str) -> Iterator[Any]:
    with stack_maker(settings, engine, tmp_path, api_key, Stack) as make:
        yield make


def acme_env(**extra: str) -> dict[str, str]:
    return {"PIPELINE_DEFINITION": ACME_DEFINITION, "PYTHONPATH": str(ROOT), **extra}


def test_a_custom_stage_runs_on_its_own_queue_between_extract_and_chunk(make_stack: Any) -> None:
    stack: Stack = make_stack(**acme_env())
    stack.workers()
    english = stack.upload("english.txt", ENGLISH)
    german = stack.upload("german.txt", GERMAN)
    for document_id in (english, german):
        stack.wait(document_id)
    assert stack.rows(english) == [
        (name, position, "succeeded", 1) for position, name in enumerate(ACME.names)
    ]
    assert stack.language(english).code == "en"
    assert stack.language(german).code == "de"
    assert stack.state_events(german, "language") == ["queued", "claimed", "succeeded"]
    shown = stack.client.get(f"/documents/{german}").json()
    assert [row["stage"] for row in shown["stages"]] == list(ACME.names)
    assert shown["pipeline_version"] == "acme-1"
    # The stage's queue is its own, and that worker consumes nothing else.
    assert "worker: queues language;" in stack.processes.log("language")
    assert "language" not in stack.processes.log("worker").split("\n", 1)[0]

    # Rerun from the new stage: a new generation, language and everything after it again.
    response = stack.client.post(f"/documents/{german}/rerun", json={"from_stage": "language"})
    assert response.status_code == 200, response.text
    stack.wait(german)
    assert [row[3] for row in stack.rows(german)] == [2] * len(ACME.names)
    assert stack.state_events(german, "language")[-3:] == ["rerun", "claimed", "succeeded"]
    assert stack.events(german, "validate").count("claimed") == 1  # earlier stages kept


def test_a_custom_stage_retries_dies_and_is_replayed_like_a_built_in(make_stack: Any) -> None:
    """Transient failures on its first two attempts: with one retry allowed the stage is
    dead (a dead letter naming it); the operator raises its budget and replays."""
    faults = [{"stage": "language", "match": "flaky-*", "transient_attempts": 2}]
    stack: Stack = make_stack(faults, **acme_env())
    stack.workers(PIPELINE_LANGUAGE_MAX_RETRIES="1")
    document_id = stack.upload("flaky-english.txt", ENGLISH)
    stack.wait(document_id, "failed")
    assert stack.state_events(document_id, "language") == [
        "queued",
        "claimed",
        "retrying",
        "claimed",
        "dead",
    ]
    letters = stack.client.get("/dead-letters", params={"stage": "language"}).json()["items"]
    (letter,) = [item for item in letters if item["document_id"] == document_id]

    language_worker = stack.processes.running[0]
    stack.processes.signal_group(language_worker, 15)
    language_worker.wait(timeout=30)
    stack.processes.worker(
        "--stage", "language", name="language-2", env={"PIPELINE_LANGUAGE_MAX_RETRIES": "3"}
    )
    replayed = stack.client.post("/dead-letters/replay", json={"ids": [letter["id"]]})
    assert replayed.status_code == 200, replayed.text
    stack.wait(document_id)
    assert stack.language(document_id).code == "en"
    # The replay starts a new retry budget: attempts 1 and 2 fail again, 3 succeeds.
    assert stack.state_events(document_id, "language")[5:] == [
        "replayed",
        "claimed",
        "retrying",
        "claimed",
        "retrying",
        "claimed",
        "succeeded",
    ]


def test_documents_follow_the_plan_they_were_accepted_with(
    make_stack: Any, settings: Settings
) -> None:
    """Accepted under the built-in five, a document finishes under them after the
    definition gains a stage; new uploads get the new plan; a rerun moves the old
    document onto it when asked, and only then."""
    namespace = f"{settings.broker.namespace}-plans-{uuid.uuid4().hex[:6]}"
    old: Stack = make_stack(PIPELINE_REDIS_NAMESPACE=namespace)  # built-in; no workers
    before = old.upload("before.txt", ENGLISH)
    assert [row[0] for row in old.rows(before)] == list(BUILTIN.names)

    stack: Stack = make_stack(PIPELINE_REDIS_NAMESPACE=namespace, **acme_env())
    stack.workers()  # its validate message waits in the shared namespace
    stack.wait(before)
    assert [row[0] for row in stack.rows(before)] == list(BUILTIN.names)
    after = stack.upload("after.txt", GERMAN)
    stack.wait(after)
    assert [row[0] for row in stack.rows(after)] == list(ACME.names)

    own_plan = stack.client.post(f"/documents/{before}/rerun", json={"from_stage": "language"})
    assert own_plan.status_code == 409, own_plan.text
    assert "has no language stage" in own_plan.json()["detail"]

    moved = stack.client.post(
        f"/documents/{before}/rerun", json={"from_stage": "language", "to_current_plan": True}
    )
    assert moved.status_code == 200, moved.text
    stack.wait(before)
    assert stack.rows(before) == [
        (name, position, "succeeded", 2) for position, name in enumerate(ACME.names)
    ]
    assert stack.language(before).code == "en"
    shown = stack.client.get(f"/documents/{before}").json()
    assert shown["pipeline_version"] == "acme-1"


def test_an_invalid_definition_or_stage_is_refused_at_start_in_one_line() -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            env={**_base_env(), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    unknown = run("worker", "--stage", "language")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "Error: unknown stage 'language': the pipeline 'builtin-2' has validate, extract, "
        "ocr, chunk, embed, index"
    ]
    missing = run("stages", PIPELINE_DEFINITION="tests.support.acme.nowhere:PIPELINE")
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "cannot import 'tests.support.acme.nowhere'" in missing.stderr
    broken = run("stages", PIPELINE_DEFINITION="tests.support.acme.broken:READ_TOO_EARLY")
    assert broken.returncode == 1
    assert broken.stderr.strip().splitlines() == [
        "Error: pipeline 'broken-1': stage 'language' reads the 'text' artifact before any "
        "stage writes it (only extract, later, writes it)"
    ]
    typo = run("stages", PIPELINE_LANGAUGE_MAX_RETRIES="2")
    assert typo.returncode == 1
    assert "'langauge', which is no stage" in typo.stderr
    shown = run("stages", PIPELINE_DEFINITION=ACME_DEFINITION, PIPELINE_LANGUAGE_MAX_RETRIES="7")
    assert shown.returncode == 0, shown.stderr
    language = next(line for line in shown.stdout.splitlines() if line.startswith("4 "))
    assert language.split()[:4] == ["4", "language", "language", "7"]
    assert "text" in language
    assert language.rstrip().endswith("language")


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_an_unknown_stage_in_a_rerun_request_is_a_422(client: Any) -> None:
    response = client.post(f"/documents/{uuid.uuid4()}/rerun", json={"from_stage": "language"})
    assert response.status_code == 422, response.text
    assert "unknown stage 'language'" in response.json()["detail"]
