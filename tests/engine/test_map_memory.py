"""map()/starmap() pickle their input a bounded amount ahead of the finished
chunks (as the standard library pickles as it sends), so the pickled input
never all sits in the parent beside the results (issue 18; the peak is
measured by benchmarks/bench_memory.py)."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

import poolx
from poolx.engine import api, payload, supervisor
from tests.conftest import wait_until
from tests.engine import helpers


@pytest.fixture
def pool():
    p = poolx.Pool(2, context=multiprocessing.get_context("fork"))
    yield p
    p.terminate()
    p.join()




def test_map_keeps_a_bounded_amount_of_pickled_input_ahead(pool, tmp_path):
    gate = str(tmp_path / "gate")
    size = api.MAP_PICKLED_AHEAD // 4  # so the bound is the 2-chunks-per-worker minimum: 4
    items = [(gate, b"x" * size)] * 40
    out = []
    caller = threading.Thread(target=lambda: out.append(pool.starmap(helpers.gated_len, items, chunksize=1)))
    caller.start()
    wait_until(timeout=30, predicate=lambda: pool.stats()["submitted"] >= 4)
    for _ in range(3):  # supervisor rounds: a submitter not bounded would have sent more by now
        assert pool.stats()["submitted"] <= 5
    with open(gate, "w"):
        pass
    caller.join(60)
    assert out == [[size] * 40]


def test_every_item_of_a_failed_map_still_runs_once(pool, tmp_path):
    log = str(tmp_path / "log")
    padding = b"x" * (api.MAP_PICKLED_AHEAD // 4)  # so that the submission is bounded
    with pytest.raises(ValueError, match="^boom$"):
        pool.starmap(helpers.logged_then_boom, [(log, i, padding) for i in range(40)], chunksize=1)
    wait_until(timeout=30, predicate=lambda: len(helpers.logged_runs(log)) == 40)
    assert pool.apply(helpers.square, (2,)) == 4
    assert set(helpers.logged_runs(log).values()) == {1}


def test_map_results_unchanged(pool):
    data = list(range(10_000))
    assert pool.map(helpers.square, data) == [x * x for x in data]
    assert pool.map(helpers.square, data, chunksize=1) == [x * x for x in data]
    assert pool.map(helpers.square, range(1001), 7) == [x * x for x in range(1001)]
    assert pool.map(helpers.square, {3: 0, 1: 0}) == [9, 1]
    assert pool.starmap(helpers.add, iter([(1, 2), (3, 4)])) == [3, 7]
    assert pool.map(helpers.square, []) == []


def test_large_arguments_are_dropped_once_the_job_started(pool, tmp_path):
    gate = str(tmp_path / "gate")
    big = pool.apply_async(helpers.gated_len, (gate, b"x" * payload.RELEASE_ON_START))
    small = pool.apply_async(helpers.gated_len, (gate, b"x"))

    def payloads(sup):
        return sorted((job.payload is None, job.state.value) for h in sup.workers for job in h.jobs.values())

    # The small job was sent without asking for an acknowledgement: it keeps its arguments.
    wait_until(timeout=30, predicate=lambda: pool._supervisor.call(payloads) == [(False, "sent"), (True, "accepted")])
    with open(gate, "w"):
        pass
    assert (big.get(30), small.get(30)) == (payload.RELEASE_ON_START, 1)


def test_apply_async_pickles_late_beyond_the_waiting_window(fork_ctx, tmp_path, monkeypatch):
    """Issue 18: a burst of apply_async held one pickle per job (100k jobs of
    one shared 10 KB argument: 1 GB); beyond EAGER_BYTES of pickled
    arguments waiting to be sent, a job keeps its call until it is dispatched."""
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 50_000)
    gate = str(tmp_path / "gate")
    arg = b"a" * 10_000
    with poolx.Pool(1, context=fork_ctx, shm_threshold=None) as pool:
        first = pool.apply_async(helpers.gated_len, (gate, b"x"))
        results = [pool.apply_async(helpers.gated_len, (gate, arg)) for _ in range(200)]
        waiting = pool._supervisor.call(lambda sup: sup.waiting_bytes)
        assert 50_000 <= waiting < 50_000 + 64 * 10_200  # at most a prefetch beyond the window, not 2 MB
        with open(gate, "w"):
            pass
        assert first.get(60) == 1 and [r.get(60) for r in results] == [10_000] * 200
        assert pool._supervisor.call(lambda sup: sup.waiting_bytes) == 0


def test_an_argument_pickled_late_fails_its_job_as_the_standard_library_does(fork_ctx, tmp_path, monkeypatch):
    """The standard library pickles in its task thread: an unpicklable
    argument fails that job (get() raises what pickle raised, the
    error_callback gets it) and the pool goes on; so does a late pickle."""
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 0)  # every call is pickled late
    gate = str(tmp_path / "gate")
    errors: list = []
    with poolx.Pool(1, context=fork_ctx) as pool:
        first = pool.apply_async(helpers.gated_len, (gate, b"x"))
        bad = pool.apply_async(helpers.gated_len, (gate, threading.Lock()), error_callback=errors.append)
        after = pool.apply_async(helpers.gated_len, (gate, b"yy"))
        with open(gate, "w"):
            pass
        with pytest.raises(TypeError, match="pickle"):
            bad.get(60)
        assert (first.get(60), after.get(60)) == (1, 2)
        assert len(errors) == 1 and isinstance(errors[0], TypeError)
        assert pool._supervisor.call(lambda sup: sup.snapshot()["failed"]) == 1  # it failed there, not here
    with multiprocessing.get_context("fork").Pool(1) as std:  # the same error, from the same place
        with pytest.raises(TypeError, match="pickle"):
            std.apply_async(len, (threading.Lock(),)).get(60)


def test_an_argument_pickled_late_that_fails_never_counts_as_started(fork_ctx, monkeypatch):
    """The task tally counts a task that never started nowhere (poolx.tally):
    a job whose late pickle failed never reached a worker."""
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 0)
    with poolx.Pool(1, context=fork_ctx) as pool:
        bad = pool.apply_async(helpers.gated_len, ("unused", threading.Lock()))
        with pytest.raises(TypeError, match="pickle"):
            bad.get(60)
        tasks = pool.stats()["tasks"]
    name = f"{helpers.gated_len.__module__}.gated_len"
    assert tasks.get(name, {"started": 0, "failed": {"error": 0}})["started"] == 0
    assert tasks.get(name, {"failed": {"error": 0}})["failed"]["error"] == 0
