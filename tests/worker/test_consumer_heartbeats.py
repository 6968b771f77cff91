"""poolx.consumer.heartbeats: the heartbeat thread the consumer and the
thread pool share."""

from __future__ import annotations

import threading

import pytest

from poolx.consumer.heartbeats import Heartbeats
from poolx.task import FunctionTask
from tests.conftest import wait_until


def task(task_id: str, heartrate: float) -> FunctionTask:
    return FunctionTask("t", (), {}, {"id": task_id, "heartrate": heartrate})


@pytest.fixture
def beats():
    sent: list[str] = []
    made: list[tuple[Heartbeats, threading.Thread]] = []

    def start(send=None, **kw) -> Heartbeats:
        heartbeats = Heartbeats(send or (lambda t: sent.append(t.id)), **kw)
        thread = threading.Thread(target=heartbeats.run, daemon=True)
        thread.start()
        made.append((heartbeats, thread))
        return heartbeats

    start.sent = sent
    yield start
    for heartbeats, thread in made:  # every test discards its tasks
        heartbeats.close()
        thread.join(5)
        assert not thread.is_alive()


def test_running_tasks_get_heartbeats_until_discarded(beats):
    heartbeats = beats()
    fast = heartbeats.add(task("fast", 0.02))
    slow = heartbeats.add(task("slow", 3600))
    wait_until(lambda: beats.sent.count("fast") >= 3, 5)
    heartbeats.discard(fast)
    count = len(beats.sent)
    with heartbeats.running(task("other", 0.02)):
        wait_until(lambda: "other" in beats.sent, 5)
    assert set(beats.sent) == {"fast", "other"}  # "slow" is not due for an hour
    assert beats.sent[:count].count("fast") == count
    heartbeats.discard(slow)


def test_close_ends_the_thread_once_no_task_runs():
    heartbeats = Heartbeats(lambda t: None)
    key = heartbeats.add(task("t", 3600))
    thread = threading.Thread(target=heartbeats.run, daemon=True)
    thread.start()
    heartbeats.close()
    thread.join(0.2)
    assert thread.is_alive()  # a task still runs
    heartbeats.discard(key)
    thread.join(5)
    assert not thread.is_alive()


def test_tick_runs_periodically_and_failures_are_logged(beats, caplog):
    ticks: list[int] = []

    def send(t):
        raise ConnectionError("backend down")

    heartbeats = beats(send, label="p", tick=lambda: ticks.append(1), tick_interval=0.02)
    key = heartbeats.add(task("t", 0.02))
    wait_until(lambda: len(ticks) >= 3, 5)
    wait_until(lambda: "p: heartbeat failed for t [t]" in caplog.text, 5)
    heartbeats.discard(key)


def test_tick_needs_an_interval():
    with pytest.raises(ValueError):
        Heartbeats(lambda t: None, tick=lambda: None)
