"""The operator commands, run in-process against the test database and queues.

``pipeline replay ...`` and ``pipeline rerun`` talk to the same Postgres database and
Redis namespace as the in-process worker, so a replayed or re-run message is really
processed. Other tests share the database: every check is narrowed to the documents
and letters a test made itself.
"""

from __future__ import annotations

import importlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import msgspec
import pytest
import redis
from click.testing import CliRunner, Result
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.cli import main
from pipeline.cli.timeparse import parse_time
from pipeline.settings import Settings
from tests.support.api import upload
from tests.support.documents import events, wait_for_document
from tests.support.faults import Fault, FaultPlan

GIF = b"GIF89a" + bytes(100)
TEXT = b"An operator test document. It has a few sentences.\n\nAnd a second paragraph."

Cli = Callable[..., Result]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    """Runs ``pipeline ARGS...`` in-process; ``env`` adds environment variables."""
    runner = CliRunner()
    base = {
        "DATABASE_URL": settings.database.url,
        "REDIS_URL": settings.broker.url,
        "PIPELINE_REDIS_NAMESPACE": settings.broker.namespace,
        "PIPELINE_CONFIRM_THRESHOLD": "100",
    }

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        return runner.invoke(
            main, list(args), env={**base, **(env or {})}, input=input, catch_exceptions=False
        )

    return invoke


@pytest.fixture
def started() -> datetime:
    """When the test started, a little early (the database clock is the server's)."""
    return datetime.now(UTC) - timedelta(seconds=2)


def dead_at_validate(client: TestClient[Any], name: str) -> str:
    """Upload a GIF declared as octet-stream: validate refuses it for good."""
    response = upload(client, GIF + uuid.uuid4().bytes, name, "application/octet-stream")
    assert response.status_code == 202, response.text
    document_id = str(response.json()["id"])
    assert wait_for_document(client, document_id)["status"] == "failed"
    return document_id


def succeeded(client: TestClient[Any], name: str) -> str:
    response = upload(client, TEXT + uuid.uuid4().hex.encode(), name)
    assert response.status_code == 202, response.text
    document_id = str(response.json()["id"])
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    return document_id


def letters(engine: Engine, document_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM dead_letters WHERE document_id = :id ORDER BY failed_at, id"),
            {"id": document_id},
        ).mappings()
        return [dict(row) for row in rows]


def only_letter(engine: Engine, document_id: str) -> dict[str, Any]:
    (letter,) = letters(engine, document_id)
    return letter


def snapshot(engine: Engine, document_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row the operator commands could touch for these documents."""
    queries = {
        "documents": "SELECT * FROM documents WHERE id = ANY(:ids) ORDER BY id",
        "stage_runs": "SELECT * FROM stage_runs WHERE document_id = ANY(:ids) "
        "ORDER BY document_id, position",
        "dead_letters": "SELECT * FROM dead_letters WHERE document_id = ANY(:ids) ORDER BY id",
        "stage_events": "SELECT * FROM stage_events WHERE document_id = ANY(:ids) ORDER BY id",
    }
    ids = [uuid.UUID(document_id) for document_id in document_ids]
    with engine.connect() as conn:
        return {
            table: [dict(row) for row in conn.execute(text(sql), {"ids": ids}).mappings()]
            for table, sql in queries.items()
        }


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


# -- list --------------------------------------------------------------------------------


def test_list_table_and_json_with_filters(
    client: TestClient[Any], engine: Engine, worker: Any, cli: Cli
) -> None:
    document_id = dead_at_validate(client, "list.dat")
    letter = only_letter(engine, document_id)

    result = cli("replay", "list", "--document", document_id)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[:4] == ["ID", "STAGE", "DOCUMENT", "ERROR"]
    assert row.startswith(str(letter["id"]))
    assert row.split()[1:4] == ["validate", document_id[:8], "UnsupportedContent"]
    assert " dead " in row
    failed_at = letter["failed_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert failed_at in row

    result = cli(
        "replay",
        "list",
        "--document",
        document_id,
        "--stage",
        "validate",
        "--error-type",
        "UnsupportedContent",
        "--status",
        "dead",
        "--since",
        "10m",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)
    assert item["id"] == str(letter["id"])
    assert item["document_id"] == document_id
    assert item["stage"] == "validate"
    assert item["error_type"] == "UnsupportedContent"
    assert item["attempts"] == 1
    assert item["status"] == "dead"
    assert item["replay_count"] == 0
    assert item["actor_name"] == item["queue_name"] == "validate"

    for narrower in (
        ["--stage", "extract"],
        ["--error-type", "CorruptContent"],
        ["--status", "replayed"],
        ["--until", "10m"],
        ["--since", "2999-01-01"],
    ):
        result = cli("replay", "list", "--document", document_id, *narrower)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "no dead letters match", narrower
        result = cli("replay", "list", "--document", document_id, *narrower, "--format", "json")
        assert json.loads(result.stdout) == []


def test_list_follows_the_cursor_up_to_the_limit(
    client: TestClient[Any],
    engine: Engine,
    worker: Any,
    cli: Cli,
    started: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    documents = [dead_at_validate(client, f"page-{n}.dat") for n in range(3)]
    mine = {str(only_letter(engine, document_id)["id"]) for document_id in documents}
    # The module, not the ``replay`` command that ``pipeline.cli`` exports by that name.
    replay_module = importlib.import_module("pipeline.cli.replay")
    monkeypatch.setattr(replay_module, "PAGE_SIZE", 1)
    since = started.isoformat()  # with an offset: +00:00
    until = datetime.now(UTC).isoformat()  # letters failing later do not shift the pages

    # Other tests' letters may match too: compare with what is there, not a count.
    window = ["--since", since, "--until", until, "--format", "json"]
    result = cli("replay", "list", *window, "--limit", "1000")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert mine <= {item["id"] for item in listed}
    assert len(listed) == len({item["id"] for item in listed})  # no page repeated
    keys = [(item["failed_at"], item["id"]) for item in listed]
    assert keys == sorted(keys, reverse=True)  # newest first, across pages
    assert "more dead letters match" not in result.stderr

    limit = len(listed) - 1
    result = cli("replay", "list", *window, "--limit", str(limit))
    assert [item["id"] for item in json.loads(result.stdout)] == [
        item["id"] for item in listed[:limit]
    ]
    assert f"more dead letters match: showing the newest {limit}" in result.stderr


# -- show --------------------------------------------------------------------------------


def test_show_text_and_json(client: TestClient[Any], engine: Engine, worker: Any, cli: Cli) -> None:
    document_id = dead_at_validate(client, "show.dat")
    letter_id = str(only_letter(engine, document_id)["id"])

    result = cli("replay", "show", letter_id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"dead letter  {letter_id}" in out
    assert f"document     {document_id}" in out
    assert "stage        validate (generation 1)" in out
    assert "error        UnsupportedContent: " in out
    assert '"actor_name": "validate"' in out  # the original message, pretty-printed
    assert "traceback:" in out
    assert f"history of document {document_id}" in out
    history = out.split("history of document")[1].splitlines()[1:]
    assert any("validate" in line and " dead " in line for line in history)
    assert all(line.startswith("  20") and line.split()[0].endswith("Z") for line in history)

    result = cli("replay", "show", letter_id, "--format", "json")
    assert result.exit_code == 0, result.output
    detail = json.loads(result.stdout)
    assert detail["letter"]["id"] == letter_id
    assert detail["message"]["actor_name"] == "validate"
    assert detail["message"]["args"][0]["document_id"] == document_id
    assert [event["event"] for event in detail["history"]][-1] == "dead"

    unknown = str(uuid.uuid4())
    result = cli("replay", "show", unknown)
    assert result.exit_code == 1
    assert f"no dead letter {unknown}" in result.output
    assert "Traceback" not in result.output

    result = cli("replay", "show", "not-an-id")
    assert result.exit_code == 2
    assert "'not-an-id' is not a dead-letter id" in result.output


# -- run ---------------------------------------------------------------------------------


def test_replay_by_id_after_the_cause_is_fixed(
    client: TestClient[Any], engine: Engine, worker: Any, faults: FaultPlan, cli: Cli
) -> None:
    # The fault fires once: the replay finds the cause "fixed".
    faults.add("extract", "replay-me.txt", Fault("permanent", times=1))
    response = upload(client, TEXT, "replay-me.txt")
    document_id = str(response.json()["id"])
    assert wait_for_document(client, document_id)["status"] == "failed"
    letter = only_letter(engine, document_id)
    letter_id = str(letter["id"])
    assert (letter["stage"], letter["status"]) == ("extract", "dead")

    result = cli("replay", "run", letter_id, "--reason", "parser fixed")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "replayed 1, skipped 0"
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    letter = only_letter(engine, document_id)
    assert (letter["status"], letter["replay_count"]) == ("replayed", 1)
    assert letter["replayed_message_id"]
    replayed = next(e for e in events(engine, document_id) if e["event"] == "replayed")
    assert replayed["stage"] == "extract"
    assert replayed["detail"]["via"] == "cli"
    assert replayed["detail"]["reason"] == "parser fixed"
    assert replayed["detail"]["selection"] == {"ids": [letter_id]}
    assert replayed["detail"]["dead_letter_id"] == letter_id

    # Already replayed: refused, and the exit code says so.
    result = cli("replay", "run", letter_id)
    assert result.exit_code == 1
    (skipped,) = [line for line in result.stdout.splitlines() if line.startswith("skipped")]
    assert skipped.startswith(f"skipped {letter_id} (extract of {document_id}): already replayed")
    assert "--force" in skipped
    assert "replayed 0, skipped 1" in result.stdout

    # --force passes the letter's status, but the stage has succeeded since.
    result = cli("replay", "run", letter_id, "--force")
    assert result.exit_code == 1
    assert "the extract stage is succeeded, not dead" in result.stdout
    assert only_letter(engine, document_id)["replay_count"] == 1


def test_dry_run_changes_nothing(
    client: TestClient[Any], engine: Engine, worker: Any, cli: Cli
) -> None:
    document_id = dead_at_validate(client, "dry.dat")
    letter_id = str(only_letter(engine, document_id)["id"])
    before = snapshot(engine, [document_id])

    would = f"would replay {letter_id} (validate of {document_id})"
    result = cli("replay", "run", letter_id, "--dry-run")
    assert result.exit_code == 0, result.output
    assert would in result.stdout.splitlines()
    assert "would replay 1, skipped 0 (dry run: nothing changed)" in result.stdout

    result = cli("replay", "run", "--all", "--document", document_id, "--dry-run")
    assert result.exit_code == 0, result.output
    assert would in result.stdout.splitlines()

    result = cli("replay", "discard", letter_id, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"would discard {letter_id} (validate of {document_id})" in result.stdout

    unknown = str(uuid.uuid4())
    result = cli("replay", "run", unknown, "--dry-run")
    assert result.exit_code == 0, result.output  # a dry run exits 0 even with skips
    assert f"skipped {unknown}: no such dead letter" in result.stdout

    time.sleep(0.3)  # anything wrongly sent would have been processed by now
    assert snapshot(engine, [document_id]) == before


def test_confirmation_above_the_threshold(
    client: TestClient[Any], engine: Engine, worker: Any, cli: Cli
) -> None:
    documents = [dead_at_validate(client, f"confirm-{n}.dat") for n in range(2)]
    ids = [str(only_letter(engine, document_id)["id"]) for document_id in documents]
    strict = {"PIPELINE_CONFIRM_THRESHOLD": "1"}
    before = snapshot(engine, documents)

    result = cli("replay", "run", *ids, env=strict)  # no terminal, no answer
    assert result.exit_code == 1
    assert "aborted" in result.output
    result = cli("replay", "run", *ids, env=strict, input="n\n")
    assert result.exit_code == 1
    assert "replay 2 dead letters?" in result.output
    assert "aborted" in result.output
    result = cli("replay", "discard", *ids, env=strict)
    assert result.exit_code == 1
    assert "aborted" in result.output
    result = cli("replay", "run", *ids, "--dry-run", env=strict)  # a dry run does not ask
    assert result.exit_code == 0, result.output
    assert snapshot(engine, documents) == before

    result = cli("replay", "run", *ids, "--yes", env=strict)
    assert result.exit_code == 0, result.output
    assert "replayed 2, skipped 0" in result.stdout
    # Validate refuses the GIFs again: the same letters are dead again, replayed once.
    for document_id in documents:
        assert wait_for_document(client, document_id)["status"] == "failed"
    wait_until(lambda: all(only_letter(engine, d)["status"] == "dead" for d in documents))
    assert [only_letter(engine, d)["replay_count"] for d in documents] == [1, 1]

    result = cli("replay", "run", *ids, env=strict, input="y\n")
    assert result.exit_code == 0, result.output
    assert "replayed 2, skipped 0" in result.stdout
    for document_id in documents:
        assert wait_for_document(client, document_id)["status"] == "failed"


def test_discard_by_id_and_by_filter(
    client: TestClient[Any], engine: Engine, worker: Any, cli: Cli
) -> None:
    first = dead_at_validate(client, "discard-1.dat")
    second = dead_at_validate(client, "discard-2.dat")
    first_id = str(only_letter(engine, first)["id"])

    result = cli("replay", "discard", first_id, "--reason", "unsupported; customer told")
    assert result.exit_code == 0, result.output
    assert "discarded 1, skipped 0" in result.stdout
    assert only_letter(engine, first)["status"] == "discarded"
    assert wait_for_document(client, first)["status"] == "failed"
    result = cli("replay", "list", "--document", first, "--status", "discarded", "--format", "json")
    assert [item["id"] for item in json.loads(result.stdout)] == [first_id]

    result = cli("replay", "discard", first_id)
    assert result.exit_code == 1
    assert f"skipped {first_id} (validate of {first}): already discarded" in result.stdout
    result = cli("replay", "run", first_id)
    assert result.exit_code == 1
    assert f"skipped {first_id} (validate of {first}): already discarded" in result.stdout

    # By filter: the audit trail records the filter, not the ids it matched.
    result = cli("replay", "discard", "--all", "--document", second, "--reason", "cleanup")
    assert result.exit_code == 0, result.output
    assert "discarded 1, skipped 0" in result.stdout
    assert only_letter(engine, second)["status"] == "discarded"
    discarded = next(e for e in events(engine, second) if e["event"] == "discarded")
    assert discarded["detail"]["selection"] == {
        "filter": {"document_id": second, "status": "dead"},
        "limit": None,
    }
    assert discarded["detail"]["reason"] == "cleanup"

    result = cli("replay", "discard", "--all", "--document", second)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "no dead letters match"


# -- import ------------------------------------------------------------------------------


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.broker.url)
    yield client
    client.close()


def test_import_from_redis(
    client: TestClient[Any],
    engine: Engine,
    worker: Any,
    cli: Cli,
    settings: Settings,
    redis_client: redis.Redis,
) -> None:
    document_id = dead_at_validate(client, "import.dat")
    message = dramatiq.Message(
        queue_name="validate",
        actor_name="validate",
        args=({"document_id": document_id, "stage": "validate", "generation": 1},),
        kwargs={},
        options={
            "retries": 2,
            "traceback": "Traceback (most recent call last):\n  ...\n"
            "RuntimeError: the database was down on every attempt\n",
        },
    )
    redis_id = str(uuid.uuid4())
    key = f"{settings.broker.namespace}:validate.XQ"
    redis_client.zadd(key, {redis_id: time.time() * 1000})
    redis_client.hset(f"{key}.msgs", redis_id, msgspec.json.encode(message.asdict()))
    try:
        result = cli("replay", "import", "--queue", "validate", "--dry-run")
        assert result.exit_code == 0, result.output
        assert (
            f"would import message {message.message_id}, validate of {document_id}"
        ) in result.stdout
        assert "(dry run: nothing changed)" in result.stdout
        assert len(letters(engine, document_id)) == 1

        result = cli("replay", "import", "--queue", "validate")
        assert result.exit_code == 0, result.output
        (line,) = [line for line in result.stdout.splitlines() if message.message_id in line]
        assert line.startswith("imported ")
        assert line.endswith(f"(message {message.message_id}, validate of {document_id})")
        (letter,) = [
            row for row in letters(engine, document_id) if row["message_id"] == message.message_id
        ]
        assert str(letter["id"]) in line
        assert letter["error_type"] == "DramatiqDeadLetter"
        assert letter["error_message"] == "RuntimeError: the database was down on every attempt"
        assert letter["attempts"] == 3
        assert letter["status"] == "dead"

        result = cli("replay", "import", "--queue", "validate")
        assert result.exit_code == 0, result.output
        assert message.message_id not in result.stdout
        summary = result.stdout.strip().splitlines()[-1]
        assert summary.startswith("imported 0, already imported ")
        assert int(summary.rsplit(" ", 1)[1]) >= 1
        assert len(letters(engine, document_id)) == 2

        listed = cli(
            "replay",
            "list",
            "--document",
            document_id,
            "--error-type",
            "DramatiqDeadLetter",
            "--format",
            "json",
        )
        assert [item["id"] for item in json.loads(listed.stdout)] == [str(letter["id"])]
    finally:
        redis_client.zrem(key, redis_id)
        redis_client.hdel(f"{key}.msgs", redis_id)


# -- rerun -------------------------------------------------------------------------------


def test_rerun_by_id_and_by_filter(
    client: TestClient[Any], engine: Engine, worker: Any, cli: Cli, started: datetime
) -> None:
    document_id = succeeded(client, "rerun.txt")
    assert client.get(f"/documents/{document_id}").json()["generation"] == 1

    result = cli("rerun", document_id, "--from-stage", "chunk", "--reason", "new chunker")
    assert result.exit_code == 0, result.output
    assert "re-ran 1, skipped 0" in result.stdout
    document = wait_for_document(client, document_id)
    assert document["status"] == "succeeded"
    assert document["generation"] == 2
    rerun = next(e for e in events(engine, document_id) if e["event"] == "rerun")
    assert rerun["stage"] == "chunk"
    assert rerun["detail"]["reason"] == "new chunker"
    assert rerun["detail"]["from_stage"] == "chunk"
    assert rerun["detail"]["selection"] == {"ids": [document_id]}

    # By filter, dry: says what it would do and does nothing.
    before = snapshot(engine, [document_id])
    result = cli(
        "rerun",
        "--status",
        "succeeded",
        "--since",
        started.isoformat(),
        "--from-stage",
        "embed",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert f"would rerun {document_id} from embed (generation 2 → 3)" in result.stdout
    assert "(dry run: nothing changed)" in result.stdout
    time.sleep(0.3)
    assert snapshot(engine, [document_id]) == before

    # A document that never got past validate cannot re-run from chunk.
    failed = dead_at_validate(client, "rerun-failed.dat")
    result = cli("rerun", failed, "--from-stage", "chunk")
    assert result.exit_code == 1
    assert (
        f"skipped {failed}: validate has not succeeded; rerun from validate or an earlier stage"
    ) in result.stdout


def test_rerun_asks_above_the_threshold(
    client: TestClient[Any], engine: Engine, worker: Any, cli: Cli
) -> None:
    documents = [succeeded(client, f"rerun-confirm-{n}.txt") for n in range(2)]
    result = cli(
        "rerun", *documents, "--from-stage", "index", env={"PIPELINE_CONFIRM_THRESHOLD": "1"}
    )
    assert result.exit_code == 1
    assert "aborted" in result.output
    for document_id in documents:
        assert client.get(f"/documents/{document_id}").json()["generation"] == 1


# -- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "list", "--since", "yesterday"], "'yesterday' is not a time"),
        (["replay", "list", "--until", "2026-13-01"], "'2026-13-01' is not a time"),
        (["replay", "list", "--document", "abc"], "'abc' is not a document id"),
        (["replay", "list", "--limit", "0"], "--limit"),
        (["replay", "list", "--since", "1h", "--until", "2h"], "--since must be before --until"),
        (["replay", "run"], "give dead-letter ids, or --all"),
        (["replay", "run", "nope"], "'nope' is not a dead-letter id"),
        (["replay", "run", str(uuid.UUID(int=1)), "--all"], "not both"),
        (["replay", "run", str(uuid.UUID(int=1)), "--stage", "chunk"], "--stage only apply"),
        (["replay", "run", "--all", "--rate", "0"], "--rate"),
        (["replay", "run", "--all", "--rate", "1e-300"], "--rate"),  # beyond the pacer
        (["replay", "run", "--all", "--rate", "20000"], "--rate"),
        (["replay", "run", "--all", "--limit", "0"], "--limit"),
        (["replay", "discard"], "give dead-letter ids, or --all"),
        (["replay", "import", "--queue", "nope"], "--queue"),
        (["rerun", "--from-stage", "chunk"], "give document ids, or select documents"),
        (["rerun", "nope", "--from-stage", "chunk"], "'nope' is not a document id"),
        (["rerun", str(uuid.UUID(int=1))], "--from-stage"),
        (
            ["rerun", str(uuid.UUID(int=1)), "--status", "failed", "--from-stage", "chunk"],
            "not both",
        ),
        (["rerun", "--since", "soon", "--from-stage", "chunk"], "'soon' is not a time"),
        (["rerun", "--status", "failed", "--from-stage", "chunk", "--rate", "-1"], "--rate"),
        (["rerun", "--status", "failed", "--from-stage", "chunk", "--rate", "1e-9"], "--rate"),
    ],
)
def test_usage_errors(cli: Cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_parse_time() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert parse_time("30m", now=now) == datetime(2026, 11, 21, 11, 30, tzinfo=UTC)
    assert parse_time("2h", now=now) == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert parse_time("7d", now=now) == datetime(2026, 11, 14, 12, 0, tzinfo=UTC)
    assert parse_time("2026-11-21") == datetime(2026, 11, 21, tzinfo=UTC)
    assert parse_time("2026-11-21T06:00") == datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    assert parse_time("2026-11-21T06:00Z") == datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    assert parse_time("2026-11-21T07:00+01:00") == datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    for bad in ("", "yesterday", "5x", "-5m", "2026-11-31"):
        with pytest.raises(ValueError, match="is not a time"):
            parse_time(bad)
