"""Other multiprocessing children (a Manager's server...) forked while a pool
is alive are not disturbed by the pool's after-fork hook or by their copy of
the pool.  The repetition of the real scenario is in test_fork_soak.py."""

from __future__ import annotations

import multiprocessing

import poolx
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
