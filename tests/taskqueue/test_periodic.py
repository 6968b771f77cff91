"""Periodic tasks (poolx, beyond WorQ), checked on every backend URL
(``memory://``, ``redis://``, ``redis+cluster://``) through thread
WorkerPools started with ``scheduler=True``.

Runs are recorded by wrapping ``broker.invoke`` (a thread pool looks it up at
each call): every run's task id is ``<entry>@<due ms>``, so a test sees which
tick each run was and can assert that no tick ran twice and none was skipped.
Timing follows the delayed tasks' rule: never before the due time, after it
only within a generous bound (a loaded CI machine).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import pytest

from poolx import Retry, Task, TaskSpace, get_broker
from poolx.consumer.scheduler import Scheduler
from poolx.core import register_backend
from poolx.exceptions import ExtraNotInstalled
from poolx.periodic import Schedule
from poolx.pool.thread import WorkerPool
from poolx.queue.base import AbstractTaskQueue
from poolx.queue.registry import registry
from poolx.task import TaskExpired
from tests.conftest import wait_until

from .helpers import WAIT

LATE = 2.0
"""How late after its due time a tick may run here (the scheduler waits for
the exact time; this bound only has to hold on a loaded CI machine)."""
PERIOD = 0.2

space = TaskSpace("pt")
flaky_calls: dict[str, int] = {}


@space.task
def tick(*args: Any, **kw: Any) -> None:
    """A periodic run (its arguments are recorded by the invoke wrapper)."""


@space.task
def flaky(key: str) -> str:
    flaky_calls[key] = flaky_calls.get(key, 0) + 1
    if flaky_calls[key] % 2:
        raise ConnectionError(key)
    return key


class Ticks:
    """Every run of every entry: (entry, due time, ran at, args, kwargs)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, float, float, tuple, dict]] = []
        self._cond = threading.Condition()

    def watch(self, broker: Any) -> Any:
        real = broker.invoke

        def invoke(task: Any, **kw: Any) -> Any:
            entry, at, due_ms = task.id.rpartition("@")
            if at:  # not the pool's stop sentinels
                with self._cond:
                    self.runs.append((entry, int(due_ms) / 1000, time.time(), task.args, task.kw))
                    self._cond.notify_all()
            return real(task, **kw)

        broker.invoke = invoke
        return broker

    def of(self, entry: str) -> list[tuple[str, float, float, tuple, dict]]:
        with self._cond:
            return [run for run in self.runs if run[0] == entry]

    def wait_for(self, entry: str, count: int, timeout: float = WAIT) -> list[Any]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.of(entry)) >= count, timeout), self.runs
            return self.of(entry)


def _broker(url: str, ticks: Ticks) -> Any:
    broker = get_broker(url)
    broker.expose(space, replace=True)
    return ticks.watch(broker)


@contextmanager
def scheduling(broker: Any, workers: int = 1) -> Iterator[WorkerPool]:
    pool = WorkerPool(broker, workers=workers, scheduler=True)
    pool.start(timeout=0.5)
    try:
        yield pool
    finally:
        pool.stop(use_sentinel=True)


def assert_on_grid(runs: list[Any], period: float) -> None:
    """One run per tick, none skipped: consecutive due times one period
    apart (to the millisecond the ids carry), each run at or after its tick."""
    dues = [due for _, due, _, _, _ in runs]
    assert len(set(dues)) == len(dues), f"a tick ran twice: {dues}"
    dues.sort()
    for before, after in pairwise(dues):
        assert after - before == pytest.approx(period, abs=0.0015), dues
    for _, due, ran, _, _ in runs:
        assert due <= ran < due + LATE


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


def test_every_enqueues_each_tick_once_on_its_grid(url, ticks):
    broker = _broker(url, ticks)
    q = broker.queue()
    start = time.time()
    assert broker.periodic(q.pt.tick, every=PERIOD, args=(1, 2), kwargs={"k": "v"},
                           name="grid") == "grid"
    with scheduling(broker):
        runs = ticks.wait_for("grid", 5)
    assert_on_grid(runs, PERIOD)
    assert runs[0][1] == pytest.approx(start + PERIOD, abs=0.1)  # the first: one period on
    assert all(args == (1, 2) and kw == {"k": "v"} for _, _, _, args, kw in runs)


def test_the_entry_name_defaults_to_the_task_name_and_tasks_may_be_named(url, ticks):
    broker = _broker(url, ticks)
    assert broker.periodic("pt.tick", every=60) == "pt.tick"
    assert broker.periodic(Task(broker.queue().pt.tick, timeout=5), every=60) == "pt.tick"
    [entry] = broker.periodic_entries()
    assert (entry.name, entry.task, entry.schedule) == ("pt.tick", "pt.tick", "every 60")


def test_two_schedulers_race_for_ticks_no_duplicate_no_gap(url, ticks):
    """The short version of the soak test: two pools with a scheduler each
    on one queue, a tick every 0.2 s for two seconds."""
    one, two = _broker(url, ticks), _broker(url, ticks)
    one.periodic(one.queue().pt.tick, every=PERIOD, name="race")
    with scheduling(one), scheduling(two):
        runs = ticks.wait_for("race", 10)
    assert_on_grid(ticks.of("race"), PERIOD)
    assert len(runs) >= 10


def test_registering_a_name_again_updates_the_entry(url, ticks):
    broker = _broker(url, ticks)
    q = broker.queue()
    broker.periodic(q.pt.tick, every=PERIOD, args=("old",), name="upd")
    [before] = broker.periodic_entries()
    # Same schedule: the next run is kept (a program registering at every start).
    assert broker.periodic(q.pt.tick, every=PERIOD, args=("new",), name="upd") == "upd"
    [after] = broker.periodic_entries()
    assert after.next_run == before.next_run and after.version != before.version
    with scheduling(broker):
        runs = ticks.wait_for("upd", 2)
    assert [args for _, _, _, args, _ in runs[:2]] == [("new",), ("new",)]
    # A new schedule starts afresh.
    broker.periodic(q.pt.tick, every=3600, name="upd")
    [hourly] = broker.periodic_entries()
    assert hourly.schedule == "every 3600" and hourly.next_run > time.time() + 3000


def test_unperiodic_stops_the_ticks_and_says_whether_the_entry_existed(url, ticks):
    broker = _broker(url, ticks)
    q = broker.queue()
    broker.periodic(q.pt.tick, every=PERIOD, name="gone")
    broker.periodic(q.pt.tick, every=PERIOD, name="marker")
    with scheduling(broker):
        ticks.wait_for("gone", 2)
        assert broker.unperiodic("gone") is True
        removed_at = time.time()
        count = len(ticks.of("gone"))
        marks = len(ticks.of("marker"))
        ticks.wait_for("marker", marks + 3)  # three more periods pass
        assert len(ticks.of("gone")) <= count + 1  # at most a tick claimed before the removal
        assert all(due < removed_at for _, due, _, _, _ in ticks.of("gone"))
    assert broker.unperiodic("gone") is False
    assert [entry.name for entry in broker.periodic_entries()] == ["marker"]


def test_a_new_entry_wakes_a_waiting_scheduler(url, ticks):
    """A scheduler waiting for an hourly tick is woken by an entry that is
    due sooner (not at its next re-read: redis:// re-reads every 5 s)."""
    broker = _broker(url, ticks)
    q = broker.queue()
    broker.periodic(q.pt.tick, every=3600, name="hourly")
    with scheduling(broker) as pool:
        wait_until(lambda: pool.scheduler is not None and _waiting(broker), WAIT)
        start = time.time()
        broker.periodic(q.pt.tick, every=0.1, name="soon")
        [(_, due, ran, _, _)] = ticks.wait_for("soon", 1)
    assert ran - start < 1.5


def _waiting(broker: Any) -> bool:
    """Has a scheduler read the entries (so it waits now, or is about to)?"""
    store = broker.taskqueue
    client = getattr(store, "client", None)
    if client is None:
        return bool(store._woken)
    return bool(client.zcard(store._key + "pwatch"))


def test_missed_ticks_are_not_replayed(url, ticks):
    """No scheduler ran for six periods: one catch-up run, then the grid."""
    broker = _broker(url, ticks)
    broker.periodic(broker.queue().pt.tick, every=PERIOD, name="late")
    [entry] = broker.periodic_entries()
    wait_until(lambda: time.time() > entry.next_run + 5 * PERIOD, WAIT)
    started = time.time()
    with scheduling(broker):
        runs = ticks.wait_for("late", 3)
    first, second, third = (due for _, due, _, _, _ in runs[:3])
    assert first == pytest.approx(entry.next_run, abs=0.001)  # the missed tick, once
    assert second > started  # the next one in the future: the rest were skipped
    assert second - first == pytest.approx(round((second - first) / PERIOD) * PERIOD, abs=0.002)
    assert third - second == pytest.approx(PERIOD, abs=0.002)


def test_periodic_runs_take_task_options(url, ticks):
    """A Retry policy (and any Task option) applies to every run."""
    broker = _broker(url, ticks)
    key = f"flaky-{id(ticks)}"
    broker.periodic(broker.queue().pt.flaky, every=1, args=(key,), name="retried",
                    retry=Retry(max=1, delay=0.01, jitter=False), timeout=30)
    with scheduling(broker):
        runs = ticks.wait_for("retried", 2)
    # The first tick's run failed and ran again at once, not a period later.
    assert runs[0][1] == runs[1][1] and runs[1][2] - runs[0][2] < 0.9
    assert flaky_calls[key] >= 2


def test_runs_ignore_their_results_unless_asked(url, ticks):
    broker = _broker(url, ticks)
    q = broker.queue()
    broker.periodic(q.pt.tick, every=PERIOD, name="kept", ignore_result=False)
    broker.periodic(q.pt.tick, every=PERIOD, name="timed", result_timeout=60)
    broker.periodic(q.pt.tick, every=PERIOD, name="ignored")
    with scheduling(broker):
        runs = {name: ticks.wait_for(name, 1)[0] for name in ("kept", "timed", "ignored")}
        stub = {name: type("Run", (), {"id": f"{name}@{round(run[1] * 1000)}", "name": "pt.tick"})
                for name, run in runs.items()}
        for name in ("kept", "timed"):
            assert broker.pop_result(stub[name], timeout=WAIT) is None  # stored, and read
    with pytest.raises(TaskExpired):
        broker.pop_result(stub["ignored"], timeout=0)  # never stored


@pytest.mark.parametrize(
    "kw, error",
    [
        ({}, "give every= .seconds. or cron="),
        ({"every": 1, "cron": "* * * * *"}, "not both"),
        ({"every": 0}, "every must be a positive number of seconds"),
        ({"cron": "not a cron"}, "invalid cron expression"),
        ({"every": 1, "id": "x"}, "takes no id"),
        ({"every": 1, "delay": 5}, "takes no delay"),
        ({"every": 1, "name": ""}, "invalid periodic entry name"),
        ({"every": 1, "on_error": "nope"}, "invalid on_error"),
    ],
)
def test_invalid_periodic_entries_are_refused(url, kw, error):
    broker = get_broker(url)
    with pytest.raises(ValueError, match=error):
        broker.periodic(broker.queue().pt.tick, **kw)
    assert broker.periodic_entries() == []


def test_deferred_arguments_are_refused(url, ticks):
    broker = _broker(url, ticks)
    result = broker.queue().pt.tick()
    with pytest.raises(ValueError, match="Deferred"):
        broker.periodic(broker.queue().pt.tick, every=1, args=(result,))
    assert broker.periodic_entries() == []


def test_cron_without_croniter_names_the_extra(url, monkeypatch):
    monkeypatch.setitem(sys.modules, "croniter", None)
    broker = get_broker(url)
    with pytest.raises(ExtraNotInstalled) as caught:
        broker.periodic(broker.queue().pt.tick, cron="*/5 * * * *")
    assert caught.value.extra == "cron" and "pip install 'poolx[cron]'" in str(caught.value)


def test_cron_entries_run_at_the_expressions_times(url, ticks):
    """A six-field expression (croniter's seconds field): every second."""
    croniter = pytest.importorskip("croniter").croniter
    broker = _broker(url, ticks)
    before = time.time()
    broker.periodic(broker.queue().pt.tick, cron="* * * * * *", name="cron")
    after = time.time()
    [entry] = broker.periodic_entries()
    assert entry.schedule == "cron * * * * * *"
    assert entry.next_run in {croniter("* * * * * *", when).get_next(float) for when in (before, after)}
    with scheduling(broker):
        runs = ticks.wait_for("cron", 2)
    assert_on_grid(runs, 1.0)
    assert all(due == int(due) for _, due, _, _, _ in runs)  # on whole seconds
    for _, due, ran, _, _ in runs:
        assert ran >= due  # never before its tick (entry ids carry the due time exactly)


def test_stopping_a_pool_wakes_its_idle_scheduler(url):
    broker = get_broker(url)
    with scheduling(broker) as pool:
        scheduler = pool.scheduler
        wait_until(lambda: _waiting(broker), WAIT)
        start = time.monotonic()
    assert time.monotonic() - start < 1.0  # not the 60 s (memory) or 5 s (redis) wait
    assert not scheduler.running and scheduler.join(0)


def test_an_entry_that_cannot_run_is_skipped_and_the_others_go_on(url, ticks, caplog):
    """Its arguments were signed with another secret: logged once, skipped."""
    foreign = get_broker(url, secret="another secret")
    foreign.periodic(foreign.queue().pt.tick, every=PERIOD, name="foreign")
    broker = ticks.watch(get_broker(url, secret="ours"))
    broker.expose(space, replace=True)
    broker.periodic(broker.queue().pt.tick, every=PERIOD, name="ours")
    with scheduling(broker):
        ticks.wait_for("ours", 4)
    assert ticks.of("foreign") == []
    skipped = [r for r in caplog.records if "'foreign' cannot run" in r.getMessage()]
    assert len(skipped) == 1
    # Registered again (with this secret): it runs.
    broker.periodic(broker.queue().pt.tick, every=PERIOD, name="foreign")
    with scheduling(broker):
        ticks.wait_for("foreign", 1)


def test_a_backend_error_during_a_claim_is_retried_not_a_reason_to_skip(url, ticks):
    """A claim the backend refused for a moment (Redis: OOM, a script error)
    is tried again; the entry is not skipped as if it could not be built."""
    broker = _broker(url, ticks)
    store = broker.taskqueue
    real = store.claim_periodic
    refused = threading.Event()

    def claim(*args: Any) -> bool:
        if not refused.is_set():
            refused.set()
            raise RuntimeError("OOM command not allowed when used memory > 'maxmemory'")
        return real(*args)

    store.claim_periodic = claim
    broker.periodic(broker.queue().pt.tick, every=PERIOD, name="refused")
    with scheduling(broker):
        runs = ticks.wait_for("refused", 2)
    assert refused.is_set()
    assert len({due for _, due, _, _, _ in runs}) == len(runs)


def test_a_claim_sent_again_enqueues_nothing_more(url):
    """redis:// retries a script call whose reply was lost: the repeated
    claim finds the entry moved on and enqueues no second run."""
    broker = get_broker(url)
    broker.periodic(broker.queue().pt.tick, every=PERIOD, name="again")
    [entry] = broker.periodic_entries()
    wait_until(lambda: broker.taskqueue.periodic_entries()[0] >= entry.next_run, WAIT)
    store = broker.taskqueue
    sent: list[tuple[Any, ...]] = []
    real = store.claim_periodic

    def claim(*args: Any) -> bool:
        sent.append(args)
        return real(*args)

    store.claim_periodic = claim
    assert broker.run_periodic(entry, entry.next_run) is True
    assert real(*sent[0]) is False  # the same call again
    assert len(broker) == 1
    [moved] = broker.periodic_entries()
    assert moved.next_run == pytest.approx(entry.next_run + PERIOD, abs=0.002)


# -- the schedules ------------------------------------------------------------------------


def test_every_skips_missed_ticks_and_stays_on_its_grid():
    schedule = Schedule(every=10)
    assert schedule.first(100.0) == 110.0
    assert Schedule(every=0.1).first(100.0004) == 100.101  # a whole ms, never earlier
    assert Schedule(every=0.1).next_after(100.1, 100.15) == 100.2  # not 100.20000000000002
    assert schedule.next_after(110.0, 110.0) == 120.0  # on time
    assert schedule.next_after(110.0, 115.5) == 120.0  # late within the period
    assert schedule.next_after(110.0, 175.0) == 180.0  # six ticks missed: not replayed
    assert schedule.next_after(110.0, 180.0) == 190.0  # never a tick at or before now
    assert Schedule.from_text(schedule.text) == schedule and schedule.text == "every 10"
    assert Schedule(every=0.25).text == "every 0.25"


def test_cron_next_runs_are_croniters_in_utc():
    croniter = pytest.importorskip("croniter").croniter
    from datetime import datetime, timezone

    schedule = Schedule(cron="  0 3  * * 1-5 ")  # spaces do not matter
    assert schedule.text == "cron 0 3 * * 1-5"
    start = datetime(2026, 12, 3, 18, 7, tzinfo=timezone.utc).timestamp()
    expected = croniter("0 3 * * 1-5", datetime.fromtimestamp(start, timezone.utc))
    first = schedule.first(start)
    assert first == expected.get_next(float)
    assert datetime.fromtimestamp(first, timezone.utc) == datetime(2026, 12, 4, 3, 0,
                                                                   tzinfo=timezone.utc)
    # Claimed late (on Saturday): the next is Monday's, the missed Friday one is not replayed.
    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc).timestamp()
    assert datetime.fromtimestamp(schedule.next_after(first, saturday), timezone.utc) == \
        datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
    assert Schedule.from_text(schedule.text) == schedule
    with pytest.raises(ValueError, match="not a periodic schedule"):
        Schedule.from_text("sometimes")


class _Plain(AbstractTaskQueue):
    """A backend without the periodic extension."""

    def size(self) -> int:
        return 0


def test_a_backend_without_periodic_tasks_says_so(caplog):
    register_backend("plainperiodic", _Plain)
    try:
        broker = get_broker("plainperiodic://x")
        with pytest.raises(NotImplementedError, match="cannot store periodic tasks"):
            broker.periodic(broker.queue().pt.tick, every=1)
        assert broker.unperiodic("x") is False
        assert broker.periodic_entries() == []
        # A scheduler on it says so once and ends (not a traceback every few seconds).
        scheduler = Scheduler(broker)
        scheduler.start()
        ended = scheduler.join(WAIT)
        scheduler.stop()
        assert ended
        said = [r for r in caplog.records if "cannot store periodic tasks" in r.getMessage()]
        assert len(said) == 1 and said[0].levelname == "ERROR"
    finally:
        registry.unregister("plainperiodic")
