"""End-to-end task-queue throughput through a *process* worker pool.

Run: ``python3 dev.py bench benchmarks/bench_worker.py`` (or directly with
the venv's python from the repository root).  One scenario, no-op tasks, two
worker processes: a producer in this process enqueues N tasks, then waits for
every result; the rate is N over the time from the first enqueue to the last
result.  Backends:

* ``memory://`` — the queue and the pool in this process (the only way
  memory:// works), results stored through this process's broker (target:
  >= 10,000 tasks/s; WorQ: ~4,500);
* ``redis://`` — a private ``redis-server`` on a free port (skipped when the
  binary is missing; ``--redis URL`` uses an existing server instead), the
  pool in a process of its own as in production, the producer here.

poolx's producer enqueues with ``poolx.core.batch`` and waits with
``poolx.task.wait_all`` (few round trips on redis://); WorQ has neither.

WorQ (``pip install WorQ``) runs the same scenario in the same process when
it is installed, interleaved round by round with poolx so that machine noise
hits both alike; the table shows medians and the ratio poolx / WorQ (> 1 is
faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKERS = 2


# -- tasks and worker init functions (importable as bench_worker by workers) ---------


def noop(value: Any) -> Any:
    return value


def init_poolx(url: str) -> Any:
    from poolx import get_broker

    broker = get_broker(url)
    broker.expose(noop)
    return broker


def init_worq(url: str) -> Any:
    from worq import get_broker

    broker = get_broker(url)
    broker.expose(noop)
    return broker


# -- the scenario ------------------------------------------------------------------------


def _poolx_pool(url: str) -> Any:
    from poolx.pool.process import WorkerPool

    return WorkerPool(init_poolx(url), init_poolx, workers=WORKERS)  # default start method


def _worq_pool(url: str) -> Any:
    from worq.pool.process import WorkerPool

    return WorkerPool(init_worq(url), init_worq, workers=WORKERS)


def serve_poolx(url: str) -> None:
    """A pool process of its own (redis://), until SIGTERM."""
    _poolx_pool(url).start(timeout=1)


def serve_worq(url: str) -> None:
    _worq_pool(url).start(timeout=1)


def _produce_poolx(url: str, n: int) -> float:
    from poolx import get_queue
    from poolx.core import batch
    from poolx.task import wait_all

    q = get_queue(url)
    if not q.noop(0).wait(60):  # workers up
        raise RuntimeError("poolx: the pool does not answer")
    start = time.perf_counter()
    with batch(q):  # few round trips for many tasks on redis://
        results = [q.noop(i) for i in range(n)]
    if not wait_all(results, 300):
        raise RuntimeError("poolx: results missing")
    elapsed = time.perf_counter() - start
    if [res.value for res in results[:: max(1, n // 100)]] != list(range(n))[:: max(1, n // 100)]:
        raise RuntimeError("poolx: wrong results")
    return n / elapsed


def _produce_worq(url: str, n: int) -> float:
    from worq import get_queue

    q = get_queue(url)
    if not q.noop(0).wait(60):
        raise RuntimeError("WorQ: the pool does not answer")
    start = time.perf_counter()
    results = [q.noop(i) for i in range(n)]
    for res in results:
        if not res.wait(300):
            raise RuntimeError(f"WorQ: no result for {res!r}")
    return n / (time.perf_counter() - start)


def _in_process(make_pool: Callable[[str], Any], produce: Callable[[str, int], float]) -> Callable:
    def run(url: str, n: int) -> float:
        pool = make_pool(url)
        pool.start(timeout=1, handle_sigterm=False)
        try:
            return produce(url, n)
        finally:
            pool.stop()

    return run


def _in_subprocess(serve: Callable[[str], None], produce: Callable[[str, int], float]) -> Callable:
    def run(url: str, n: int) -> float:
        from poolx.pool.process import run_in_subprocess

        proc = run_in_subprocess(serve, url)
        try:
            return produce(url, n)
        finally:
            proc.terminate()
            proc.join(30)
            if proc.is_alive():
                proc.kill()

    return run


def _worq_available() -> bool:
    try:
        import worq.pool.process  # noqa: F401
    except Exception:
        return False
    return True


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _private_redis() -> Any:
    """A private redis-server (tests/redis_server.py), or None without one."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.redis_server import RedisServer, redis_binary
    except Exception:
        return None
    binary = redis_binary()
    return RedisServer(binary).start() if binary else None


def _flush(url: str) -> None:
    if url.startswith("redis"):
        import redis

        redis.Redis.from_url(url.split("?")[0]).flushdb()


def bench(name: str, url: str, n: int, rounds: int, libs: dict[str, Callable[[str, int], float]]) -> None:
    rates: dict[str, list[float]] = {lib: [] for lib in libs}
    for round_ in range(rounds):
        for lib, run in libs.items():
            _flush(url)
            try:
                rates[lib].append(run(url, n))
            except Exception as err:  # a peer that cannot run here is reported, not fatal
                print(f"  {lib} on {name} failed: {type(err).__name__}: {err}", file=sys.stderr,
                      flush=True)
                libs = {k: v for k, v in libs.items() if k != lib}
                continue
            print(f"  round {round_ + 1}: {lib} on {name} {rates[lib][-1]:>9,.0f} tasks/s", flush=True)
    poolx_rate = _median(rates["poolx"])
    line = f"{name:<10} poolx {poolx_rate:>9,.0f} tasks/s"
    if rates.get("worq"):
        worq_rate = _median(rates["worq"])
        line += f"   WorQ {worq_rate:>9,.0f} tasks/s   poolx/WorQ {poolx_rate / worq_rate:5.2f}x"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="tasks per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per backend (default 3)")
    parser.add_argument("--redis", metavar="URL", help="use this Redis instead of a private one")
    parser.add_argument("--no-redis", action="store_true", help="skip the redis:// backend")
    args = parser.parse_args(argv)

    # WorQ's workers are fresh interpreters: they must import this module by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    worq = _worq_available()
    if not worq:
        print("(WorQ is not installed: pip install WorQ to compare)", file=sys.stderr)
    print(f"end to end, {args.n} no-op tasks, {WORKERS} worker processes, median of {args.rounds} rounds")
    libs = {"poolx": _in_process(_poolx_pool, _produce_poolx)}
    if worq:
        libs["worq"] = _in_process(_worq_pool, _produce_worq)
    bench("memory://", "memory://", args.n, args.rounds, libs)

    if args.no_redis:
        return 0
    server = None
    url = args.redis
    if url is None:
        server = _private_redis()
        if server is None:
            print("(no redis-server binary: redis:// skipped)", file=sys.stderr)
            return 0
        url = server.url
    libs = {"poolx": _in_subprocess(serve_poolx, _produce_poolx)}
    if worq:
        libs["worq"] = _in_subprocess(serve_worq, _produce_worq)
    try:
        bench("redis://", url, args.n, args.rounds, libs)
    finally:
        if server is not None:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    import bench_worker  # the workers find the tasks under this name

    sys.exit(bench_worker.main())
