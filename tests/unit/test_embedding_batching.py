"""Shared model calls (``pipeline.embedding.batching``): concurrent requests share a call,
each gets exactly its own vectors, a failure stays with its request, and a waiting
caller can still be interrupted (as Dramatiq's time limit interrupts it)."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Iterator, Sequence

import pytest
from prometheus_client import REGISTRY

from pipeline.embedding.batching import SharedBatches
from pipeline.monitoring.metrics import EmbedMetrics


class Model:
    """A fake model: a text's vector is ``[len(text), first letter's code]``; it records
    each call, can be held inside a call, and raises on any text ``"poison"``."""

    name = "fake"
    dimensions = 2
    semantic = True

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.inside = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.short_by = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        self.inside.set()
        assert self.release.wait(10)
        if "poison" in texts:
            raise ValueError("the model cannot read 'poison'")
        return [[float(len(text)), float(ord(text[0]))] for text in texts][
            : len(texts) - self.short_by
        ]


def vector(text: str) -> list[float]:
    return [float(len(text)), float(ord(text[0]))]


class Calls:
    """Runs ``embed`` calls in threads and collects what each got back (or raised)."""

    def __init__(self, batches: SharedBatches) -> None:
        self.batches = batches
        self.results: dict[str, list[list[float]] | BaseException] = {}
        self.threads: dict[str, threading.Thread] = {}

    def start(self, key: str, texts: list[str]) -> threading.Thread:
        def run() -> None:
            try:
                self.results[key] = self.batches.embed(texts)
            except BaseException as error:
                self.results[key] = error

        thread = threading.Thread(target=run, name=key)
        self.threads[key] = thread
        thread.start()
        return thread

    def behind_a_busy_model(self, model: Model, *requests: tuple[str, list[str]]) -> None:
        """Hold the model inside a call for ``["a"]`` (key ``first``), then queue
        ``requests`` one after another behind it."""
        model.release.clear()
        model.inside.clear()
        self.start("first", ["a"])
        assert model.inside.wait(10)
        for number, (key, texts) in enumerate(requests, 1):
            self.start(key, texts)
            wait_for_queue(self.batches, number)

    def join(self) -> None:
        for thread in self.threads.values():
            thread.join(10)
            assert not thread.is_alive(), f"{thread.name} never got an answer"


@pytest.fixture
def model() -> Model:
    return Model()


@pytest.fixture
def batches(model: Model) -> Iterator[SharedBatches]:
    shared = SharedBatches(model, max_texts=8)
    yield shared
    model.release.set()
    shared.close()


def wait_for_queue(batches: SharedBatches, requests: int) -> None:
    deadline = threading.Event()
    for _ in range(1000):
        if len(batches._pending) >= requests:
            return
        deadline.wait(0.01)
    raise AssertionError(f"{requests} requests never queued")


def test_a_request_alone_runs_at_once_and_keeps_the_model_s_identity(
    model: Model, batches: SharedBatches
) -> None:
    assert (batches.name, batches.dimensions, batches.semantic) == ("fake", 2, True)
    assert batches.embed(["one", "three"]) == [vector("one"), vector("three")]
    assert batches.embed([]) == []
    assert model.calls == [["one", "three"]]


def test_requests_queued_while_the_model_is_busy_share_its_next_call(
    model: Model, batches: SharedBatches
) -> None:
    calls = Calls(batches)
    calls.behind_a_busy_model(model, ("b", ["b1", "b22"]), ("c", ["c333"]))
    calls.start("d", ["d1", "d22", "d333"])
    wait_for_queue(batches, 3)
    model.release.set()
    calls.join()
    assert model.calls == [["a"], ["b1", "b22", "c333", "d1", "d22", "d333"]]
    assert calls.results == {
        "first": [vector("a")],
        "b": [vector("b1"), vector("b22")],
        "c": [vector("c333")],
        "d": [vector("d1"), vector("d22"), vector("d333")],
    }


def test_calls_are_filled_to_max_texts_splitting_a_request_across_calls(
    model: Model, batches: SharedBatches
) -> None:
    calls = Calls(batches)
    calls.behind_a_busy_model(
        model,
        *[(key, [f"{key}{i}" for i in range(3)]) for key in "bcd"],  # 3 texts each, cap 8
        ("big", [f"z{i:02}" for i in range(12)]),  # larger than a call on its own
    )
    model.release.set()
    calls.join()
    assert model.calls == [
        ["a"],
        ["b0", "b1", "b2", "c0", "c1", "c2", "d0", "d1"],  # d split: its rest goes first
        ["d2", "z00", "z01", "z02", "z03", "z04", "z05", "z06"],
        ["z07", "z08", "z09", "z10", "z11"],
    ]
    assert calls.results["d"] == [vector(f"d{i}") for i in range(3)]
    assert calls.results["big"] == [vector(f"z{i:02}") for i in range(12)]


def test_a_request_larger_than_a_call_alone_is_embedded_in_calls_of_max_texts(
    model: Model, batches: SharedBatches
) -> None:
    texts = [f"t{i:02}" for i in range(19)]
    assert batches.embed(texts) == [vector(text) for text in texts]
    assert [len(call) for call in model.calls] == [8, 8, 3]


def test_a_shared_call_that_fails_fails_only_the_request_whose_input_broke_it(
    model: Model, batches: SharedBatches
) -> None:
    calls = Calls(batches)
    calls.behind_a_busy_model(
        model, ("good", ["good"]), ("bad", ["fine", "poison"]), ("also", ["also"])
    )
    model.release.set()
    calls.join()
    # The shared call failed, then each request's part was run alone.
    assert model.calls[1] == ["good", "fine", "poison", "also"]
    assert model.calls[2:] == [["good"], ["fine", "poison"], ["also"]]
    assert calls.results["good"] == [vector("good")]
    assert calls.results["also"] == [vector("also")]
    error = calls.results["bad"]
    assert isinstance(error, ValueError)
    assert "poison" in str(error)


def test_a_model_that_returns_too_few_vectors_is_an_error_not_a_shifted_answer(
    model: Model, batches: SharedBatches
) -> None:
    model.short_by = 1
    with pytest.raises(RuntimeError, match="returned 1 vectors for 2 texts"):
        batches.embed(["a", "b"])


class Interrupted(Exception):
    """Raised asynchronously in a waiting thread, as Dramatiq raises TimeLimitExceeded."""


def interrupt(thread: threading.Thread) -> None:
    assert thread.ident is not None
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(Interrupted)
    )
    assert done == 1


def test_a_caller_interrupted_while_it_waits_is_left_out_of_the_next_call(
    model: Model, batches: SharedBatches
) -> None:
    calls = Calls(batches)
    calls.behind_a_busy_model(model, ("late", ["late"]), ("kept", ["kept"]))
    waiting = calls.threads["late"]
    interrupt(waiting)
    waiting.join(10)
    assert isinstance(calls.results["late"], Interrupted)  # its wait ended at once
    model.release.set()
    calls.join()
    assert model.calls == [["a"], ["kept"]]
    assert calls.results["kept"] == [vector("kept")]


def test_several_callers_run_calls_at_once(model: Model) -> None:
    shared = SharedBatches(model, max_texts=8, callers=2)
    calls = Calls(shared)
    model.release.clear()
    model.inside.clear()
    try:
        calls.start("one", ["one"])
        assert model.inside.wait(10)  # the first caller is busy with it
        calls.start("two", ["two"])
        for _ in range(500):  # the second caller takes it: two calls at once
            if len(model.calls) == 2:
                break
            threading.Event().wait(0.01)
        assert model.calls == [["one"], ["two"]]
        model.release.set()
        calls.join()
        assert calls.results == {"one": [vector("one")], "two": [vector("two")]}
    finally:
        model.release.set()
        shared.close()


def test_the_rest_of_a_split_request_goes_to_an_idle_caller_at_once(model: Model) -> None:
    shared = SharedBatches(model, max_texts=4, callers=2)
    calls = Calls(shared)
    try:
        assert shared.embed(["warm"]) == [vector("warm")]  # both callers started, idle
        threading.Event().wait(0.1)  # and waiting for work
        model.calls.clear()
        model.release.clear()
        calls.start("big", [f"t{i}" for i in range(8)])
        for _ in range(500):  # the second caller takes the second half while the first runs
            if len(model.calls) == 2:
                break
            threading.Event().wait(0.01)
        assert sorted(model.calls) == [["t0", "t1", "t2", "t3"], ["t4", "t5", "t6", "t7"]]
        model.release.set()
        calls.join()
        assert calls.results["big"] == [vector(f"t{i}") for i in range(8)]
    finally:
        model.release.set()
        shared.close()


def test_a_closed_batcher_refuses_new_requests(model: Model) -> None:
    shared = SharedBatches(model, max_texts=4)
    assert shared.embed(["x"]) == [vector("x")]
    shared.close()
    with pytest.raises(RuntimeError, match="closed"):
        shared.embed(["y"])


def test_a_forked_child_starts_its_own_inference_thread(
    model: Model, batches: SharedBatches
) -> None:
    assert batches.embed(["parent"]) == [vector("parent")]  # the parent's thread runs
    child = os.fork()
    if child == 0:  # the child has no inference thread until it asks
        signal.alarm(10)  # a child left waiting for a thread it never started dies
        code = 0 if batches.embed(["child"]) == [vector("child")] else 1
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(("max_texts", "callers"), [(0, 1), (1, 0)])
def test_limits_below_one_are_refused(model: Model, max_texts: int, callers: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SharedBatches(model, max_texts=max_texts, callers=callers)


class BrokenObserver:
    def observe_call(self, requests: int, texts: int, seconds: float) -> None:
        raise RuntimeError("the metrics store is gone")


def test_a_failing_observer_loses_a_sample_not_an_answer(model: Model) -> None:
    shared = SharedBatches(model, max_texts=4, observer=BrokenObserver())
    try:
        assert shared.embed(["x"]) == [vector("x")]
        assert shared.embed(["yy"]) == [vector("yy")]  # the inference thread lives on
    finally:
        shared.close()


def test_the_process_s_metrics_are_shared_by_every_batcher(model: Model) -> None:
    first = SharedBatches(model, max_texts=4, observer=EmbedMetrics())
    second = SharedBatches(model, max_texts=4, observer=EmbedMetrics())
    try:
        before = REGISTRY.get_sample_value("pipeline_embed_call_requests_count") or 0.0
        first.embed(["a"])
        second.embed(["b", "c"])
        assert REGISTRY.get_sample_value("pipeline_embed_call_requests_count") == before + 2
    finally:
        first.close()
        second.close()


def test_the_rest_of_a_failed_request_is_not_embedded(model: Model) -> None:
    shared = SharedBatches(model, max_texts=2)
    try:
        with pytest.raises(ValueError, match="poison"):
            shared.embed(["ok", "poison", "never", "sent"])
        assert model.calls == [["ok", "poison"]]  # its later part was dropped from the queue
        assert shared.embed(["next"]) == [vector("next")]
        assert model.calls[-1] == ["next"]
    finally:
        shared.close()
