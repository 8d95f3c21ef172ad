"""``MicroBatcher`` on its own: no HTTP, no model — a fake ``predict_proba`` that records its batches.

Batches here are closed by size, never by the clock: the window is ten seconds long, so which requests
share a batch does not depend on how fast this machine is. A scenario that hangs (a lost request, a
waiter never told) fails on the overall timeout instead of blocking the run.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from textxfer.data.shape import SINGLE
from textxfer.serving.batching import MicroBatcher

LONG_WINDOW_MS = 10_000  # the most serve allows; never waited out: every batch below fills up or batching is off
SCENARIO_TIMEOUT_S = 20


def row(text: str) -> list[float]:
    """The fake model's probabilities for ``text`` ("t3" → [0.3, 0.7]): different for every text."""
    p = int(text[1:]) / 10
    return [p, 1 - p]


class FakeModel:
    """``predict_proba`` over numpy that records every batch it is given; fails on any text in ``fail_on``."""

    shape = SINGLE  # a model of single texts, as the server checks

    def __init__(self, fail_on: frozenset[str] = frozenset()) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def predict_proba(self, texts):
        with self._lock:
            self.batches.append(list(texts))
        bad = sorted(self.fail_on.intersection(texts))
        if bad:
            raise ValueError(f"cannot predict {bad[0]}")
        return np.array([row(t) for t in texts])


def run(scenario) -> object:
    async def bounded():
        return await asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S)

    return asyncio.run(bounded())


async def submit_together(batcher: MicroBatcher, requests: list[list[str]], return_exceptions: bool = False):
    """Submit ``requests`` concurrently, queued in this order; their results in the same order."""
    return await asyncio.gather(*(batcher.submit(texts) for texts in requests), return_exceptions=return_exceptions)


def assert_answers(requests, results) -> None:
    assert len(results) == len(requests)
    for texts, got in zip(requests, results):
        np.testing.assert_array_equal(got, np.array([row(t) for t in texts]))


def test_a_request_that_does_not_fit_is_carried_whole_into_the_next_batch():
    model = FakeModel()
    requests = [["t0", "t1", "t2"], ["t3", "t4"], ["t5", "t6"]]

    async def scenario():
        batcher = MicroBatcher(model.predict_proba, max_batch_size=4, window_ms=LONG_WINDOW_MS)
        await batcher.start()
        results = await submit_together(batcher, requests)
        await batcher.stop()
        return results, batcher.stats

    results, stats = run(scenario)
    # 3 + 2 > 4: the second request is not split and not dropped; it opens the next batch, which the
    # third request (2 more texts) fills to exactly 4.
    assert model.batches == [["t0", "t1", "t2"], ["t3", "t4", "t5", "t6"]]
    assert_answers(requests, results)
    assert stats == {"batches": 2, "texts": 7, "largest_batch": 4}


def test_a_request_larger_than_the_batch_size_is_predicted_whole_and_alone():
    model = FakeModel()
    requests = [["t0"], ["t1", "t2", "t3"], ["t4", "t5"]]

    async def scenario():
        batcher = MicroBatcher(model.predict_proba, max_batch_size=2, window_ms=LONG_WINDOW_MS)
        await batcher.start()
        results = await submit_together(batcher, requests)
        await batcher.stop()
        return results

    results = run(scenario)
    assert model.batches == [["t0"], ["t1", "t2", "t3"], ["t4", "t5"]]
    assert_answers(requests, results)


def test_a_failing_batch_fails_every_waiter_and_the_batcher_keeps_working():
    model = FakeModel(fail_on=frozenset({"t1"}))
    failing = [["t0"], ["t1"], ["t2", "t3"]]
    later = [["t4", "t5"], ["t6"], ["t7"]]

    async def scenario():
        batcher = MicroBatcher(model.predict_proba, max_batch_size=4, window_ms=LONG_WINDOW_MS)
        await batcher.start()
        errors = await submit_together(batcher, failing, return_exceptions=True)
        results = await submit_together(batcher, later)
        await batcher.stop()
        return errors, results

    errors, results = run(scenario)
    assert model.batches == [["t0", "t1", "t2", "t3"], ["t4", "t5", "t6", "t7"]]
    # Every request of the failed batch gets the error, not only the one with the bad text.
    assert [type(e) for e in errors] == [ValueError] * 3
    assert [str(e) for e in errors] == ["cannot predict t1"] * 3
    assert_answers(later, results)


@pytest.mark.parametrize("flags, batches", [
    ([], [["t0", "t1", "t2", "t3"]]),
    (["--no-batching"], [["t0"], ["t1", "t2"], ["t3"]]),
], ids=["batching", "no-batching"])
def test_serve_no_batching_flag_predicts_every_request_alone(monkeypatch, flags, batches):
    """``textxfer serve --no-batching`` → ``ServeSettings`` → the app's batcher, with a fake model."""
    from textxfer import cli
    from textxfer.serving import server

    captured = {}
    monkeypatch.setattr(server, "serve", lambda settings, **_: captured.setdefault("settings", settings))
    assert cli.main(["serve", "--model", "unused", "--max-batch-size", "4",
                     "--batch-window-ms", str(LONG_WINDOW_MS), *flags]) == 0
    settings = captured["settings"]
    assert settings.batching is ("--no-batching" not in flags)

    model = FakeModel()
    monkeypatch.setattr(server, "load", lambda *_: model)
    monkeypatch.setattr(server, "model_info", lambda *_: {"kind": "fake"})
    batcher = server.create_app(settings).state.batcher
    requests = [["t0"], ["t1", "t2"], ["t3"]]

    async def scenario():
        await batcher.start()
        results = await submit_together(batcher, requests)
        await batcher.stop()
        return results

    results = run(scenario)
    assert model.batches == batches
    assert_answers(requests, results)
