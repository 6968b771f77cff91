"""concurrent.futures executors side by side: the standard library, poolx, loky, pebble.

Run: ``python3 dev.py bench benchmarks/bench_executor.py`` (or directly with
the venv's python).  Every library runs the same scenarios in the same
process, interleaved round by round, so machine noise hits them all alike;
the table shows medians and the ratio to the standard library's
``ProcessPoolExecutor`` (rates: >1 is better; latencies: <1 is better).
Peers that are not installed are skipped with a line saying so (the
``bench`` extra installs loky and pebble).

Scenarios (2 workers, no-op calls):

* submit + result: 20,000 ``submit(noop, i)``, then every ``result()``
  (pebble: ``schedule``);
* map: 200,000 items, ``chunksize=1000``;
* crash to error: a call kills its worker (SIGKILL); the time from its death
  (the call writes ``time.monotonic()`` just before) to its future failing;
* time limit overshoot (poolx and pebble, the two with per-call limits): a
  call past ``timeout=0.2`` s; how long after the limit its future fails.

Targets (issue 13): submit + result >= 3x the standard library, map >=
1.2x, crash to error <= 20 ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

WORKERS = 2
SUBMITS = 20_000
MAP_ITEMS = 200_000
MAP_CHUNKSIZE = 1000
TIME_LIMIT = 0.2
PEERS = ("loky", "pebble")


def noop(x: Any = None) -> Any:
    return x


def die_noting_when(path: str) -> None:
    """Write the time of death, then die (the clock is shared by all processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, repr(time.monotonic()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# ---------------------------------------------------------------- one executor per library

def _executor(lib: str) -> Any:
    ctx = multiprocessing.get_context("fork")
    if lib == "stdlib":
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(WORKERS, mp_context=ctx)
    if lib == "poolx":
        import poolx

        return poolx.ProcessPoolExecutor(WORKERS, mp_context=ctx)
    if lib == "loky":
        import loky

        return loky.ProcessPoolExecutor(max_workers=WORKERS)
    import pebble

    return pebble.ProcessPool(max_workers=WORKERS)


def _submit(lib: str, ex: Any, fn: Callable[..., Any], *args: Any) -> Any:
    return ex.schedule(fn, args) if lib == "pebble" else ex.submit(fn, *args)


def _close(lib: str, ex: Any) -> None:
    if lib == "pebble":
        ex.stop()
        ex.join()
    elif lib == "poolx":
        ex.shutdown(kill_workers=True)
    else:
        ex.shutdown(wait=True)


def _warm(lib: str, ex: Any) -> None:
    _submit(lib, ex, noop, 0).result()


# ---------------------------------------------------------------- scenarios

def run_submit(lib: str) -> float:
    ex = _executor(lib)
    try:
        _warm(lib, ex)
        t = time.perf_counter()
        futures = [_submit(lib, ex, noop, i) for i in range(SUBMITS)]
        for future in futures:
            future.result()
        t = time.perf_counter() - t
    finally:
        _close(lib, ex)
    return SUBMITS / t


def run_map(lib: str) -> float:
    items = list(range(MAP_ITEMS))
    ex = _executor(lib)
    try:
        _warm(lib, ex)
        t = time.perf_counter()
        if lib == "pebble":
            results = list(ex.map(noop, items, chunksize=MAP_CHUNKSIZE).result())
        else:
            results = list(ex.map(noop, items, chunksize=MAP_CHUNKSIZE))
        t = time.perf_counter() - t
    finally:
        _close(lib, ex)
    assert results == items
    return MAP_ITEMS / t


def run_crash(lib: str) -> float:
    """Milliseconds from a worker's death to its future's error (median of 5)."""
    latencies = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "died_at")
        ex = _executor(lib)
        try:
            for _ in range(5):
                if lib in ("stdlib", "loky") and latencies:  # a crash breaks it for good
                    _close(lib, ex)
                    ex = _executor(lib)
                _warm(lib, ex)
                future = _submit(lib, ex, die_noting_when, path)
                error = future.exception()
                failed_at = time.monotonic()
                assert error is not None
                with open(path) as f:
                    latencies.append((failed_at - float(f.read())) * 1000)
        finally:
            _close(lib, ex)
    return statistics.median(latencies)


def run_time_limit(lib: str) -> float:
    """Milliseconds between a call's hard time limit and its future's error."""
    if lib not in ("poolx", "pebble"):
        return float("nan")
    ex = _executor(lib)
    overshoots = []
    try:
        for _ in range(3):
            _warm(lib, ex)
            started = time.monotonic()
            future = ex.schedule(sleep, (30,), timeout=TIME_LIMIT)
            error = future.exception()
            assert error is not None
            overshoots.append((time.monotonic() - started - TIME_LIMIT) * 1000)
    finally:
        _close(lib, ex)
    return statistics.median(overshoots)


SCENARIOS: list[tuple[str, Callable[[str], float], str]] = [
    (f"submit + result, {SUBMITS:,} no-ops", run_submit, "calls/s"),
    (f"map {MAP_ITEMS:,} items, chunksize {MAP_CHUNKSIZE}", run_map, "items/s"),
    ("crash to error", run_crash, "ms"),
    (f"time limit overshoot ({TIME_LIMIT} s limit)", run_time_limit, "ms"),
]


def _available() -> list[str]:
    libs = ["stdlib", "poolx"]
    for name in PEERS:
        try:
            __import__(name)
            libs.append(name)
        except ImportError:
            print(f"{name} is not installed: skipped (pip install {name}, or the 'bench' extra)")
    return libs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="libraries to run (default: all installed)")
    args = parser.parse_args()
    libs = args.only or _available()
    if "stdlib" not in libs:
        libs.insert(0, "stdlib")  # the reference of every ratio
    print(f"libraries: {', '.join(libs)}; {args.rounds} rounds, {WORKERS} workers, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
    samples: dict[tuple[str, str], list[float]] = {}
    for round_no in range(args.rounds):
        print(f"round {round_no + 1}/{args.rounds}", flush=True)
        for name, func, unit in SCENARIOS:
            for lib in libs:
                try:
                    value = func(lib)
                except Exception as exc:  # a peer failing is a result, not a crash
                    print(f"  {lib} / {name}: failed: {exc!r}", flush=True)
                    value = float("nan")
                if value == value:
                    shown = f"{value:,.1f}" if unit == "ms" else f"{value:,.0f}"
                    print(f"  {lib:8} {name}: {shown} {unit}", flush=True)
                samples.setdefault((name, lib), []).append(value)
    print()
    header = f"{'scenario':44} {'unit':8}" + "".join(f"{lib:>20}" for lib in libs)
    print(header)
    print("-" * len(header))
    for name, _, unit in SCENARIOS:
        base = statistics.median(samples[(name, "stdlib")])
        cells = []
        for lib in libs:
            values = [v for v in samples[(name, lib)] if v == v]
            if not values:
                cells.append(f"{'n/a':>20}")
                continue
            med = statistics.median(values)
            shown = f"{med:,.1f}" if unit == "ms" else f"{med:,.0f}"
            ratio = f" ({med / base:.2f}x)" if base == base and base else ""
            cells.append(f"{shown + ratio:>20}")
        print(f"{name:44} {unit:8}" + "".join(cells))
    print("\nratios are against the standard library's ProcessPoolExecutor in this run "
          "(rates: higher is better; latencies: lower is better)")


if __name__ == "__main__":
    main()
