"""Periodic tasks on Redis under faults: Redis restarted with entries stored,
a scheduler killed -9 while another runs, two schedulers racing for a minute
(soak); plus the Redis-side bookkeeping of the scheduler wake-ups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from itertools import pairwise

import pytest

from poolx import get_broker
from tests.conftest import wait_until
from tests.redis.tasks import ts
from tests.taskqueue.conftest import isolated_url
from tests.taskqueue.helpers import WAIT
from tests.taskqueue.test_periodic import Ticks, assert_on_grid, scheduling

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PERIOD = 0.3


def _tick_dues(broker, entry: str) -> list[float]:
    """The due times of every tick of ``entry`` enqueued so far (their
    records stay while their results are kept)."""
    store = broker.taskqueue
    keys = store.client.scan_iter(match=f"{store._key}t:{entry}@*", count=1000)
    return sorted(int(key.decode().rpartition("@")[2]) / 1000 for key in keys)


def _assert_dues_on_grid(dues: list[float], period: float) -> None:
    for before, after in pairwise(dues):
        assert after - before == pytest.approx(period, abs=0.0015), dues


def test_periodic_entries_survive_a_redis_restart(private_redis):
    server = private_redis(persistent=True)
    url = isolated_url(server.url)
    broker = get_broker(url)
    broker.expose(ts)
    ticks = Ticks()
    ticks.watch(broker)
    q = broker.queue()
    broker.periodic(q.rt.square, every=PERIOD, args=(3,), name="fast", ignore_result=False)
    broker.periodic(q.rt.square, every=3600, args=(4,), name="hourly")
    broker.periodic(q.rt.square, cron="0 * * * *", args=(5,), name="cron")
    before = {entry.name: entry for entry in broker.periodic_entries()}
    with scheduling(broker) as pool:
        ticks.wait_for("fast", 3)
        server.restart()  # kill -9, then the same port and data again
        back = time.time()
        wait_until(lambda: len([r for r in ticks.of("fast") if r[1] > back]) >= 3, WAIT * 2)
        assert pool.scheduler is not None and pool.scheduler.running
    after = {entry.name: entry for entry in get_broker(url).periodic_entries()}
    assert after.keys() == before.keys()
    for name in ("hourly", "cron"):  # nothing lost, nothing moved
        assert after[name] == before[name]
    assert after["fast"].version == before["fast"].version
    runs = ticks.of("fast")
    ran = [due for _, due, _, _, _ in runs]
    assert len(set(ran)) == len(ran), f"a tick ran twice: {ran}"
    dues = _tick_dues(broker, "fast")
    assert set(ran) <= set(dues)
    # On the grid throughout; ticks that fell in the outage are skipped, not replayed.
    for first, second in pairwise(dues):
        periods = (second - first) / PERIOD
        assert periods == pytest.approx(round(periods), abs=0.01) and round(periods) >= 1


def _scheduler_ids(broker) -> list[str]:
    store = broker.taskqueue
    return [member.decode() for member in store.client.zrange(store._key + "pwatch", 0, -1)]


def test_a_scheduler_killed_9_another_goes_on(url):
    """``poolx worker --scheduler`` and a thread pool with a scheduler share
    the ticks; the worker is killed -9: the ticks go on, one per period, each
    enqueued once (its record id is the tick's)."""
    broker = get_broker(url)
    broker.expose(ts)
    broker.periodic(broker.queue().rt.square, every=PERIOD, args=(2,), name="tick",
                    ignore_result=False)
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    doomed = subprocess.Popen(
        [sys.executable, "-m", "poolx", "worker", url, "--init", "tests.redis.tasks:init",
         "--scheduler", "--workers", "1", "--log-level", "WARNING"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: any(f":{doomed.pid}:" in sid for sid in _scheduler_ids(broker)),
                   WAIT * 3)
        wait_until(lambda: len(_tick_dues(broker, "tick")) >= 3, WAIT)
        with scheduling(broker) as pool:
            wait_until(lambda: pool.scheduler is not None and pool.scheduler.enqueued >= 1,
                       WAIT)  # both claim ticks now
            both = time.time()
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(WAIT)
            killed = time.time()
            wait_until(lambda: len([d for d in _tick_dues(broker, "tick") if d > killed]) >= 4,
                       WAIT)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(WAIT)
    dues = _tick_dues(broker, "tick")
    assert dues[0] < killed - PERIOD and dues[-1] > killed + 3 * PERIOD
    # No gap at the kill, none ran twice (one record each).  (From the time
    # both schedulers ran: alone, the worker's scheduler may skip a tick
    # while the command starts its forkserver and workers on a loaded
    # machine, as a scheduler late by a period does.)
    _assert_dues_on_grid([due for due in dues if due >= both - PERIOD], PERIOD)


def test_scheduler_wake_ups_are_bookkept(url):
    """A scheduler registers when it reads the entries; a change leaves it
    one wake-up token (not one per change); unperiodic cleans its keys."""
    broker = get_broker(url)
    store = broker.taskqueue
    _now, entries = store.periodic_entries("s1")
    assert entries == [] and _scheduler_ids(broker) == ["s1"]
    for every in (10, 20, 30):
        broker.periodic(broker.queue().rt.square, every=every, name="e")
    assert store.client.llen(store._key + "pw:s1") == 1
    store.periodic_entries("s1")  # a new reading drops the token
    assert not store.client.exists(store._key + "pw:s1")
    assert broker.unperiodic("e") is True
    assert not store.client.exists(store._key + "pe:e", store._key + "periodic")
    store.wait_periodic("s1", 5)  # the removal's token: returns at once
    assert store.client.llen(store._key + "pw:s1") == 0


def test_expired_scheduler_registrations_are_dropped_without_entry_changes(url, monkeypatch):
    """Schedulers that stopped (workers restarted) leave their registration;
    it is dropped once expired even if no entry ever changes again."""
    import poolx.queue.redis as backend

    broker = get_broker(url)
    broker.periodic(broker.queue().rt.square, every=60, name="e")  # stored once, never again
    store = broker.taskqueue
    monkeypatch.setattr(backend, "PERIODIC_WATCH", 0.05)
    for gone in ("old1", "old2", "old3"):  # three schedulers that came and went
        store.periodic_entries(gone)
    [(_last, expires)] = store.client.zrange(store._key + "pwatch", -1, -1, withscores=True)

    def server_ms() -> int:
        seconds, micros = store.client.time()
        return seconds * 1000 + micros // 1000

    wait_until(lambda: server_ms() > expires, WAIT)  # by the server's clock
    monkeypatch.setattr(backend, "PERIODIC_WATCH", 60.0)
    store.periodic_entries("live")
    assert _scheduler_ids(broker) == ["live"]


@pytest.mark.soak
@pytest.mark.timeout(300)
def test_two_schedulers_race_for_a_minute(url):
    """Two pools with a scheduler each, a tick every 0.5 s for a minute: each
    tick once, none skipped.  (A tick is skipped only when every scheduler
    claims it later than one period: the missed-ticks policy.)"""
    ticks = Ticks()
    one, two = (ticks.watch(get_broker(url)) for _ in range(2))
    for broker in (one, two):
        broker.expose(ts)
    one.periodic(one.queue().rt.square, every=0.5, args=(1,), name="minute")
    with scheduling(one, workers=2), scheduling(two, workers=2):
        ticks.wait_for("minute", 120, timeout=120)
    assert_on_grid(ticks.of("minute"), 0.5)


def test_the_example_prints_the_same_on_redis(url):
    """examples/taskqueue/periodic.py with a Redis URL: the output its page
    shows for memory:// (tests/test_docs.py runs that one)."""
    from tests.test_docs import assert_example_prints_the_same_on

    assert_example_prints_the_same_on("periodic.rst", url)
    assert get_broker(url).periodic_entries() == []  # it cleans up
