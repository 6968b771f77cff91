"""The job state machine: every legal move, every illegal one raises."""

from __future__ import annotations

import itertools

import pytest

from poolx.engine.jobs import STATES, Job, JobState, JobStateError
from poolx.engine.results import BaseJobSink

Q, S, A = JobState.QUEUED, JobState.SENT, JobState.ACCEPTED
TERMINAL = [s for s in STATES if s.terminal]
LEGAL = {(Q, S), (S, A), (S, Q), (A, Q)} | {(s, t) for s in (Q, S, A) for t in TERMINAL}


class Sink(BaseJobSink):
    def job_done(self, index, ok, value, seconds=None): pass


def _job_in(state: JobState) -> Job:
    job = Job(1, Sink(), 0, b"payload")
    path = {Q: [], S: [S], A: [S, A]}
    for step in path.get(state, [S, state]):
        job.move(step)
    assert job.state is state
    return job


def test_states():
    assert [s.value for s in STATES] == [
        "queued", "sent", "accepted", "done", "failed", "timed_out", "lost", "cancelled"]
    assert [s.value for s in TERMINAL] == ["done", "failed", "timed_out", "lost", "cancelled"]
    assert len({s.code for s in STATES}) == len(STATES)


@pytest.mark.parametrize("old,new", list(itertools.product(STATES, STATES)),
                         ids=lambda s: s.value)
def test_every_transition(old, new):
    job = _job_in(old)
    if (old, new) in LEGAL:
        job.move(new)
        assert job.state is new
    else:
        with pytest.raises(JobStateError, match=f"illegal transition {old.value} -> {new.value}"):
            job.move(new)
        assert job.state is old


def test_a_terminal_state_drops_payload_and_worker():
    job = Job(1, Sink(), 0, b"payload")
    job.move(S)
    job.worker = object()
    job.move(JobState.DONE)
    assert job.payload is None and job.worker is None


def test_requeue_keeps_the_payload():
    job = Job(1, Sink(), 0, b"payload")
    job.move(S)
    job.move(Q)
    assert job.payload == b"payload"


def test_timed():
    assert not Job(1, Sink(), 0, b"").timed
    assert Job(1, Sink(), 0, b"", soft_timeout=1.0).timed
    assert Job(1, Sink(), 0, b"", timeout=1.0).timed
    assert not Job(1, Sink(), 0, b"", memory_limit=10).timed


def test_the_sink_base_does_nothing_and_keeps_a_sink_slotted():
    """BaseJobSink's defaults ignore what they are told, and it adds no
    instance dict: the executor's per-call work items and the consumer's
    tasks in flight keep their ``__slots__``."""

    class Slotted(BaseJobSink):
        __slots__ = ("done",)

        def job_done(self, index, ok, value, seconds=None):
            self.done = (ok, value, seconds)

    sink = Slotted()
    assert not hasattr(sink, "__dict__")
    assert sink.job_sent(1) is None
    assert sink.job_accepted(1, 0.5) is None
    assert sink.job_timed_out(True, 2.0) is None
    sink.job_done(0, True, 3, 0.25)
    assert sink.done == (True, 3, 0.25)
