"""Memory limits: billiard's max_memory_per_child and poolx's memory_limit."""

from __future__ import annotations

import multiprocessing

import pytest

import poolx
from poolx.checks import parse_size
from poolx.exceptions import MemoryLimitExceeded
from tests.engine import helpers

MiB = 2**20


def test_memory_limit_stops_a_runaway_job_and_the_pool_goes_on(fork_ctx):
    with poolx.Pool(1, memory_limit="200MB", memory_poll_interval=0.02, context=fork_ctx) as pool:
        pid = pool.apply(helpers.getpid)
        with pytest.raises(MemoryLimitExceeded) as info:
            pool.apply(helpers.allocate_until_stopped)
        error = info.value
        assert error.limit == 200 * 1000**2
        assert error.rss > error.limit and error.pid == pid
        assert "over the job's memory limit" in str(error)
        assert pool.apply(helpers.getpid) != pid  # replaced
        assert pool.apply(helpers.square, (4,)) == 16
        assert pool.stats()["memory_killed"] == 1


def test_per_call_memory_limit(fork_ctx):
    with poolx.Pool(1, memory_poll_interval=0.02, context=fork_ctx) as pool:
        with pytest.raises(MemoryLimitExceeded):
            pool.apply_async(helpers.allocate_until_stopped, memory_limit=150 * MiB).get(60)
        with pytest.raises(MemoryLimitExceeded):
            pool.map(helpers.allocate_until_stopped, [10 * MiB], memory_limit="150MiB")
        assert pool.apply(helpers.allocate_and_free, (50 * MiB,), memory_limit="1GB")


def test_max_memory_per_child_retires_a_worker_that_keeps_memory(fork_ctx):
    with poolx.Pool(1, max_memory_per_child=150 * 1024, context=fork_ctx) as pool:
        first = pool.apply(helpers.allocate_and_keep, (200 * MiB,))
        second = pool.apply(helpers.getpid)
        assert first != second
        assert pool.stats()["restarts"] == 0  # a graceful retirement, not a crash


def test_max_memory_per_child_ignores_freed_memory(fork_ctx):
    with poolx.Pool(1, max_memory_per_child=150 * 1024, context=fork_ctx) as pool:
        pids = {pool.apply(helpers.allocate_and_free, (300 * MiB,)) for _ in range(5)}
        assert len(pids) == 1


def test_max_memory_per_child_ignores_memory_shared_with_a_large_parent():
    ballast = bytearray(300 * MiB)  # touched: resident in the parent
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])
    ctx = multiprocessing.get_context("fork")
    with poolx.Pool(1, max_memory_per_child=150 * 1024, context=ctx) as pool:
        pids = {pool.apply(helpers.getpid) for _ in range(5)}
        assert len(pids) == 1
    del ballast


@pytest.mark.parametrize(
    "text, size",
    [("512MB", 512 * 1000**2), ("1.5GiB", int(1.5 * 2**30)), ("100k", 100_000), ("42", 42),
     (1024, 1024)],
)
def test_parse_size(text, size):
    assert parse_size("memory_limit", text) == size


@pytest.mark.parametrize("bad", ["", "12 parsecs", "-5MB", 0, True, [1]])
def test_parse_size_rejects(bad):
    with pytest.raises((ValueError, TypeError), match="memory_limit"):
        parse_size("memory_limit", bad)
