"""The intake thread's pacing (poolx.consumer.intake), with a fake consumer."""

from __future__ import annotations

import threading

from poolx.consumer.intake import LINGER, Intake
from poolx.task import FunctionTask

ROOM = 5


class _Stop(threading.Event):
    """The consumer's stop event, remembering how long the intake waited on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


class _Broker:
    url = "memory://fake"
    name = "default"
    tasks: dict = {}

    def __init__(self, batches: list[int]) -> None:
        self.batches = batches
        self.calls = 0

    def next_tasks(self, count: int, timeout: float | None = None) -> list[FunctionTask]:
        size = self.batches[self.calls]
        self.calls += 1
        return [FunctionTask("f", (i,), {}, {}) for i in range(min(size, count))]


class _Consumer:
    worker_broker = True
    name = "fake"
    accepting = True

    def __init__(self, batches: list[int]) -> None:
        self.broker = _Broker(batches)
        self.stop_requested = _Stop()
        self.taken: list[FunctionTask] = []

    def wait_for_room(self) -> int | None:
        return ROOM if self.broker.calls < len(self.broker.batches) else None

    def count(self, what: str, n: int = 1) -> None:
        pass

    def track_all(self, taken: list[tuple[FunctionTask, object]]) -> None:
        self.taken.extend(task for task, _ in taken)


def test_the_intake_lingers_only_after_a_call_that_emptied_the_queue_with_room_left():
    """Tasks arriving one by one are taken a few per call: after a call that
    took some but fewer than there was room for, the next waits LINGER; a
    call that filled the room, or that found nothing (it blocked in the
    broker already), is followed at once."""
    consumer = _Consumer([1, ROOM, 0, 2, ROOM])
    Intake(consumer, timeout=0.1)._run()
    assert len(consumer.taken) == 1 + ROOM + 2 + ROOM
    assert consumer.stop_requested.waits == [LINGER, LINGER]
