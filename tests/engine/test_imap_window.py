"""imap/imap_unordered are bounded by what the *caller* has taken: at most
``window`` chunks are read and submitted beyond those (docs/pool.rst,
"Memory model of imap")."""

from __future__ import annotations

import multiprocessing

import pytest

import poolx
from tests.conftest import wait_until
from tests.engine import helpers


@pytest.fixture
def pool():
    p = poolx.Pool(2, context=multiprocessing.get_context("fork"))
    yield p
    p.terminate()
    p.join()


class Counted:
    """A lazy input that counts the items the feeder read."""

    def __init__(self, n):
        self.read = 0
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            self.read += 1
            yield i






@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [1, 3])
def test_the_feeder_stays_within_the_window_of_what_the_caller_took(pool, method, chunksize):
    source = Counted(10_000)
    results = getattr(pool, method)(helpers.square, source, chunksize, window=4)
    taken = [next(results) for _ in range(5)]
    wait_until(timeout=30, predicate=lambda: source.read >= 4 * chunksize)
    wait_until(timeout=30, predicate=lambda: pool.stats()["completed"] >= -(-source.read // chunksize))
    pool.apply(helpers.square, (1,))  # a full supervisor round: nothing more may be read
    consumed_chunks = 5 // chunksize
    assert source.read <= (consumed_chunks + 4) * chunksize
    taken += [next(results) for _ in range(20)]
    wait_until(timeout=30, predicate=lambda: source.read >= ((25 // chunksize) + 4) * chunksize)
    pool.apply(helpers.square, (1,))
    assert source.read <= ((25 // chunksize) + 4) * chunksize
    if method == "imap":
        assert taken == [x * x for x in range(25)]
    else:
        assert len(set(taken)) == 25


def test_results_waiting_for_the_caller_are_capped(pool):
    results = pool.imap(helpers.identity, iter(range(100_000)), window=8)
    next(results)
    wait_until(timeout=30, predicate=lambda: len(results._items) >= 7)
    pool.apply(helpers.square, (1,))
    assert len(results._items) <= 8  # never more than the window, however long we wait


def test_close_releases_the_window_so_join_returns(pool):
    source = Counted(200)
    results = pool.imap(helpers.square, source, window=2)
    assert next(results) == 0
    pool.close()
    assert pool.join(60)
    assert source.read == 200
    assert list(results) == [x * x for x in range(1, 200)]


def test_terminate_stops_a_paused_feeder(pool):
    source = Counted(10**9)
    results = pool.imap(helpers.square, source, window=2)
    assert next(results) == 0
    pool.terminate()
    assert pool.join(60)
    assert source.read < 100


def test_window_is_checked(pool):
    with pytest.raises(ValueError, match="window must be at least 1"):
        pool.imap(helpers.square, [1], window=0)
    with pytest.raises(TypeError, match="window must be an int"):
        pool.imap_unordered(helpers.square, [1], window=2.5)


def test_a_fast_consumer_gets_everything(pool):
    assert list(pool.imap(helpers.square, range(5000), window=4)) == [x * x for x in range(5000)]
    assert sorted(pool.imap_unordered(helpers.square, iter(range(5000)), 7, window=3)) == \
        [x * x for x in range(5000)]
