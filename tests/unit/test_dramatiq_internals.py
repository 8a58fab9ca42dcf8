"""The Dramatiq internals the pipeline uses (``pipeline.dramatiq_internals``) are still
there and still mean what it assumes, in the installed Dramatiq release.

A failure here names the internal that moved: adapt ``dramatiq_internals.py`` to the
new release (and widen the ``dramatiq`` range in ``pyproject.toml`` only then).
"""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.worker import _WorkerThread

from pipeline.dramatiq_internals import (
    RedisConsumer,
    dispatch_lua,
    failure_of,
    nack,
    proxied_message,
)
from pipeline.wakeup import dispatch_script

ROOT = Path(__file__).resolve().parents[2]


def message() -> dramatiq.Message[object]:
    return dramatiq.Message(
        queue_name="validate", actor_name="validate", args=(), kwargs={}, options={}
    )


def test_the_redis_broker_builds_its_consumers_from_consumer_class() -> None:
    assert issubclass(RedisConsumer, dramatiq.Consumer), "_RedisConsumer is no Consumer"
    assert "def __next__" in inspect.getsource(RedisConsumer), "_RedisConsumer.__next__ moved"
    consume = inspect.getsource(RedisBroker.consume)
    assert "self.consumer_class(" in consume, "RedisBroker.consume no longer uses consumer_class"


def test_the_consumer_loop_the_wakeup_reimplements_is_still_dramatiqs() -> None:
    """``pipeline.broker._WakeableConsumer.__next__`` copies this loop, sleep aside."""
    loop = inspect.getsource(RedisConsumer.__next__)
    for part in (
        "self.message_cache.pop(0)",
        "self.misses = 0",
        "Message.decode(data)",
        "self.queued_message_ids.add(message.message_id)",
        "self.outstanding_message_count < self.prefetch",
        "self.broker.do_fetch(",
        "compute_backoff(self.misses, max_backoff=self.timeout)",
        "time.sleep(backoff_ms / 1000)",
    ):
        assert part in loop, f"_RedisConsumer.__next__ changed: no {part!r}"
    assert 'self.scripts["dispatch"]' in inspect.getsource(RedisBroker._dispatch), (
        "RedisBroker no longer runs its dispatch script from scripts['dispatch']"
    )


def test_the_wakeup_announcement_runs_after_every_command_of_the_script() -> None:
    """Appended statements run only if the script has no top-level return at its end,
    and they read the script's own locals."""
    source = dispatch_lua().decode()
    assert dispatch_script(dispatch_lua()).decode().startswith(source.rstrip())
    last = [line for line in source.splitlines() if line.strip()][-1]
    assert last == "end", f"dispatch.lua no longer ends its command chain last: {last!r}"
    for name in (
        "local namespace",
        "local command",
        "local queue_name",
        "local queue_full_name",
        "local do_maintenance",
    ):
        assert name in source, f"dispatch.lua has no {name!r}"
    assert 'redis.call("rpush", queue_full_name, message_id)' in source, (
        "dispatch.lua's enqueue no longer pushes onto queue_full_name"
    )


def test_the_redis_broker_still_dispatches_do_nack_to_its_lua_script() -> None:
    getattr_source = inspect.getsource(RedisBroker.__getattr__)
    assert 'startswith("do_")' in getattr_source, "RedisBroker no longer dispatches do_* names"
    script = Path(inspect.getfile(RedisBroker)).with_suffix("") / "dispatch.lua"
    assert re.search(r'command\s*==\s*"nack"', script.read_text()), "the Lua script has no nack"
    calls: list[tuple[str, ...]] = []

    class Recording(RedisBroker):
        def _dispatch(self, command: str) -> object:
            return lambda *args: calls.append((command, *args))

    broker = Recording.__new__(Recording)  # no connection: only the dispatch is checked
    nack(broker, "validate", "redis-id")
    assert calls == [("nack", "validate", "redis-id")]


def test_a_proxy_holds_its_message_and_the_workers_failure() -> None:
    original = message()
    proxy = MessageProxy(original)
    assert proxied_message(proxy) is original, "MessageProxy._message is gone"
    assert failure_of(proxy) is None
    error = RuntimeError("boom")
    proxy.stuff_exception(error)
    assert failure_of(proxy) is error, "stuff_exception no longer sets _exception"
    # The worker thread is what stores the failure before the message is nacked.
    assert "stuff_exception" in inspect.getsource(_WorkerThread), (
        "Dramatiq's worker no longer records a message's failure with stuff_exception"
    )


def test_the_supported_range_is_the_tested_one() -> None:
    """``pyproject.toml`` admits only the minor release this test ran against."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = next(d for d in project["dependencies"] if d.startswith("dramatiq"))
    installed = tuple(int(part) for part in metadata.version("dramatiq").split(".")[:2])
    lower = re.search(r">=\s*(\d+)\.(\d+)", spec)
    upper = re.search(r"<\s*(\d+)\.(\d+)", spec)
    assert lower, f"dramatiq needs a lower bound: {spec!r}"
    assert upper, f"dramatiq needs an upper bound: {spec!r}"
    low, high = (int(lower[1]), int(lower[2])), (int(upper[1]), int(upper[2]))
    assert low <= installed < high, f"installed dramatiq {installed} is outside {spec!r}"
    assert high == (installed[0], installed[1] + 1), (
        f"{spec!r} admits releases after {installed[0]}.{installed[1]} that this test "
        "has not covered"
    )
