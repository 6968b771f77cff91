"""Drop-in for ``multiprocessing.Pool``, side by side with the standard library.

Argument errors: the standard library's exception type and text wherever it
checks an argument itself.  The private attributes real code reads
(``_pool``, ``_processes``, ``_state``, ``_cache``, ``_job``,
``_chunksize``, ``_number_left``): present, read-only, with the standard
library's meaning.  Results are instances of ``multiprocessing.pool``'s
result classes.  See docs/migrating-multiprocessing.rst.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool as mp_pool
import os
import signal

import pytest

import poolx
import poolx.engine.results
from tests.conftest import wait_until
from tests.engine import helpers

CTX = multiprocessing.get_context("fork")


@pytest.fixture
def pools():
    std = mp_pool.Pool(2, context=CTX)
    px = poolx.Pool(2, context=CTX)
    yield std, px
    for pool in (std, px):
        pool.terminate()
        pool.join()


def _error(call):
    """The exception ``call()`` raises (or None)."""
    try:
        call()
    except Exception as exc:
        return exc
    return None


def _same_error(std_call, px_call):
    std, px = _error(std_call), _error(px_call)
    assert std is not None, "the standard library accepts this: not a shared error"
    assert (type(px), str(px)) == (type(std), str(std))


@pytest.mark.parametrize("kwargs", [
    {"maxtasksperchild": 0.5},
    {"maxtasksperchild": 0},
    {"maxtasksperchild": -1},
    {"maxtasksperchild": "1"},
    {"initializer": 3},
])
def test_constructor_errors_are_the_standard_librarys(kwargs):
    _same_error(lambda: mp_pool.Pool(1, context=CTX, **kwargs),
                lambda: poolx.Pool(1, context=CTX, **kwargs))


def test_negative_processes_is_a_value_error_as_in_the_standard_library():
    # The text says 0, not 1: poolx accepts an empty pool (a documented difference).
    with pytest.raises(ValueError, match="Number of processes must be at least 1"):
        mp_pool.Pool(-1, context=CTX)
    with pytest.raises(ValueError, match="^Number of processes must be at least 0$"):
        poolx.Pool(-1, context=CTX)


@pytest.mark.parametrize("call", [
    lambda p: p.imap(helpers.square, [1, 2], chunksize=0),
    lambda p: p.imap(helpers.square, [1, 2], chunksize=-2),
    lambda p: p.imap_unordered(helpers.square, [1, 2], chunksize=0),
    lambda p: p.map(helpers.square, [1], foo=1),
    lambda p: p.map_async(helpers.square, [1], None, None, None, bar=2),
    lambda p: p.starmap(helpers.add, [(1, 2)], baz=3),
    lambda p: p.imap(helpers.square, [1], foo=1),
])
def test_call_errors_are_the_standard_librarys(pools, call):
    std, px = pools
    _same_error(lambda: call(std), lambda: call(px))


@pytest.mark.parametrize("call", [
    lambda p: p.apply_async(helpers.square, 5).get(10),
    lambda p: p.apply_async(helpers.square, (1,), 5).get(10),
    lambda p: p.apply_async(helpers.square, (), [("x", 1)]).get(10),
    lambda p: p.apply(helpers.square, 5),
    lambda p: next(p.imap(helpers.square, 5)),
    lambda p: next(p.imap_unordered(helpers.square, 5)),
])
def test_errors_raised_by_get_are_the_standard_librarys(pools, call):
    std, px = pools
    _same_error(lambda: call(std), lambda: call(px))


def test_a_non_iterable_imap_input_fails_at_next_not_at_the_call(pools):
    for pool in pools:
        iterator = pool.imap(helpers.square, 5)  # the standard library raises later
        with pytest.raises(TypeError, match="'int' object is not iterable"):
            next(iterator)


@pytest.mark.parametrize("method", ["map", "starmap"])
def test_map_chunksize_below_one_is_a_value_error(pools, method):
    std, px = pools
    # The standard library silently returns a list of None here (documented difference).
    assert getattr(std, method)(helpers.add if method == "starmap" else helpers.square,
                                [(1, 2)] if method == "starmap" else [1], chunksize=0) == [None]
    with pytest.raises(ValueError, match=r"^Chunksize must be 1\+, not 0$"):
        getattr(px, method)(helpers.square, [1], chunksize=0)


# ---------------------------------------------------------------- private attributes


def test_pool_attributes_have_the_standard_librarys_meaning(pools):
    std, px = pools
    assert px._processes == std._processes == 2
    assert px._state == std._state == mp_pool.RUN
    workers = px._pool
    assert len(workers) == len(std._pool) == 2
    assert all(isinstance(w, multiprocessing.process.BaseProcess) and w.is_alive() for w in workers)
    assert {w.pid for w in workers} == {w["pid"] for w in px.stats()["workers"]}
    assert len(px._cache) == len(std._cache) == 0 and not px._cache
    px.close()
    std.close()
    assert px._state == std._state == mp_pool.CLOSE
    px.terminate()
    std.terminate()
    assert px._state == std._state == mp_pool.TERMINATE


def test_pool_attributes_are_read_only(pools):
    _, px = pools
    for name, value in (("_pool", []), ("_state", mp_pool.CLOSE), ("_processes", 5), ("_cache", {})):
        with pytest.raises(AttributeError):
            setattr(px, name, value)
    px._pool.clear()  # a copy: the pool's own list is untouched
    assert len(px._pool) == 2
    with pytest.raises(TypeError):
        px._cache[1] = None
    assert px.apply(helpers.square, (3,)) == 9




def test_a_killed_worker_leaves_pool_list_and_is_replaced(pools):
    _, px = pools
    pid = px._pool[0].pid
    os.kill(pid, signal.SIGKILL)
    wait_until(timeout=30, predicate=lambda: pid not in [w.pid for w in px._pool])
    wait_until(timeout=30, predicate=lambda: len(px._pool) == 2)
    assert px.apply(helpers.square, (4,)) == 16


def test_result_fields_progress_code_polls(pools, tmp_path):
    gate = str(tmp_path / "gate")
    side_by_side = []
    for pool in pools:
        first = pool.apply_async(helpers.wait_for_file, (gate,))
        second = pool.apply_async(helpers.square, (2,))
        assert isinstance(first._job, int) and first._job != second._job
        mapped = pool.map_async(helpers.wait_for_file, [gate] * 10, chunksize=3)
        default = pool.map_async(helpers.wait_for_file, [gate] * 10)  # chunksize from len(_pool) * 4
        items = pool.imap(helpers.wait_for_file, [gate] * 3)
        side_by_side.append((mapped._chunksize, mapped._number_left, default._chunksize,
                             default._number_left, first._job in pool._cache))
        assert mapped._job in pool._cache and default._job in pool._cache
        with open(gate, "w"):
            pass
        assert mapped.get(30) == [gate] * 10 and list(items) == [gate] * 3
        default.get(30)
        first.get(30)
        second.get(30)
        assert mapped._number_left == 0
        wait_until(timeout=30, predicate=lambda pool=pool: len(pool._cache) == 0)
        os.unlink(gate)
    assert side_by_side[0] == side_by_side[1] == (3, 4, 2, 5, True)


def test_empty_map_fields(pools):
    for pool in pools:
        result = pool.map_async(helpers.square, [])
        assert (result._chunksize, result._number_left, result.get(1)) == (0, 0, [])
        assert result._job not in pool._cache


# ---------------------------------------------------------------- result classes


def test_results_are_instances_of_the_standard_librarys_classes(pools):
    _, px = pools
    applied = px.apply_async(helpers.square, (2,))
    assert isinstance(applied, mp_pool.AsyncResult) and isinstance(applied, mp_pool.ApplyResult)
    mapped = px.map_async(helpers.square, [1, 2])
    assert isinstance(mapped, mp_pool.MapResult) and isinstance(mapped, mp_pool.ApplyResult)
    assert isinstance(px.starmap_async(helpers.add, [(1, 2)]), mp_pool.MapResult)
    assert isinstance(px.imap(helpers.square, [1]), mp_pool.IMapIterator)
    unordered = px.imap_unordered(helpers.square, [1])
    assert isinstance(unordered, mp_pool.IMapUnorderedIterator)
    assert isinstance(unordered, mp_pool.IMapIterator)
    assert isinstance(px.apply_async(helpers.square, (1,)), poolx.engine.results.ApplyResult)
    assert (applied.get(10), mapped.get(10), list(unordered)) == (4, [1, 4], [1])


def test_the_standard_librarys_result_classes_cannot_be_built_on_a_poolx_pool(pools):
    # Documented: poolx creates its own results; its cache is a read-only view.
    _, px = pools
    with pytest.raises(TypeError):
        mp_pool.ApplyResult(px, None, None)


@pytest.mark.parametrize("call, error", [
    (lambda p: p.map(helpers.square, [1, 2], chunksize=1.5), TypeError),
    (lambda p: p.imap(helpers.square, [1, 2], chunksize="2"), TypeError),
    (lambda p: p.apply_async(helpers.square, (1,), callback=1), TypeError),
])
def test_what_the_standard_library_mishandles_is_refused_at_the_call(pools, call, error):
    _, px = pools
    with pytest.raises(error):
        call(px)


def test_initargs_that_are_not_iterable_are_refused_at_the_call():
    with pytest.raises(TypeError, match="not iterable"):
        poolx.Pool(1, initializer=helpers.square, initargs=5, context=CTX)


def test_a_failed_chunk_is_raised_at_once_while_the_others_run(pools, tmp_path):
    # The standard library waits for every chunk (a documented difference).
    _, px = pools
    gate = str(tmp_path / "gate")
    result = px.map_async(helpers.boom_or_wait, ["boom", gate], chunksize=1)
    with pytest.raises(ValueError, match="^boom$"):
        result.get(30)
    with open(gate, "w"):
        pass
    wait_until(timeout=30, predicate=lambda: px.stats()["completed"] + px.stats()["failed"] == 2)
