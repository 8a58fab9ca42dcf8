"""Where the CPU goes during a benchmark run: workers, their Postgres backends, Redis.

Wall-clock profiles of a worker mostly show threads waiting; on a 2-core machine the
question is which process burns the cores. This reads ``/proc`` (Linux only): the CPU
time of every process in the workers' session, of the Postgres backends connected to
the run's scratch database, and of ``redis-server`` (shared with anything else that
uses it on the machine, so read it as an upper bound).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    workers: float
    postgres: float
    redis: float

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(
            self.workers - other.workers,
            self.postgres - other.postgres,
            self.redis - other.redis,
        )


def sample(session: int, database: str) -> CpuSample:
    """CPU seconds so far of the worker session, the database's backends, and Redis."""
    workers = postgres = redis = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # the process ended while we looked
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        if int(fields[3]) == session:  # fields[3] is the session id
            workers += seconds
        elif cmdline.startswith("postgres:") and f" {database} " in cmdline:
            postgres += seconds
        elif name == "redis-server":
            redis += seconds
    return CpuSample(workers, postgres, redis)


def per_document_ms(used: CpuSample, documents: int) -> dict[str, float]:
    return {
        "workers": used.workers * 1000 / documents,
        "postgres": used.postgres * 1000 / documents,
        "redis": used.redis * 1000 / documents,
    }
