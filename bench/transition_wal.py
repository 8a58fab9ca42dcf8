"""WAL written by each hot stage-transition statement, exactly.

    uv run python bench/transition_wal.py [--documents 30]

Timings on a shared 2-core machine swing by tens of percent; the WAL a statement writes
does not. Each statement (the claim, the success, and the fused claim-and-success of a
short stage) runs in a transaction of its own on a scratch database; its records are
read back with ``pg_waldump`` filtered on the transaction's id (so other databases'
writes on the same server do not count). Needs ``pg_waldump`` and read access to the
server's ``pg_wal`` directory (``--wal-dir``): a local server, as root or postgres.
Prints the median records and bytes per statement, and the record kinds of the last.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
from common import bench_env, scratch_database
from e2e import load_documents

from pipeline.engine import transitions
from pipeline.settings import Settings

LENGTH = re.compile(r"len \(rec/tot\):\s+\d+/\s*(\d+)")
KIND = re.compile(r"rmgr: (\S+)\s.*desc: (\S+)")


def run(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> tuple[int, str, str]:
    with conn.transaction():
        row = conn.execute(
            "SELECT pg_current_xact_id()::text::bigint, pg_current_wal_insert_lsn()::text"
        ).fetchone()
        assert row is not None
        conn.execute(sql, params)
    end = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert end is not None
    return int(row[0]), str(row[1]), str(end[0])


def records(waldump: str, wal_dir: str, xid: int, start: str, end: str) -> list[str]:
    args = [waldump, "-p", wal_dir, "-s", start, "-e", end, "-x", str(xid)]
    out = subprocess.run(args, capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.startswith("rmgr:")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=30)
    parser.add_argument("--waldump", default="/usr/lib/postgresql/15/bin/pg_waldump")
    parser.add_argument("--wal-dir", default="/var/lib/postgresql/15/main/pg_wal")
    options = parser.parse_args()
    with scratch_database("wal") as url:
        env = bench_env(url, f"bench-wal-{uuid.uuid4().hex[:6]}")
        load_documents(Settings.from_env(env), options.documents)
        runs: dict[str, list[tuple[int, str, str]]] = {"claim": [], "succeed": [], "fused": []}
        with psycopg.connect(url, autocommit=True) as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT document_id FROM stage_runs WHERE stage = 'validate'"
                )
            ]
            common = {"generation": 1, "grace": timedelta(minutes=10), "detail": "{}"}
            for document_id in ids:
                claim = {
                    **common,
                    "document_id": document_id,
                    "stage": "validate",
                    "deadline": timedelta(seconds=30),
                    "message_id": "m",
                    "worker": "w",
                    "abandoned": None,
                }
                runs["claim"].append(run(conn, transitions.CLAIM_SQL, claim))
                succeed = {
                    **common,
                    "document_id": document_id,
                    "stage": "validate",
                    "attempt": 1,
                    "fence": 1,
                    "duration_ms": 1,
                    "message_id": "m",
                    "next_stage": "extract",
                    "next_message_id": "n",
                }
                runs["succeed"].append(run(conn, transitions.SUCCEED_SQL, succeed))
                fused = {
                    **common,
                    "document_id": document_id,
                    "stage": "extract",
                    "duration_ms": 1,
                    "message_id": "n",
                    "worker": "w",
                    "claimed": "{}",
                    "next_message_id": "o",
                }
                runs["fused"].append(run(conn, transitions.CLAIM_AND_SUCCEED_SQL, fused))
    # (read after the database is gone: the WAL stays until the next checkpoints recycle it)
    for name, found in runs.items():
        # The first statements of a run carry full-page images after a checkpoint.
        measured = [records(options.waldump, options.wal_dir, *r) for r in found[5:]]
        count = statistics.median(len(m) for m in measured)
        size = statistics.median(
            sum(int(match.group(1)) for line in m if (match := LENGTH.search(line)))
            for m in measured
        )
        kinds = Counter(
            "/".join(found_kind.groups())
            for line in measured[-1]
            if (found_kind := KIND.search(line))
        )
        print(f"{name}: {count:.0f} WAL records, {size:.0f} bytes (median of {len(measured)})")
        print("    " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))


if __name__ == "__main__":
    main()
