"""Real libraries that create ``multiprocessing`` pools, with poolx substituted
(issue 10): ``multiprocessing.Pool`` and every context's ``Pool`` method build
a :class:`poolx.Pool`, and each test proves that the library's work ran in
one.  Versions are pinned in pyproject.toml's ``test`` extra.

* parmap 1.7.0 creates ``multiprocessing.Pool(processes=...)``, sizes chunks
  with ``len(pool._pool) * 4`` and polls ``MapResult._number_left`` for its
  progress bar.
* parallelbar 2.5 creates ``get_context(context).Pool(initializer=...,
  maxtasksperchild=...)`` beside two ``multiprocessing.Manager().Queue()``
  (fork context) that its workers report progress through.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context

import pytest

import poolx
from tests.engine import helpers

parmap = pytest.importorskip("parmap")
parallelbar = pytest.importorskip("parallelbar")


@pytest.fixture
def created(monkeypatch):
    """Substitute poolx for the standard library's pool; the pools created."""
    pools: list[poolx.Pool] = []

    def make(ctx, processes=None, initializer=None, initargs=(), maxtasksperchild=None):
        pool = poolx.Pool(processes, initializer, initargs, maxtasksperchild, context=ctx)
        pools.append(pool)
        return pool

    monkeypatch.setattr(multiprocessing.context.BaseContext, "Pool",
                        lambda self, *args, **kwargs: make(self, *args, **kwargs))
    monkeypatch.setattr(multiprocessing, "Pool",
                        lambda *args, **kwargs: make(multiprocessing.get_context(), *args, **kwargs))
    yield pools
    for pool in pools:
        pool.terminate()


def test_parmap_map_starmap_and_progress_bar(created):
    data = list(range(200))
    assert parmap.map(helpers.square, data, pm_processes=2) == [x * x for x in data]
    assert parmap.starmap(helpers.add, [(i, 1) for i in range(50)], pm_processes=2) == list(range(1, 51))
    # The progress bar polls result._number_left and sizes chunks from len(pool._pool).
    assert parmap.map(helpers.square, data, pm_processes=2, pm_pbar={"disable": True}) == \
        [x * x for x in data]
    assert len(created) == 3 and all(isinstance(p, poolx.Pool) for p in created)


def test_parmap_with_a_pool_of_its_callers(created):
    with multiprocessing.Pool(2) as pool:
        assert isinstance(pool, poolx.Pool)
        assert parmap.map(helpers.square, range(40), pm_pool=pool, pm_pbar={"disable": True}) == \
            [x * x for x in range(40)]


@pytest.mark.parametrize("method", ["progress_map", "progress_imap", "progress_imapu"])
def test_parallelbar_with_manager_queues(created, method):
    tasks = list(range(100))
    result = getattr(parallelbar, method)(helpers.square, tasks, n_cpu=2, context="fork", disable=True,
                                          chunk_size=3)
    assert sorted(result) == [x * x for x in tasks]
    assert len(created) == 1 and isinstance(created[0], poolx.Pool)


def test_parallelbar_task_errors_with_manager_queues(created):
    result = parallelbar.progress_map(helpers.raise_value_error, ["a", "b"], n_cpu=2, context="fork",
                                      disable=True, error_behavior="coerce", set_error_value="failed")
    assert result == ["failed", "failed"]
    assert len(created) == 1
