"""The timer heap: order, cancellation, and no pile-up of dead entries."""

from __future__ import annotations

import random

from poolx.engine.timers import Timer, TimerHeap


def test_timers_run_in_due_order_ties_in_scheduling_order():
    heap = TimerHeap()
    ran = []
    for when, tag in [(3.0, "c"), (1.0, "a1"), (2.0, "b"), (1.0, "a2"), (5.0, "late")]:
        heap.schedule(when, ran.append, tag)
    assert len(heap) == 5
    assert heap.next_delay(now=0.5) == 0.5
    assert heap.run_due(now=3.0) == 4
    assert ran == ["a1", "a2", "b", "c"]
    assert len(heap) == 1
    assert heap.next_delay(now=4.0) == 1.0
    assert heap.next_delay(now=9.0) == 0.0  # overdue: no negative waits


def test_empty_heap_has_no_delay():
    heap = TimerHeap()
    assert heap.next_delay() is None
    assert heap.run_due() == 0


def test_a_fired_timer_is_done_and_cancelling_it_does_nothing():
    heap = TimerHeap()
    ran = []
    timer = heap.schedule(1.0, ran.append, 1)
    assert isinstance(timer, Timer) and timer.pending
    heap.run_due(now=1.0)
    assert ran == [1] and not timer.pending
    heap.cancel(timer)
    heap.cancel(None)
    assert len(heap) == 0 and heap.dead == 0


def test_a_cancelled_timer_never_runs():
    heap = TimerHeap()
    ran = []
    keep = heap.schedule(2.0, ran.append, "keep")
    drop = heap.schedule(1.0, ran.append, "drop")
    heap.cancel(drop)
    heap.cancel(drop)  # twice: counted once
    assert not drop.pending and keep.pending
    assert len(heap) == 1
    assert heap.next_delay(now=0.0) == 2.0  # the dead top entry is skipped
    heap.run_due(now=10.0)
    assert ran == ["keep"]
    assert len(heap) == 0 and heap.dead == 0


def test_callbacks_may_schedule_and_cancel():
    heap = TimerHeap()
    ran = []
    later = heap.schedule(5.0, ran.append, "later")

    def first():
        ran.append("first")
        heap.schedule(1.5, ran.append, "same round")  # due already: runs in this call
        heap.schedule(8.0, ran.append, "next round")
        heap.cancel(later)

    heap.schedule(1.0, first)
    heap.run_due(now=6.0)
    assert ran == ["first", "same round"]
    assert len(heap) == 1


def test_dead_entries_never_outnumber_live_ones():
    rng = random.Random(7)
    heap = TimerHeap()
    live: list[Timer] = []
    now = 0.0
    for _ in range(5000):
        action = rng.random()
        if action < 0.5 or not live:
            live.append(heap.schedule(now + rng.uniform(0, 10), lambda: None))
        elif action < 0.9:
            heap.cancel(live.pop(rng.randrange(len(live))))
        else:
            now += rng.uniform(0, 2)
            heap.run_due(now=now)
            live = [t for t in live if t.pending]
        assert heap.dead <= len(heap)
        assert len(heap) == len(live)


def test_arming_and_cancelling_one_timer_per_job_leaves_nothing_behind():
    heap = TimerHeap()
    for _ in range(10_000):  # a deadline per job, cancelled when the job finishes
        heap.cancel(heap.schedule(60.0, lambda: None))
    assert len(heap) == 0 and heap.dead == 0
    assert heap.next_delay() is None


def test_cancelling_the_earliest_timer_removes_it_at_once():
    heap = TimerHeap()
    first, second = heap.schedule(1.0, print), heap.schedule(2.0, print)
    heap.cancel(first)
    assert (len(heap), heap.dead) == (1, 0)
    third = heap.schedule(3.0, print)
    heap.cancel(third)  # not the earliest: marked dead...
    assert (len(heap), heap.dead) == (1, 1)
    heap.cancel(second)  # ...and dropped with the earliest
    assert (len(heap), heap.dead) == (0, 0)
