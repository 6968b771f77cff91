"""Fair sharing between pools on one Redis (issue 12).

Run: ``python3 dev.py bench benchmarks/bench_fair.py`` (or directly with the
venv's python from the repository root).  A private ``redis-server`` on a
free port (``--redis URL`` uses an existing server), two process pools of
two workers each, each in a process of its own as ``poolx worker`` runs
them, and the producer here.  Per round:

* **makespan**: 200 tiny tasks (waited for), then 8 tasks sleeping
  ``--slow`` seconds; the time from enqueuing the slow ones to their last
  result, against the ideal (8 tasks on 4 workers: 2 x ``--slow``).  Before
  per-name run-time estimates a pool that had just run tiny tasks took all
  the slow ones and ran them on its two workers (2x the ideal);
* **tiny-task throughput**: ``-n`` no-op tasks through both pools (batching
  must still pay).

``--baseline DIR`` runs the same rounds with the poolx found in ``DIR`` (a
checkout of an older commit, e.g. ``git worktree add /tmp/old main``) in a
subprocess and prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POOLS = 2
WORKERS = 2
SLOW_TASKS = 8
TINY_FIRST = 200


def noop(value: Any) -> Any:
    return value


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def init(url: str) -> Any:
    from poolx import get_broker

    broker = get_broker(url)
    broker.expose(noop)
    broker.expose(slow)
    return broker


def serve(url: str) -> None:
    """One pool in a process of its own, until SIGTERM."""
    from poolx.pool.process import WorkerPool

    WorkerPool(init(url), init, workers=WORKERS).start(timeout=1)


def _round(url: str, n: int, seconds: float) -> tuple[float, float]:
    from poolx import get_queue
    from poolx.core import batch
    from poolx.task import wait_all

    q = get_queue(url)
    with batch(q):
        tiny = [q.noop(i) for i in range(TINY_FIRST)]
    if not wait_all(tiny, 60):
        raise RuntimeError("tiny tasks missing")
    start = time.perf_counter()
    with batch(q):
        slow_results = [q.slow(seconds) for _ in range(SLOW_TASKS)]
    if not wait_all(slow_results, 60 + SLOW_TASKS * seconds):
        raise RuntimeError("slow tasks missing")
    makespan = time.perf_counter() - start

    start = time.perf_counter()
    with batch(q):
        results = [q.noop(i) for i in range(n)]
    if not wait_all(results, 300):
        raise RuntimeError("no-op results missing")
    rate = n / (time.perf_counter() - start)
    return makespan, rate


def measure(url: str, n: int, seconds: float, rounds: int) -> dict[str, float]:
    from poolx import get_queue
    from poolx.pool.process import run_in_subprocess

    procs = [run_in_subprocess(serve, url) for _ in range(POOLS)]
    try:
        q = get_queue(url)
        if not q.noop(0).wait(60):
            raise RuntimeError("the pools do not answer")
        makespans, rates = [], []
        for round_ in range(rounds):
            makespan, rate = _round(url, n, seconds)
            makespans.append(makespan)
            rates.append(rate)
            print(f"  round {round_ + 1}: makespan {makespan:5.2f} s, {rate:9,.0f} tiny tasks/s",
                  file=sys.stderr, flush=True)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    return {"makespan": statistics.median(makespans), "rate": statistics.median(rates)}


def _private_redis() -> Any:
    sys.path.append(str(ROOT))  # after the poolx under test (--baseline)
    from tests.redis_server import RedisServer, redis_binary

    binary = redis_binary()
    return RedisServer(binary).start() if binary else None


def _baseline(directory: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([directory, str(HERE)])}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--json", "--redis", url, "-n", str(args.n),
         "--slow", str(args.slow), "--rounds", str(args.rounds)],
        env=env, cwd=directory, stdout=subprocess.PIPE, text=True, check=True,
    )
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="no-op tasks per throughput round")
    parser.add_argument("--slow", type=float, default=1.5, help="seconds each slow task sleeps")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median shown)")
    parser.add_argument("--redis", metavar="URL", help="use this Redis instead of a private one")
    parser.add_argument("--baseline", metavar="DIR", help="also run the poolx found in DIR")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    server = None
    url = args.redis
    if url is None:
        server = _private_redis()
        if server is None:
            print("(no redis-server binary)", file=sys.stderr)
            return 0
        url = server.url
    try:
        figures = {"this": measure(url, args.n, args.slow, args.rounds)}
        if args.json:
            print(json.dumps(figures["this"]))
            return 0
        if args.baseline:
            figures = {"baseline": _baseline(args.baseline, url, args), **figures}
    finally:
        if server is not None:
            server.cleanup()
    ideal = SLOW_TASKS * args.slow / (POOLS * WORKERS)
    print(f"{POOLS} pools x {WORKERS} workers on one Redis; {TINY_FIRST} tiny tasks then "
          f"{SLOW_TASKS} x {args.slow:g} s (ideal makespan {ideal:.2f} s); {args.n} no-op tasks; "
          f"median of {args.rounds} rounds")
    for label, fig in figures.items():
        print(f"{label:<9} makespan {fig['makespan']:5.2f} s ({fig['makespan'] / ideal:4.2f}x ideal)"
              f"   tiny tasks {fig['rate']:9,.0f}/s")
    if "baseline" in figures:
        base, this = figures["baseline"], figures["this"]
        print(f"this/baseline: makespan {this['makespan'] / base['makespan']:4.2f}x, "
              f"tiny-task throughput {this['rate'] / base['rate']:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    import bench_fair  # the workers find the tasks under this name

    sys.exit(bench_fair.main())
