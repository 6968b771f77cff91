"""Other multiprocessing children (a Manager's server...) forked while a pool
is alive are not disturbed by the pool's after-fork hook or by their copy of
the pool.  The repetition of the real scenario is in test_fork_soak.py."""

from __future__ import annotations

import gc
import multiprocessing
import threading

import poolx
from tests.conftest import wait_until
from tests.engine import helpers


def test_a_forked_childs_copy_of_the_pool_never_touches_reused_fds():
    ctx = multiprocessing.get_context("fork")
    helpers.HOLDER.append(poolx.Pool(2, context=ctx))
    try:
        assert helpers.HOLDER[0].map(helpers.square, range(8)) == [x * x for x in range(8)]
        child = ctx.Process(target=helpers.pool_copy_gc_spares_reused_fds)
        child.start()
        child.join(60)
        assert child.exitcode == 0, {1: "an fd the child reused was closed",
                                     2: "the child's copy of the pool wrote to a reused fd"}.get(
                                         child.exitcode, child.exitcode)
        assert helpers.HOLDER[0].apply(helpers.square, (3,)) == 9
    finally:
        pool = helpers.HOLDER.pop()
        pool.terminate()
        pool.join()


def test_a_forked_childs_copy_of_the_pool_refuses_jobs():
    """The standard library's copy would queue the job, and its get() would
    wait for ever: nothing in the child runs it."""
    ctx = multiprocessing.get_context("fork")
    helpers.HOLDER.append(poolx.Pool(1, context=ctx))
    try:
        child = ctx.Process(target=helpers.pool_copy_refuses_jobs)
        child.start()
        child.join(60)
        assert child.exitcode == 0, {1: "accepted", 2: "another error"}.get(child.exitcode, child.exitcode)
        assert helpers.HOLDER[0].apply(helpers.square, (3,)) == 9
    finally:
        pool = helpers.HOLDER.pop()
        pool.terminate()
        pool.join()


def _collected_in_a_child_while_held(holder: list[object], lock: threading.Lock) -> int | None:
    """Make the one object in ``holder`` (nothing else may refer to it)
    garbage only the collector can free, fork a child while ``lock`` is held
    (as a parent thread held it at the fork) and let the child collect its
    copy; the child's exit code (None: it hung)."""
    ctx = multiprocessing.get_context("fork")
    cycle: list[object] = [holder.pop()]
    cycle.append(cycle)
    del cycle
    with lock:
        child = ctx.Process(target=gc.collect)
        child.start()
    child.join(30)
    if child.exitcode is None:
        child.kill()
        child.join()
        return None
    return child.exitcode


def test_a_finished_pools_copy_collected_in_a_forked_child_takes_no_lock():
    """A pool closed without join, forked while its finishing supervisor held
    its lock (the last step of its cleanup): the child that garbage-collects
    its copy of the pool must not wait for that lock.  Workers of the next
    pool did, for ever, once in a few hundred rounds of test_fork_soak.py."""
    gc.disable()  # the pool stays uncollected garbage until the child collects it
    try:
        pool = poolx.Pool(1, context=multiprocessing.get_context("fork"))
        pool.close()
        supervisor = pool._supervisor
        wait_until(supervisor.finished.is_set, timeout=30)
        holder: list[object] = [pool]
        del pool
        exitcode = _collected_in_a_child_while_held(holder, supervisor.lock)
        assert exitcode == 0, "the child waited for a lock the fork copied"
    finally:
        gc.enable()


def test_an_executors_copy_collected_in_a_forked_child_takes_no_lock():
    """The same for a ``ProcessPoolExecutor`` collected in a forked child
    while a parent thread held its lock."""
    gc.disable()
    try:
        executor = poolx.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
        assert executor.submit(helpers.square, 4).result(30) == 16
        core = executor._core
        holder: list[object] = [executor]
        del executor
        exitcode = _collected_in_a_child_while_held(holder, core.lock)
        assert exitcode == 0, "the child waited for a lock the fork copied"
    finally:
        gc.enable()
        gc.collect()  # the parent's executor: its finalizer lets it finish
