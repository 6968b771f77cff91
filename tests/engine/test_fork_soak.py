"""Soak: a multiprocessing.Manager started (fork) while a poolx pool whose
jobs raise is alive, both used, the pool closed without join — hundreds of
times in a row, never an EOFError on the Manager's connections (it failed
about once in 100 rounds when the pool's after-fork hook closed bare fd
numbers that the Manager's server later reused), and never a worker that
waits for ever (once in a few hundred rounds, a worker garbage-collected its
copy of the previous round's pool, whose lock the parent's finishing
supervisor thread held at the fork: see test_fork_safety.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.soak, pytest.mark.timeout(900)]

ROUNDS = 300
PROGRAM = """
import faulthandler, multiprocessing, sys
import poolx
from tests.engine import helpers

def once(ctx):
    pool = poolx.Pool(2, context=ctx)
    result = pool.map_async(helpers.raise_value_error, ["boom"] * 4)
    manager = ctx.Manager()
    queue = manager.Queue()
    try:
        result.get(60)
    except ValueError:
        pass
    except poolx.TimeoutError:  # what the pool and every thread were doing
        print("TIMEOUT", pool.stats(), file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)
        raise
    queue.put("x")
    pool.close()
    assert queue.get(timeout=60) == "x"
    manager.shutdown()

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    for i in range(int(sys.argv[1])):
        once(ctx)
    print("ok")
"""


def test_a_manager_forked_beside_a_pool_keeps_its_connections(tmp_path):
    script = tmp_path / "manager_beside_pool.py"
    script.write_text(PROGRAM)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, str(script), str(ROUNDS)], cwd=root, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": root})
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr[-12000:]
