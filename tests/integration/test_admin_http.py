"""The admin HTTP API: dead letters, replay, discard, reruns and background operation jobs."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import dramatiq
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from pipeline.engine.dispatch import Dispatcher
from pipeline.http.app import create_app
from pipeline.settings import Settings
from tests.support.api import assert_problem, bearer, upload
from tests.support.dead_letters import dead_document, dead_gif, unique
from tests.support.documents import events, wait_for_document
from tests.support.faults import Fault, FaultPlan

TEXT = (
    b"Admin API test text about rivers and deltas.\n\nA second paragraph about estuaries and tides."
)


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        now: datetime = conn.execute(text("SELECT now()")).scalar_one()
    return now


def dead_at_extract(client: TestClient[Any], faults: FaultPlan) -> tuple[str, str]:
    """A text document whose extract fails permanently once (the cause then goes away)."""
    filename = unique("fixable") + ".txt"
    faults.add("extract", filename, Fault("permanent", times=1))
    return dead_document(client, TEXT, filename, "text/plain")


def wait_for_status(
    client: TestClient[Any], document_id: str, status: str, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        document: dict[str, Any] = client.get(f"/documents/{document_id}").json()
        if document["status"] == status:
            return document
        assert time.monotonic() < deadline, f"document still {document['status']}: {document}"
        time.sleep(0.05)


def snapshot(engine: Engine, document_ids: list[str]) -> dict[str, Any]:
    """Every row about these documents: to show that a dry run changes nothing."""
    tables = {
        "documents": "SELECT * FROM documents WHERE id = ANY(:ids) ORDER BY id",
        "stage_runs": "SELECT * FROM stage_runs WHERE document_id = ANY(:ids) "
        "ORDER BY document_id, position",
        "dead_letters": "SELECT * FROM dead_letters WHERE document_id = ANY(:ids) ORDER BY id",
        "stage_events": "SELECT * FROM stage_events WHERE document_id = ANY(:ids) ORDER BY id",
    }
    ids = [uuid.UUID(document_id) for document_id in document_ids]
    with engine.connect() as conn:
        return {
            name: [dict(row) for row in conn.execute(text(sql), {"ids": ids}).mappings()]
            for name, sql in tables.items()
        }


# -- listing and showing ----------------------------------------------------------------


def test_list_filters(
    client: TestClient[Any], engine: Engine, faults: FaultPlan, worker: Any
) -> None:
    start = db_now(engine)
    gif_document, gif_letter = dead_gif(client)
    text_document, text_letter = dead_at_extract(client, faults)

    def ids(**params: Any) -> set[str]:
        response = client.get("/dead-letters", params=params)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert ids(document_id=gif_document) == {gif_letter}
    assert ids(stage="validate", document_id=gif_document) == {gif_letter}
    assert ids(stage="extract", document_id=gif_document) == set()
    assert ids(stage="extract", document_id=text_document) == {text_letter}
    assert ids(error_type="UnsupportedContent", document_id=gif_document) == {gif_letter}
    assert ids(error_type="PermanentError", document_id=gif_document) == set()
    assert ids(status="dead", document_id=gif_document) == {gif_letter}
    assert ids(status="replayed", document_id=gif_document) == set()
    # since/until: naive datetimes are UTC; an offset is honoured.
    naive_start = start.astimezone(UTC).replace(tzinfo=None).isoformat()
    offset_start = start.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert {gif_letter, text_letter} <= ids(since=naive_start, limit=500)
    assert {gif_letter, text_letter} <= ids(since=offset_start, limit=500)
    assert ids(until=naive_start, document_id=gif_document) == set()
    later = (start + timedelta(hours=1)).astimezone(UTC).replace(tzinfo=None).isoformat()
    assert ids(since=naive_start, until=later, document_id=text_document) == {text_letter}
    assert ids(since=later, document_id=text_document) == set()

    (summary,) = client.get("/dead-letters", params={"document_id": gif_document}).json()["items"]
    assert summary["stage"] == "validate"
    assert summary["status"] == "dead"
    assert summary["error_type"] == "UnsupportedContent"
    assert summary["replay_count"] == 0


def test_cursor_pagination_newest_first(
    client: TestClient[Any], engine: Engine, worker: Any
) -> None:
    start = db_now(engine).astimezone(UTC).isoformat()
    created = {dead_gif(client)[1] for _ in range(3)}
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"since": start, "stage": "validate", "limit": 2}
    pages = 0
    while True:
        response = client.get("/dead-letters", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        pages += 1
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids)), "a letter appeared on two pages"
    assert created <= set(ids)
    assert pages >= 2
    keys = [(item["failed_at"], item["id"]) for item in seen]
    assert keys == sorted(keys, reverse=True)


def test_bad_cursor_is_422(client: TestClient[Any]) -> None:
    response = client.get("/dead-letters", params={"cursor": "not-a-cursor"})
    assert_problem(response, 422, "cursor")


def test_show_letter_with_history(client: TestClient[Any], worker: Any) -> None:
    document_id, letter_id = dead_gif(client)
    response = client.get(f"/dead-letters/{letter_id}")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["letter"]["id"] == letter_id
    assert detail["letter"]["document_id"] == document_id
    assert detail["message"]["actor_name"] == "validate"
    assert detail["message"]["args"][0]["document_id"] == document_id
    assert detail["replayed_message_id"] is None
    history = [(event["stage"], event["event"]) for event in detail["history"]]
    assert ("validate", "dead") in history


def test_show_unknown_or_malformed_letter_is_404(client: TestClient[Any]) -> None:
    assert_problem(client.get(f"/dead-letters/{uuid.uuid4()}"), 404, "no dead letter")
    assert_problem(client.get("/dead-letters/not-a-uuid"), 404, "no dead letter")


# -- replay and discard -----------------------------------------------------------------


def test_replay_after_fixing_the_cause(
    client: TestClient[Any], engine: Engine, faults: FaultPlan, worker: Any
) -> None:
    document_id, letter_id = dead_at_extract(client, faults)
    response = client.post(
        "/dead-letters/replay", json={"ids": [letter_id], "reason": "extractor fixed"}
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["dry_run"] is False
    assert (report["matched"], report["done"], report["skipped"]) == (1, 1, 0)
    (item,) = report["items"]
    assert item["action"] == "replayed"
    assert item["id"] == letter_id
    assert item["stage"] == "extract"
    document = wait_for_document(client, document_id)
    assert document["status"] == "succeeded"

    letter = client.get(f"/dead-letters/{letter_id}").json()
    assert letter["letter"]["status"] == "replayed"
    assert letter["letter"]["replay_count"] == 1
    assert letter["replayed_message_id"] == item["message_id"]
    replayed = next(e for e in events(engine, document_id) if e["event"] == "replayed")
    assert replayed["detail"]["via"] == "api"
    assert replayed["detail"]["by"]
    assert replayed["detail"]["reason"] == "extractor fixed"

    again = client.post("/dead-letters/replay", json={"ids": [letter_id]}).json()
    (item,) = again["items"]
    assert (again["done"], again["skipped"]) == (0, 1)
    assert item["action"] == "skipped"
    assert "already replayed" in item["detail"]
    # force gets past the letter's status, but the stage succeeded: nothing to replay.
    forced = client.post("/dead-letters/replay", json={"ids": [letter_id], "force": True}).json()
    (item,) = forced["items"]
    assert item["action"] == "skipped"
    assert "not dead" in item["detail"]


def test_dry_run_changes_nothing(client: TestClient[Any], engine: Engine, worker: Any) -> None:
    documents, letters = zip(*(dead_gif(client) for _ in range(2)), strict=True)
    before = snapshot(engine, list(documents))
    response = client.post("/dead-letters/replay", json={"ids": list(letters), "dry_run": True})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["dry_run"] is True
    assert [item["action"] for item in report["items"]] == ["would replay", "would replay"]
    discard = client.post("/dead-letters/discard", json={"ids": list(letters), "dry_run": True})
    assert [item["action"] for item in discard.json()["items"]] == ["would discard"] * 2
    rerun = client.post(
        f"/documents/{documents[0]}/rerun", json={"from_stage": "validate", "dry_run": True}
    )
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["items"][0]["action"] == "would rerun"
    assert snapshot(engine, list(documents)) == before


def test_discard_then_forced_replay(
    client: TestClient[Any], faults: FaultPlan, worker: Any
) -> None:
    document_id, letter_id = dead_at_extract(client, faults)
    response = client.post(
        "/dead-letters/discard", json={"ids": [letter_id], "reason": "known bad file"}
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["items"]
    assert item["action"] == "discarded"
    assert client.get(f"/dead-letters/{letter_id}").json()["letter"]["status"] == "discarded"
    listed = client.get("/dead-letters", params={"status": "discarded", "document_id": document_id})
    assert [letter["id"] for letter in listed.json()["items"]] == [letter_id]

    again = client.post("/dead-letters/discard", json={"ids": [letter_id]}).json()
    assert again["items"][0]["action"] == "skipped"
    assert "already discarded" in again["items"][0]["detail"]
    refused = client.post("/dead-letters/replay", json={"ids": [letter_id]}).json()
    assert refused["items"][0]["action"] == "skipped"

    forced = client.post("/dead-letters/replay", json={"ids": [letter_id], "force": True})
    assert forced.status_code == 200, forced.text
    assert forced.json()["items"][0]["action"] == "replayed"
    assert wait_for_document(client, document_id)["status"] == "succeeded"


def test_replay_by_filter(client: TestClient[Any], faults: FaultPlan, worker: Any) -> None:
    document_id, letter_id = dead_at_extract(client, faults)
    body = {"filter": {"document_id": document_id, "stage": "extract", "status": "dead"}}
    response = client.post("/dead-letters/replay", json=body)
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [letter_id]
    assert wait_for_document(client, document_id)["status"] == "succeeded"


def test_unknown_letter_is_skipped(client: TestClient[Any]) -> None:
    missing = str(uuid.uuid4())
    report = client.post("/dead-letters/replay", json={"ids": [missing]}).json()
    assert report["items"] == [
        {
            "id": missing,
            "action": "skipped",
            "detail": "no such dead letter",
            "document_id": None,
            "stage": None,
            "message_id": None,
        }
    ]


# -- reruns -----------------------------------------------------------------------------


def test_rerun_document_from_chunk(client: TestClient[Any], engine: Engine, worker: Any) -> None:
    document_id = upload(client, TEXT, unique("rerun") + ".txt").json()["id"]
    first = wait_for_document(client, document_id)
    assert first["status"] == "succeeded"
    assert first["generation"] == 1
    chunks_before = client.get(f"/documents/{document_id}/chunks").json()

    response = client.post(
        f"/documents/{document_id}/rerun", json={"from_stage": "chunk", "reason": "new chunker"}
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["items"]
    assert item["action"] == "rerun"
    assert item["detail"] == "generation 1 → 2"

    document = wait_for_status(client, document_id, "succeeded")
    assert document["generation"] == 2
    chunks = client.get(f"/documents/{document_id}/chunks").json()
    assert chunks["count"] == chunks_before["count"] > 0
    assert [chunk["ordinal"] for chunk in chunks["chunks"]] == list(range(chunks["count"]))
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM chunks WHERE document_id = :id"), {"id": document_id}
        ).scalar_one()
    assert stored == chunks["count"]
    rerun = next(e for e in events(engine, document_id) if e["event"] == "rerun")
    assert rerun["detail"]["via"] == "api"
    assert rerun["detail"]["from_stage"] == "chunk"


def test_rerun_past_a_dead_stage_is_409(client: TestClient[Any], worker: Any) -> None:
    document_id, _ = dead_gif(client)
    response = client.post(f"/documents/{document_id}/rerun", json={"from_stage": "embed"})
    body = assert_problem(response, 409, "validate has not succeeded")
    assert "rerun from validate or an earlier stage" in body["detail"]


def test_rerun_unknown_or_malformed_document_is_404(client: TestClient[Any]) -> None:
    body = {"from_stage": "chunk"}
    assert_problem(client.post(f"/documents/{uuid.uuid4()}/rerun", json=body), 404, "no document")
    assert_problem(client.post("/documents/nope/rerun", json=body), 404, "no document")


def test_bulk_rerun_by_filter_and_ids(client: TestClient[Any], engine: Engine, worker: Any) -> None:
    start = db_now(engine).astimezone(UTC).isoformat()
    document_id = upload(client, TEXT, unique("bulk") + ".txt").json()["id"]
    assert wait_for_document(client, document_id)["status"] == "succeeded"
    body = {"from_stage": "embed", "filter": {"since": start, "status": "succeeded"}}
    dry = client.post("/rerun", json=body | {"dry_run": True})
    assert dry.status_code == 200, dry.text
    assert document_id in {item["id"] for item in dry.json()["items"]}
    assert {item["action"] for item in dry.json()["items"]} <= {"would rerun", "skipped"}

    response = client.post("/rerun", json={"from_stage": "embed", "ids": [document_id]})
    assert response.status_code == 200, response.text
    assert response.json()["items"][0]["action"] == "rerun"
    document = wait_for_status(client, document_id, "succeeded")
    assert document["generation"] == 2


# -- background jobs --------------------------------------------------------------------


def test_big_replay_runs_as_a_background_job(
    settings: Settings, broker: dramatiq.Broker, client: TestClient[Any], api_key: str
) -> None:
    letters = [dead_gif(client)[1] for _ in range(3)]
    small = create_app(
        settings.replace(operations={"admin_sync_limit": 2}), dispatcher=Dispatcher(broker)
    )
    with TestClient(small) as admin:
        admin.headers.update(bearer(api_key))
        dry = admin.post("/dead-letters/replay", json={"ids": letters, "dry_run": True})
        assert dry.status_code == 200, dry.text  # dry runs always answer at once
        assert dry.json()["matched"] == 3
        at_limit = admin.post("/dead-letters/replay", json={"ids": [str(uuid.uuid4())] * 2})
        assert at_limit.status_code == 200, at_limit.text  # duplicates count once
        at_limit = admin.post(
            "/dead-letters/replay", json={"ids": [str(uuid.uuid4()), str(uuid.uuid4())]}
        )
        assert at_limit.status_code == 200, at_limit.text  # at the limit: still at once
        assert at_limit.json()["skipped"] == 2

        response = admin.post("/dead-letters/replay", json={"ids": letters, "reason": "bulk"})
        assert response.status_code == 202, response.text
        accepted = response.json()
        job_id = accepted["job_id"]
        assert accepted["status"] == "queued"
        assert accepted["total"] == 3
        assert accepted["links"]["self"] == f"/operations/{job_id}"
        assert response.headers["location"] == f"/operations/{job_id}"

        deadline = time.monotonic() + 30
        while True:
            job = admin.get(f"/operations/{job_id}").json()
            if job["status"] in ("succeeded", "failed"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    assert job["status"] == "succeeded", job
    assert (job["total"], job["done"], job["skipped"]) == (3, 3, 0)
    assert job["kind"] == "replay"
    assert job["requested_by"].startswith("api:")
    assert job["request"]["ids"] == letters
    assert job["request"]["reason"] == "bulk"
    assert job["started_at"] is not None
    assert job["finished_at"] is not None
    for letter_id in letters:
        letter = client.get(f"/dead-letters/{letter_id}").json()["letter"]
        assert letter["replay_count"] == 1


def test_big_discard_by_filter_runs_as_a_background_job(
    settings: Settings,
    broker: dramatiq.Broker,
    client: TestClient[Any],
    engine: Engine,
    worker: Any,
    api_key: str,
) -> None:
    start = db_now(engine).astimezone(UTC).replace(tzinfo=None).isoformat()  # naive: UTC
    letters = {dead_gif(client)[1] for _ in range(3)}
    small = create_app(
        settings.replace(operations={"admin_sync_limit": 2}), dispatcher=Dispatcher(broker)
    )
    body = {
        "filter": {"since": start, "stage": "validate", "status": "dead"},
        "reason": "junk uploads",
    }
    with TestClient(small) as admin:
        admin.headers.update(bearer(api_key))
        response = admin.post("/dead-letters/discard", json=body)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        deadline = time.monotonic() + 30
        while (job := admin.get(f"/operations/{job_id}").json())["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    assert job["status"] == "succeeded", job
    assert job["kind"] == "discard"
    assert job["request"]["filter"]["since"] == start + "Z"  # stored as UTC
    assert job["done"] >= 3
    for letter_id in letters:
        assert client.get(f"/dead-letters/{letter_id}").json()["letter"]["status"] == "discarded"


class UnreachableBroker(Dispatcher):
    def send(self, message: dramatiq.Message[Any]) -> None:
        raise ConnectionError("Redis is down")


def test_job_that_cannot_be_queued_is_503(
    settings: Settings, broker: dramatiq.Broker, client: TestClient[Any], api_key: str
) -> None:
    app = create_app(
        settings.replace(operations={"admin_sync_limit": 0}), dispatcher=UnreachableBroker(broker)
    )
    with TestClient(app) as admin:
        admin.headers.update(bearer(api_key))
        response = admin.post("/dead-letters/discard", json={"ids": [str(uuid.uuid4())]})
        problem = assert_problem(response, 503, "could not be queued")
        job = admin.get(f"/operations/{problem['job_id']}").json()
    assert job["status"] == "queued"  # recorded, never started: nothing re-sends it


def test_unknown_operation_is_404(client: TestClient[Any]) -> None:
    assert_problem(client.get(f"/operations/{uuid.uuid4()}"), 404, "no operation")
    assert_problem(client.get("/operations/not-a-uuid"), 404, "no operation")


# -- validation -------------------------------------------------------------------------

LETTER_ID = "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        (
            "/dead-letters/replay",
            {"ids": [LETTER_ID], "filter": {"stage": "validate"}},
            "give either ids or a filter",
        ),
        ("/dead-letters/replay", {}, "give either ids or a filter"),
        ("/dead-letters/replay", {"ids": [LETTER_ID], "idz": []}, "unknown field `idz`"),
        ("/dead-letters/replay", {"filter": {"stage": "Bogus!"}}, "filter.stage"),
        ("/dead-letters/replay", {"filter": {"colour": "red"}}, "unknown field `colour`"),
        ("/dead-letters/replay", {"ids": [LETTER_ID], "rate": -1}, "rate"),
        ("/dead-letters/replay", {"ids": [LETTER_ID], "rate": 0}, "rate"),
        ("/dead-letters/replay", {"ids": ["not-a-uuid"]}, "ids[0]"),
        ("/dead-letters/replay", {"ids": [LETTER_ID], "limit": 0}, "limit"),
        ("/dead-letters/replay", {"filter": {"stage": "extract"}, "limit": 2**63}, "limit"),
        ("/dead-letters/replay", {"ids": LETTER_ID}, "ids"),
        ("/dead-letters/discard", {"ids": [LETTER_ID], "filter": {}}, "give either ids"),
        ("/dead-letters/discard", {"ids": [LETTER_ID], "rate": 1}, "unknown field `rate`"),
        ("/rerun", {"ids": [LETTER_ID]}, "missing required field `from_stage`"),
        ("/rerun", {"from_stage": "Bogus!", "ids": [LETTER_ID]}, "from_stage"),
        ("/rerun", {"from_stage": "chunk"}, "give either ids or a filter"),
        ("/rerun", {"from_stage": "chunk", "filter": {"status": "dead"}}, "filter.status"),
        (f"/documents/{LETTER_ID}/rerun", {}, "missing required field `from_stage`"),
        (f"/documents/{LETTER_ID}/rerun", {"from_stage": "Bogus!"}, "from_stage"),
        (f"/documents/{LETTER_ID}/rerun", {"from_stage": "chunk", "ids": []}, "unknown field"),
    ],
)
def test_invalid_bodies_are_422(
    client: TestClient[Any], path: str, body: dict[str, Any], detail: str
) -> None:
    problem = assert_problem(client.post(path, json=body), 422, detail)
    assert problem["title"] == "Unprocessable Entity"
    assert problem["detail"].startswith("invalid ")
    assert problem["errors"]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": 0}, "query parameter `limit`"),
        ({"limit": 501}, "query parameter `limit`"),
        ({"stage": "Bogus!"}, "query parameter `stage`"),
        ({"status": "lost"}, "query parameter `status`"),
        ({"document_id": "nope"}, "query parameter `document_id`"),
        ({"since": "yesterday"}, "query parameter `since`"),
    ],
)
def test_invalid_list_parameters_are_422(
    client: TestClient[Any], params: dict[str, Any], detail: str
) -> None:
    assert_problem(client.get("/dead-letters", params=params), 422, detail)


def test_malformed_json_is_a_problem(client: TestClient[Any]) -> None:
    response = client.post(
        "/dead-letters/replay", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert response.headers["content-type"].startswith("application/problem+json")


def test_openapi_documents_the_admin_endpoints(client: TestClient[Any]) -> None:
    schema = client.get("/schema/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("/dead-letters", "get"): None,
        ("/dead-letters/{letter_id}", "get"): None,
        ("/dead-letters/replay", "post"): "ReplayRequest",
        ("/dead-letters/discard", "post"): "DiscardRequest",
        ("/documents/{document_id}/rerun", "post"): "DocumentRerunBody",
        ("/rerun", "post"): "RerunRequest",
        ("/operations/{job_id}", "get"): None,
    }
    for (path, method), body in expected.items():
        operation = paths[path][method]
        assert operation["tags"] == ["admin"]
        if body is not None:
            content = operation["requestBody"]["content"]["application/json"]
            assert content["schema"]["$ref"] == f"#/components/schemas/{body}"
            assert body in schema["components"]["schemas"]
    replay = paths["/dead-letters/replay"]["post"]["responses"]
    assert replay["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OperationReport"
    )
    assert replay["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobAccepted")
    assert "LetterFilter" in schema["components"]["schemas"]
    assert "DocumentFilter" in schema["components"]["schemas"]
