"""A job that finished never runs again; a job that started and did not
finish fails as lost; only jobs that never started go to another worker.

The rule holds by construction (the supervisor reads a dead worker's pipe to
its end before it looks at the worker's slot, and a kill aimed at one job
never lets the next one start), so these tests count side effects, not time.
"""

from __future__ import annotations

import pytest

import poolx
from poolx.exceptions import WorkerLostError
from tests.engine import helpers

JOBS = 1000


def test_finished_jobs_never_run_again_when_a_later_job_kills_the_worker(ctx, tmp_path):
    log = str(tmp_path / "runs.log")
    dies = {i for i in range(JOBS) if i % 5 == 4}
    with poolx.Pool(2, context=ctx) as pool:
        results = [pool.apply_async(helpers.logged_job, (log, i, i in dies)) for i in range(JOBS)]
        for i, result in enumerate(results):
            if i in dies:
                with pytest.raises(WorkerLostError):
                    result.get(timeout=60)
            else:
                assert result.get(timeout=60) == i
    runs = helpers.logged_runs(log)
    assert {i: n for i, n in runs.items() if n != 1} == {}
    assert set(runs) == set(range(JOBS))  # every job ran, exactly once


def test_map_chunks_are_never_run_twice(fork_ctx, tmp_path):
    log = str(tmp_path / "runs.log")
    with poolx.Pool(2, context=fork_ctx) as pool:
        ok = pool.starmap_async(helpers.logged_job, [(log, i) for i in range(JOBS)], chunksize=3)
        deaths = [pool.apply_async(helpers.logged_job, (log, JOBS + i, True)) for i in range(20)]
        assert ok.get(timeout=60) == list(range(JOBS))
        for death in deaths:
            with pytest.raises(WorkerLostError):
                death.get(timeout=60)
    runs = helpers.logged_runs(log)
    assert {i: n for i, n in runs.items() if n != 1} == {}
