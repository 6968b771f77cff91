"""Parent memory of the process pool, poolx beside the standard library, in one run.

Run: ``python3 dev.py bench benchmarks/bench_memory.py`` (or
``python benchmarks/bench_memory.py --quick``).

Each figure comes from a fresh interpreter (so one scenario's garbage never
counts in another's), repeated ``--repeat`` times; the table shows the median
and the poolx/stdlib ratio.

* ``map peak``: ``map(int, range(n))`` over a list of ``n`` small ints with 2
  workers; the parent's peak RSS (``ru_maxrss``) minus its RSS just before the
  call (the input already built).  Target: poolx <= 1.1x the stdlib.
* ``imap slow consumer``: ``imap`` over a lazy 10M-item input, the caller
  taking ~5,000 results/s for ``--seconds`` s; the parent's RSS growth from
  the first result to the end.  Target: flat (poolx < 15 MB in 10 s).
* ``apply_async burst``: 100k ``apply_async`` calls passing one shared
  10 KB ``bytes``, submitted while both workers are busy, then every result
  read; the parent's
  peak RSS growth.  The standard library pickles as its pipe drains (the
  queue holds references); poolx pickles in the caller's thread until 8 MiB
  of pickles wait to be sent, then in its pickler thread shortly before
  each call is sent.  Target: poolx <= 1.1x.
* ``retained after 100k apply_async``: the RSS kept once every result has
  been read and collected, without and with ``timeout=3600`` (a timer per
  job).  Target: the same with and without a limit.
* ``processes of 2 workers``: ``poolx worker memory:// --workers 2`` beside
  a standard-library ``Pool(2)`` with the ``forkserver`` start method (each
  in its own interpreter, once its workers run): how many processes, and
  their unique memory (USS) summed (no ratio: the command's process also
  runs a consumer and a broker).  Target: poolx runs N + 2 processes (the
  stdlib N + 3: its forkserver starts a resource tracker too).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_pool(impl: str, processes: int = 2) -> Any:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    if impl == "poolx":
        import poolx

        return poolx.Pool(processes, context=ctx)
    import multiprocessing.pool

    return multiprocessing.pool.Pool(processes, context=ctx)


def noop(x: Any = None) -> Any:
    return x


def scenario_map(impl: str, n: int, seconds: float) -> float:
    pool = make_pool(impl)
    pool.map(int, range(1000))  # warm up
    data = list(range(n))
    gc.collect()
    before = rss()
    result = pool.map(int, data)
    grown = peak() - before
    assert len(result) == n
    pool.terminate()
    return grown


def scenario_imap(impl: str, n: int, seconds: float) -> float:
    pool = make_pool(impl)
    results = pool.imap(noop, iter(range(10_000_000)))
    next(results)
    start_rss, start = rss(), time.monotonic()
    taken = 0
    while time.monotonic() - start < seconds:
        next(results)
        taken += 1
        if taken % 50 == 0:  # ~5,000 results/s
            time.sleep(0.01)
    grown = rss() - start_rss
    pool.terminate()
    return grown


def scenario_retained(impl: str, n: int, seconds: float, timeout: bool) -> float:
    pool = make_pool(impl)
    pool.map(noop, range(1000))
    gc.collect()
    before = rss()
    kwargs = {"timeout": 3600} if timeout and impl == "poolx" else {}
    for start in range(0, n, 10_000):
        results = [pool.apply_async(noop, (i,), **kwargs) for i in range(start, start + 10_000)]
        for r in results:
            r.get()
        del results
    gc.collect()
    grown = rss() - before
    pool.terminate()
    return grown


def length(x: Any) -> int:
    return len(x)


def wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.01)


def scenario_burst(impl: str, n: int, seconds: float) -> float:
    import tempfile

    pool = make_pool(impl)
    pool.map(noop, range(1000))
    arg = b"x" * 10_000  # one argument, shared by every call
    gate = os.path.join(tempfile.mkdtemp(), "gate")
    gc.collect()
    before = rss()
    busy = [pool.apply_async(wait_for, (gate,)) for _ in range(2)]  # the workers are busy meanwhile
    results = [pool.apply_async(length, (arg,)) for _ in range(n)]
    open(gate, "w").close()
    for r in busy + results:
        r.get()
    grown = peak() - before
    pool.terminate()
    os.unlink(gate)
    return grown


SCENARIOS = {
    "burst": scenario_burst,
    "map": scenario_map,
    "imap": scenario_imap,
    "retained": lambda impl, n, seconds: scenario_retained(impl, n, seconds, False),
    "retained_timeout": lambda impl, n, seconds: scenario_retained(impl, n, seconds, True),
}


def _tree(root: Any) -> tuple[int, float]:
    """Processes in ``root``'s tree and their summed USS."""
    procs = [root, *root.children(recursive=True)]
    return len(procs), float(sum(proc.memory_full_info().uss for proc in procs))


def stdlib_forkserver_pool() -> None:
    """A stdlib Pool(2) under forkserver, its workers running; waits on stdin."""
    import multiprocessing

    pool = multiprocessing.get_context("forkserver").Pool(2)
    pool.map(noop, range(10))
    print("ready", flush=True)
    sys.stdin.read()
    pool.terminate()


def measure_processes(impl: str) -> tuple[int, float]:
    """Processes and total USS of 2 workers (see the module docstring)."""
    import psutil

    root_dir = os.path.dirname(HERE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root_dir, os.environ.get("PYTHONPATH")]))}
    if impl == "poolx":
        cmd = [sys.executable, "-m", "poolx", "worker", "memory://", "--init", "benchmarks.bench_idle:init",
               "--workers", "2", "--name", "bench"]
        proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = 0
        assert proc.stderr is not None
        for line in proc.stderr:  # the command logs each worker's start
            started += "bench: worker" in line and "started" in line
            if started == 2:
                break
    else:
        proc = subprocess.Popen([sys.executable, __file__, "--stdlib-pool"], cwd=root_dir, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()
    try:
        time.sleep(1.0)  # let the workers finish importing
        return _tree(psutil.Process(proc.pid))
    finally:
        if impl == "poolx":
            proc.terminate()
        else:
            proc.communicate("")
        proc.wait(60)


def run_child(scenario: str, impl: str, n: int, seconds: float) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", scenario, impl, str(n), str(seconds)],
        capture_output=True, text=True, check=True, timeout=900,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repetition")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="imap slow-consumer duration")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--stdlib-pool", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stdlib_pool:
        stdlib_forkserver_pool()
        return
    if args.child:
        scenario, impl, n, seconds = args.child
        print(json.dumps(SCENARIOS[scenario](impl, int(n), float(seconds))))
        return
    repeat = 1 if args.quick else args.repeat
    seconds = 3.0 if args.quick else args.seconds
    rows = [("map peak, 1M items", "map", 1_000_000)]
    if not args.quick:
        rows += [("map peak, 5M items", "map", 5_000_000), ("map peak, 10M items", "map", 10_000_000)]
    rows += [
        (f"imap slow consumer, growth over {seconds:g} s", "imap", 0),
        ("apply_async burst, 100k x one 10 KB arg, peak", "burst", 20_000 if args.quick else 100_000),
        ("retained after 100k apply_async", "retained", 20_000 if args.quick else 100_000),
        ("... with timeout=3600 (poolx only)", "retained_timeout", 20_000 if args.quick else 100_000),
    ]
    print(f"{'scenario':44} {'poolx MB':>9} {'stdlib MB':>10} {'ratio':>6}   (median of {repeat})")
    for label, scenario, n in rows:
        figures = {}
        for impl in ("poolx", "stdlib"):
            if scenario == "retained_timeout" and impl == "stdlib":
                continue
            figures[impl] = statistics.median(run_child(scenario, impl, n, seconds) for _ in range(repeat))
        px = figures["poolx"] / 2**20
        std = figures.get("stdlib")
        if std is None:
            print(f"{label:44} {px:9.1f} {'-':>10} {'-':>6}")
        else:
            ratio = figures["poolx"] / std if std > 0 else float("nan")
            print(f"{label:44} {px:9.1f} {std / 2**20:10.1f} {ratio:6.2f}")
    counts: dict[str, list[int]] = {"poolx": [], "stdlib": []}
    uss: dict[str, list[float]] = {"poolx": [], "stdlib": []}
    for _ in range(repeat):  # interleaved rounds
        for impl in counts:
            count, total = measure_processes(impl)
            counts[impl].append(count)
            uss[impl].append(total)
    px_uss, std_uss = (statistics.median(uss[impl]) for impl in ("poolx", "stdlib"))
    print(f"{'processes of 2 workers (poolx worker / Pool)':44} {max(counts['poolx']):9d} "
          f"{max(counts['stdlib']):10d} {'-':>6}")
    # No ratio: the command's process also runs a consumer and a broker.
    print(f"{'... their unique memory (USS) summed':44} {px_uss / 2**20:9.1f} {std_uss / 2**20:10.1f} {'-':>6}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))
    main()
