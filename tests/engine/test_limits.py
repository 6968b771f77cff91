"""The limit keeper, without worker processes: a fake host and fake handles."""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace

import pytest

from poolx.engine.jobs import Job, JobState
from poolx.engine.limits import LimitKeeper
from poolx.engine.results import BaseJobSink
from poolx.engine.timers import TimerHeap
from poolx.engine.worker import RUNNING, SLOT_SIZE, SOFT_TARGET, STARTED_NS
from poolx.engine.workers import KillReason
from poolx.exceptions import MemoryLimitExceeded, TimeLimitExceeded


class Sink(BaseJobSink):
    def __init__(self):
        self.timed_out = []

    def job_timed_out(self, soft, timeout):
        self.timed_out.append((soft, timeout))

    def job_done(self, index, ok, value, seconds=None): pass


class Handle:
    """What the keeper reads of a WorkerHandle: pid, slot, jobs, signals."""

    def __init__(self, pid=None):
        self.pid = pid if pid is not None else 10**7  # never a real process unless given
        self.slot = [0] * SLOT_SIZE
        self.jobs = {}
        self.exited = False
        self.kill_reason = None
        self.signals = []  # (signal, slot[SOFT_TARGET] when it was sent)

    def running_job(self):
        seq = self.slot[RUNNING]
        return self.jobs.get(seq) if seq else None

    def send_signal(self, sig):
        self.signals.append((sig, self.slot[SOFT_TARGET]))


class Host:
    def __init__(self):
        self.keeper = None
        self.kills = []
        self.finished = []
        self.kill_succeeds = True

    def kill_job(self, handle, job, reason):
        self.kills.append((handle, job.seq, reason))
        return self.kill_succeeds

    def finish(self, job, state, value):
        handle = job.worker
        job.move(state)
        self.finished.append((job.seq, state, value))
        self.keeper.job_ended(job, handle)


class Runner:
    def __init__(self):
        self.calls = []

    def submit(self, func, *args):
        self.calls.append((func, args))


@pytest.fixture
def env():
    host, timers, runner = Host(), TimerHeap(), Runner()
    config = SimpleNamespace(on_timeout_set=None, memory_poll_interval=0.05)
    keeper = LimitKeeper(host, timers, config, runner)
    host.keeper = keeper
    return SimpleNamespace(host=host, timers=timers, runner=runner, config=config, keeper=keeper)


def _send(env, handle, seq=1, **limits):
    job = Job(seq, Sink(), 0, b"", **limits)
    job.move(JobState.SENT)
    job.worker = handle
    handle.jobs[seq] = job
    env.keeper.job_sent(job, handle, time.monotonic())
    return job


def _start(handle, job, seconds_ago):
    handle.slot[STARTED_NS] = time.monotonic_ns() - int(seconds_ago * 1e9)
    handle.slot[RUNNING] = job.seq


def test_a_finished_job_leaves_no_timer_behind(env):
    handle = Handle()
    jobs = [_send(env, handle, seq, soft_timeout=30.0, timeout=60.0) for seq in range(1, 101)]
    assert env.keeper.armed == 100 and len(env.timers) == 100
    for job in jobs:
        job.move(JobState.DONE)
        env.keeper.job_ended(job, handle)
    assert env.keeper.armed == 0
    assert len(env.timers) == 0 and env.timers.dead == 0


def test_a_requeued_job_is_disarmed(env):
    handle = Handle()
    job = _send(env, handle, timeout=5.0)
    env.keeper.disarm(job)
    assert env.keeper.armed == 0 and len(env.timers) == 0


def test_the_timeout_set_callback_is_handed_to_the_runner(env):
    env.config.on_timeout_set = callback = object()
    job = _send(env, Handle(), soft_timeout=1.0, timeout=2.0)
    assert env.runner.calls == [(callback, (job.sink, 1.0, 2.0))]


def test_a_job_not_started_yet_is_checked_again_later(env):
    handle = Handle()
    job = _send(env, handle, soft_timeout=1.0, timeout=3.0)
    before = time.monotonic()
    env.keeper.check_timeout(job, handle)
    assert env.host.kills == [] and handle.signals == []
    assert env.keeper.armed == 1 and len(env.timers) == 1  # replaced, not added
    assert before + 1.0 <= env.timers.next_delay(now=0.0) <= time.monotonic() + 1.0


def test_soft_limit_marks_the_target_before_the_signal(env):
    handle = Handle()
    job = _send(env, handle, soft_timeout=1.0, timeout=30.0)
    _start(handle, job, seconds_ago=2.0)
    env.keeper.check_timeout(job, handle)
    assert handle.signals == [(signal.SIGUSR1, job.seq)]
    assert job.soft_fired and job.sink.timed_out == [(True, 1.0)]
    assert env.host.kills == []
    assert env.keeper.armed == 1  # the hard deadline is still ahead
    env.keeper.check_timeout(job, handle)
    assert len(handle.signals) == 1  # never signalled twice


def test_hard_limit_kills_the_worker_and_fails_the_job(env):
    handle = Handle()
    job = _send(env, handle, timeout=1.0)
    _start(handle, job, seconds_ago=2.0)
    env.keeper.check_timeout(job, handle)
    assert env.host.kills == [(handle, job.seq, KillReason.TIMEOUT)]
    [(seq, state, error)] = env.host.finished
    assert (seq, state) == (job.seq, JobState.TIMED_OUT)
    assert isinstance(error, TimeLimitExceeded) and error.args == (1.0,)
    assert job.sink.timed_out == [(False, 1.0)]
    assert len(env.timers) == 0


def test_a_job_that_finished_at_the_deadline_is_left_alone(env):
    handle = Handle()
    job = _send(env, handle, timeout=1.0)
    _start(handle, job, seconds_ago=2.0)
    env.host.kill_succeeds = False  # its result is on the way
    env.keeper.check_timeout(job, handle)
    assert env.host.finished == [] and job.sink.timed_out == []


def test_checks_for_a_job_that_ended_or_moved_do_nothing(env):
    handle = Handle()
    job = _send(env, handle, timeout=1.0)
    _start(handle, job, seconds_ago=2.0)
    job.worker = Handle()  # re-sent elsewhere meanwhile
    env.keeper.check_timeout(job, handle)
    assert env.host.kills == []


def test_memory_over_the_limit_kills_and_fails_the_job(env):
    handle = Handle(pid=os.getpid())  # a real process to measure: this one
    job = _send(env, handle, memory_limit=1)
    assert len(env.timers) == 1  # the worker's memory poll
    _start(handle, job, seconds_ago=0)
    env.keeper.poll_memory(handle)
    assert env.host.kills == [(handle, job.seq, KillReason.MEMORY)]
    [(seq, state, error)] = env.host.finished
    assert state is JobState.FAILED and isinstance(error, MemoryLimitExceeded)
    assert error.limit == 1 and error.rss > 1 and error.pid == os.getpid()
    assert env.keeper.memory_killed == 1
    assert len(env.timers) == 0


def test_memory_under_the_limit_is_polled_while_the_job_is_held(env):
    handle = Handle(pid=os.getpid())
    job = _send(env, handle, memory_limit=2**50)
    _start(handle, job, seconds_ago=0)
    env.keeper.poll_memory(handle)
    assert env.host.kills == [] and len(env.timers) == 1  # polled again later
    assert env.keeper.rss(handle) > 0
    handle.jobs.pop(job.seq)
    job.move(JobState.DONE)
    env.keeper.job_ended(job, handle)
    assert len(env.timers) == 0  # no memory-limited job left on it: no poll


def test_a_gone_worker_leaves_no_poll_behind(env):
    handle = Handle(pid=os.getpid())
    _send(env, handle, memory_limit=2**50)
    assert len(env.timers) == 1
    handle.exited = True
    env.keeper.worker_gone(handle)
    assert len(env.timers) == 0
    assert env.keeper.rss(handle) is None
