"""What a progress bar costs: pool throughput with ``progress_bar`` off and on.

Run: ``python3 dev.py bench benchmarks/bench_progress.py`` (or directly with
the venv's python; tqdm is the ``progress`` extra).  Each scenario runs
without and with a bar in the same process, interleaved round by round, so
machine noise hits both alike; the table shows the median rates and the
median of each round's ratio (with bar / without, both on the same pool:
1.00 is free, 0.97 is 3 % slower), with its range.  On a busy machine
the wall-clock ratios scatter widely; the parent process's CPU time per
call (what the bar adds to the caller, supervisor and tracker threads;
workers are untouched) is the steadier measure of its cost.

The bars write to ``os.devnull`` through a real file object (a terminal
would cost the same writes: tqdm redraws at most every ``mininterval``).
The first bar of a process imports tqdm; that one-time cost is printed
apart (measured in fresh interpreters), and tqdm is imported before the
rounds.

Scenarios (2 workers, fork, no-op tasks; each round makes one pool per
scenario and runs it without and with a bar on that pool):

* map: 1,000,000 items, default chunksize, ``progress_bar`` on the map;
* imap_unordered: 20,000 items, ``chunksize=1`` (one count per item: the
  worst case for the counting path), ``progress_bar`` on it;
* executor map: 20,000 items, ``chunksize=1``, on ``ProcessPoolExecutor.map``;
* apply_async: 20,000 ``apply_async`` then every ``get()``, while an imap's
  bar is on screen (its tracker thread refreshing every 0.1 s): the
  issue's yardstick, the bar must not slow the pool down.

Target (issue 15): < 3 % overhead (ratio >= 0.97) on apply_async with a
bar on; the map scenarios should be within noise too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import poolx

WORKERS = 2
CTX = multiprocessing.get_context("fork")


def noop(x: Any) -> Any:
    return x


def _bar(devnull: Any) -> dict[str, Any]:
    return {"file": devnull}


def run_map(pool: Any, bar: Any, n: int = 1_000_000) -> tuple[float, float]:
    items = list(range(n))
    t, cpu = time.perf_counter(), time.process_time()
    pool.map(noop, items, progress_bar=bar)
    return n / (time.perf_counter() - t), time.process_time() - cpu


def run_imap_unordered(pool: Any, bar: Any, n: int = 20_000) -> tuple[float, float]:
    t, cpu = time.perf_counter(), time.process_time()
    for _ in pool.imap_unordered(noop, range(n), chunksize=1, progress_bar=bar):
        pass
    return n / (time.perf_counter() - t), time.process_time() - cpu


def run_executor_map(executor: Any, bar: Any, n: int = 20_000) -> tuple[float, float]:
    t, cpu = time.perf_counter(), time.process_time()
    for _ in executor.map(noop, range(n), chunksize=1, progress_bar=bar):
        pass
    return n / (time.perf_counter() - t), time.process_time() - cpu


def run_apply_async(pool: Any, bar: Any, n: int = 20_000) -> tuple[float, float]:
    """apply_async throughput while an imap's bar (if any) is on screen: its
    input blocks (on the feeder thread) until the measurement is over, so it
    holds no worker, but its tracker refreshes the bar all along."""
    release = threading.Event()

    def held() -> Any:
        yield 0
        release.wait()

    shown = pool.imap(noop, held(), progress_bar=bar)
    t, cpu = time.perf_counter(), time.process_time()
    results = [pool.apply_async(noop, (i,)) for i in range(n)]
    for result in results:
        result.get()
    rate = n / (time.perf_counter() - t), time.process_time() - cpu
    release.set()
    assert list(shown) == [0]
    return rate


class _NoBar:
    def show(self, items: int, failed: int) -> None:
        pass

    def close(self) -> None:
        pass


def counting_cost(n: int = 100_000) -> tuple[float, float]:
    """Seconds per ``job_done`` of an imap_unordered iterator without and
    with a tracker: what the supervisor thread pays per finished chunk for
    a bar (no processes involved, so it barely depends on the machine's load)."""
    from poolx.engine.progress import Tracker
    from poolx.engine.results import IMapUnorderedIterator

    def run(tracked: bool) -> float:
        tracker = Tracker(_NoBar(), 0.1) if tracked else None
        sink = IMapUnorderedIterator(None, None, tracker, 1)
        value = [1]
        job_done = sink.job_done
        t = time.perf_counter()
        for i in range(n):
            job_done(i, True, value)
        t = time.perf_counter() - t
        if tracker is not None:
            tracker.close()
        return t / n

    costs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(5):
        for tracked in (False, True):
            costs[tracked].append(run(tracked))
    return min(costs[False]), min(costs[True])


def _pool() -> Any:
    pool = poolx.Pool(WORKERS, context=CTX)
    pool.apply(noop, (0,))
    return pool


def _executor() -> Any:
    executor = poolx.ProcessPoolExecutor(WORKERS, mp_context=CTX)
    executor.submit(noop, 0).result()
    return executor


SCENARIOS: dict[str, tuple[Callable[[], Any], Callable[[Any, Any], tuple[float, float]]]] = {
    "map (1M items)": (_pool, run_map),
    "imap_unordered (20k, chunksize=1)": (_pool, run_imap_unordered),
    "executor map (20k, chunksize=1)": (_executor, run_executor_map),
    "apply_async (20k) with a bar on": (_pool, run_apply_async),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rates: dict[tuple[str, bool], list[float]] = {}
    cpus: dict[tuple[str, bool], list[float]] = {}
    # The first bar of a process imports tqdm: a one-time cost, measured
    # apart (in a fresh interpreter), not in the rounds.
    code = "import time; t = time.perf_counter(); import tqdm.auto; print(time.perf_counter() - t)"
    imports = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(3)]
    import tqdm.auto  # noqa: F401
    with open(os.devnull, "w") as devnull:
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}/{args.rounds}", file=sys.stderr, flush=True)
            for name, (make, scenario) in SCENARIOS.items():
                # one pool (executor) per scenario and round, both runs on it;
                # alternate which goes first, so neither always runs warmer
                with make() as runner:
                    for with_bar in ((False, True) if round_no % 2 == 0 else (True, False)):
                        rate, cpu = scenario(runner, _bar(devnull) if with_bar else False)
                        rates.setdefault((name, with_bar), []).append(rate)
                        cpus.setdefault((name, with_bar), []).append(cpu)
    print(f"\nthe first bar of a process imports tqdm: {statistics.median(imports) * 1000:.0f} ms, once")
    plain, counted = counting_cost()
    per_item = 1 / statistics.median(rates[("imap_unordered (20k, chunksize=1)", False)])
    print(f"counting, per finished chunk on the supervisor thread: {plain * 1e9:.0f} ns without a "
          f"tracker, {counted * 1e9:.0f} ns with: +{(counted - plain) * 1e9:.0f} ns, "
          f"{(counted - plain) / per_item:.2%} of an item's cost in imap_unordered(chunksize=1)")
    print(f"\n{args.rounds} rounds, {WORKERS} workers.  Throughput: medians (items/s), and the")
    print("median of each round's with/without ratio (both runs on the same pool, back to")
    print("back) with its range.  Parent CPU: the CPU time of this process (caller,")
    print("supervisor, feeder, tracker threads) per call, medians, with/without ratio.\n")
    print(f"{'scenario':<36} {'no bar':>10} {'bar':>10} {'ratio':>6} {'range':>10}"
          f"  {'CPU s':>6} {'CPU s':>6} {'ratio':>6}")
    for name in SCENARIOS:
        off, on = rates[(name, False)], rates[(name, True)]
        ratios = [b / a for a, b in zip(off, on, strict=True)]
        cpu_off, cpu_on = statistics.median(cpus[(name, False)]), statistics.median(cpus[(name, True)])
        print(f"{name:<36} {statistics.median(off):>10,.0f} {statistics.median(on):>10,.0f} "
              f"{statistics.median(ratios):>6.3f} {min(ratios):>4.2f}-{max(ratios):<4.2f}"
              f"  {cpu_off:>6.3f} {cpu_on:>6.3f} {cpu_on / cpu_off:>6.3f}")


if __name__ == "__main__":
    main()
