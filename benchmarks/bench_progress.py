"""What a progress bar costs: pool throughput with ``progress_bar`` off and on.

Run: ``python3 dev.py bench benchmarks/bench_progress.py`` (or directly with
the venv's python; tqdm is the ``progress`` extra).  Each scenario runs
without and with a bar in the same process, interleaved round by round, so
machine noise hits both alike; the table shows the median rates and the
median of each round's ratio (with bar / without, both on the same pool:
1.00 is free, 0.97 is 3 % slower), with its range.

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


def run_map(pool: Any, bar: Any, n: int = 1_000_000) -> float:
    items = list(range(n))
    t = time.perf_counter()
    pool.map(noop, items, progress_bar=bar)
    return n / (time.perf_counter() - t)


def run_imap_unordered(pool: Any, bar: Any, n: int = 20_000) -> float:
    t = time.perf_counter()
    for _ in pool.imap_unordered(noop, range(n), chunksize=1, progress_bar=bar):
        pass
    return n / (time.perf_counter() - t)


def run_executor_map(executor: Any, bar: Any, n: int = 20_000) -> float:
    t = time.perf_counter()
    for _ in executor.map(noop, range(n), chunksize=1, progress_bar=bar):
        pass
    return n / (time.perf_counter() - t)


def run_apply_async(pool: Any, bar: Any, n: int = 20_000) -> float:
    """apply_async throughput while an imap's bar (if any) is on screen: its
    input blocks (on the feeder thread) until the measurement is over, so it
    holds no worker, but its tracker refreshes the bar all along."""
    release = threading.Event()

    def held() -> Any:
        yield 0
        release.wait()

    shown = pool.imap(noop, held(), progress_bar=bar)
    t = time.perf_counter()
    results = [pool.apply_async(noop, (i,)) for i in range(n)]
    for result in results:
        result.get()
    rate = n / (time.perf_counter() - t)
    release.set()
    assert list(shown) == [0]
    return rate


def _pool() -> Any:
    pool = poolx.Pool(WORKERS, context=CTX)
    pool.apply(noop, (0,))
    return pool


def _executor() -> Any:
    executor = poolx.ProcessPoolExecutor(WORKERS, mp_context=CTX)
    executor.submit(noop, 0).result()
    return executor


SCENARIOS: dict[str, tuple[Callable[[], Any], Callable[[Any, Any], float]]] = {
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
                        rate = scenario(runner, _bar(devnull) if with_bar else False)
                        rates.setdefault((name, with_bar), []).append(rate)
    print(f"\nthe first bar of a process imports tqdm: {statistics.median(imports) * 1000:.0f} ms, once")
    print(f"\n{args.rounds} rounds, {WORKERS} workers, medians (items/s); ratio: the median of")
    print("each round's with/without ratio (both runs on the same pool, back to back), and")
    print("its range over the rounds\n")
    print(f"{'scenario':<38} {'no bar':>12} {'bar':>12} {'ratio':>7}  range")
    for name in SCENARIOS:
        off, on = rates[(name, False)], rates[(name, True)]
        ratios = [b / a for a, b in zip(off, on, strict=True)]
        print(f"{name:<38} {statistics.median(off):>12,.0f} {statistics.median(on):>12,.0f} "
              f"{statistics.median(ratios):>7.3f}  {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
