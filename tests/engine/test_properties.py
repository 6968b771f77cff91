"""Property: every job resolves exactly once, with the expected outcome."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poolx
from poolx.exceptions import WorkerLostError
from tests.conftest import wait_until
from tests.engine import helpers

KINDS = st.sampled_from(["return", "return", "return", "raise", "sleep", "kill"])
JOBS = st.lists(st.tuples(KINDS, st.integers(0, 1000)), min_size=0, max_size=12)
API = st.sampled_from(["apply_async", "map", "imap", "imap_unordered"])


@pytest.fixture(scope="module")
def shared_pool():
    pool = poolx.Pool(2, context=multiprocessing.get_context("fork"))
    yield pool
    pool.terminate()
    pool.join()


def _chunk_outcome(chunk):
    """What a chunk yields: a list of values, or the exception type it fails with."""
    kinds = [kind for kind, _ in chunk]
    if "kill" in kinds:
        first_kill = kinds.index("kill")
        if "raise" in kinds[:first_kill]:
            return ValueError
        return WorkerLostError
    if "raise" in kinds:
        return ValueError
    return [value for _, value in chunk]


def _check_apply(pool, jobs):
    calls = []
    lock = threading.Lock()

    def record(tag):
        def callback(value):
            with lock:
                calls.append((tag, value))
        return callback

    results = [pool.apply_async(helpers.outcome_job, job, callback=record(i), error_callback=record(i))
               for i, job in enumerate(jobs)]
    for (kind, value), result in zip(jobs, results, strict=True):
        if kind in ("return", "sleep"):
            assert result.get(timeout=30) == value
        else:
            with pytest.raises(ValueError if kind == "raise" else WorkerLostError):
                result.get(timeout=30)
    assert sorted(tag for tag, _ in calls) == list(range(len(jobs)))  # each exactly once


def _check_map(pool, jobs, chunksize):
    chunks = [jobs[i:i + chunksize] for i in range(0, len(jobs), chunksize)]
    outcomes = [_chunk_outcome(c) for c in chunks]
    failures = {o for o in outcomes if not isinstance(o, list)}
    if failures:
        with pytest.raises(tuple(failures)):
            pool.starmap(helpers.outcome_job, jobs, chunksize=chunksize)
    else:
        assert pool.starmap(helpers.outcome_job, jobs, chunksize=chunksize) == [v for _, v in jobs]


def _drain(iterator):
    seen = []
    while True:
        try:
            seen.append(("ok", iterator.next(timeout=30)))
        except StopIteration:
            return seen
        except (ValueError, WorkerLostError) as exc:
            seen.append(("error", type(exc)))


def _expected_items(outcomes):
    items = []
    for outcome in outcomes:
        if isinstance(outcome, list):
            items.extend(("ok", v) for v in outcome)
        else:
            items.append(("error", outcome))
    return items


def _check_imap(pool, jobs, chunksize, ordered):
    chunks = [jobs[i:i + chunksize] for i in range(0, len(jobs), chunksize)]
    expected = _expected_items([_chunk_outcome(c) for c in chunks])
    method = pool.imap if ordered else pool.imap_unordered
    seen = _drain(method(_star_outcome, jobs, chunksize=chunksize))
    if ordered:
        assert seen == expected
    else:
        assert sorted(seen, key=repr) == sorted(expected, key=repr)


def _star_outcome(job):
    return helpers.outcome_job(*job)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=JOBS, api=API, chunksize=st.integers(1, 5))
def test_every_job_resolves_exactly_once(shared_pool, jobs, api, chunksize):
    if api == "apply_async":
        _check_apply(shared_pool, jobs)
    elif api == "map":
        _check_map(shared_pool, jobs, chunksize)
    else:
        _check_imap(shared_pool, jobs, chunksize, ordered=api == "imap")
    # map() raises at its first failure while other chunks may still run:
    # wait until the pool is idle, then every job must be settled exactly once.
    def settled_and_submitted():
        stats = shared_pool.stats()
        settled = stats["completed"] + stats["failed"] + stats["timed_out"] + stats["cancelled"]
        assert settled <= stats["submitted"]
        return settled == stats["submitted"] and stats["queued"] == 0

    wait_until(settled_and_submitted, timeout=30)
