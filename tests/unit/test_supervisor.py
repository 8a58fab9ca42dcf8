"""The supervisor restarts a child that exits and stops everything on request."""

from __future__ import annotations

import threading
import time

from pipeline.local.supervisor import ChildSpec, Supervisor


def test_a_child_that_exits_is_restarted_and_stop_ends_all() -> None:
    lines: list[str] = []
    supervisor = Supervisor(
        [ChildSpec("quick", ["--help"]), ChildSpec("steady", ["reconciler", "--help"])],
        env={"PATH": "/usr/bin:/bin"},
        echo=lines.append,
        stop_timeout=5,
    )
    stop = threading.Event()
    supervisor.start()
    runner = threading.Thread(target=supervisor.run, args=(stop,), kwargs={"poll": 0.1})
    runner.start()
    deadline = time.monotonic() + 60  # two starts of `pipeline --help`: seconds each on a busy CI
    while time.monotonic() < deadline:
        if sum("[supervisor] quick exited" in line for line in lines) >= 2:
            break
        time.sleep(0.1)
    stop.set()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert sum("[supervisor] quick exited with code 0" in line for line in lines) >= 2
    assert any(line.startswith("[quick] Usage: python -m pipeline") for line in lines)
    assert supervisor.pids() == {"quick": None, "steady": None}
