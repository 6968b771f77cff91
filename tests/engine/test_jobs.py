"""The job state machine: every legal move, every illegal one raises."""

from __future__ import annotations

import itertools

import pytest

from poolx.engine.jobs import STATES, Job, JobState, JobStateError

Q, S, A = JobState.QUEUED, JobState.SENT, JobState.ACCEPTED
TERMINAL = [s for s in STATES if s.terminal]
LEGAL = {(Q, S), (S, A), (S, Q), (A, Q)} | {(s, t) for s in (Q, S, A) for t in TERMINAL}


class Sink:
    def job_sent(self, pid): pass
    def job_accepted(self, pid, when): pass
    def job_timed_out(self, soft, timeout): pass
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
