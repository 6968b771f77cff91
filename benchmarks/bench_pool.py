"""Pool throughput and footprint: poolx side by side with its peers.

Run: ``python3 dev.py bench benchmarks/bench_pool.py`` (or directly with the
venv's python).  Every library runs the same scenarios in the same process,
interleaved round by round, so machine noise hits them all alike; the table
shows medians and the ratio to the standard library (>1 is better for rates,
<1 is better for times and memory).  Peers that are not installed are
skipped (``pip install billiard loky pebble mpire``).

Scenarios (2 workers, no-op tasks): map over 200k ints; apply_async of 20k
then get; imap_unordered(chunksize=1) over 20k; maxtasksperchild=1 over 500
tasks; cold start (create + first result + close/join); idle parent RSS and
worker USS (fresh interpreter per measurement).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

WORKERS = 2


def noop(x: Any) -> Any:
    return x


def _stdlib(**kw: Any) -> Any:
    return multiprocessing.get_context("fork").Pool(WORKERS, **kw)


def _poolx(**kw: Any) -> Any:
    import poolx

    return poolx.Pool(WORKERS, context=multiprocessing.get_context("fork"), **kw)


def _billiard(**kw: Any) -> Any:
    import billiard

    return billiard.Pool(WORKERS, **kw)


POOLS: dict[str, Callable[..., Any]] = {"stdlib": _stdlib, "poolx": _poolx, "billiard": _billiard}


def _available() -> list[str]:
    names = ["stdlib", "poolx"]
    for name in ("billiard", "loky", "pebble", "mpire"):
        try:
            __import__(name)
            names.append(name)
        except ImportError:
            pass
    return names


# ---------------------------------------------------------------- scenarios per library

def run_map(lib: str, n: int = 200_000) -> float:
    items = list(range(n))
    if lib in POOLS:
        pool = POOLS[lib]()
        pool.apply(noop, (0,))
        t = time.perf_counter()
        pool.map(noop, items)
        t = time.perf_counter() - t
        pool.terminate()
        pool.join()
    elif lib == "loky":
        from loky import get_reusable_executor

        ex = get_reusable_executor(max_workers=WORKERS)
        ex.submit(noop, 0).result()
        t = time.perf_counter()
        list(ex.map(noop, items, chunksize=max(1, n // (WORKERS * 4))))
        t = time.perf_counter() - t
    elif lib == "pebble":
        from pebble import ProcessPool

        with ProcessPool(max_workers=WORKERS) as pool:
            pool.schedule(noop, (0,)).result()
            t = time.perf_counter()
            list(pool.map(noop, items, chunksize=max(1, n // (WORKERS * 4))).result())
            t = time.perf_counter() - t
    else:
        from mpire import WorkerPool

        with WorkerPool(n_jobs=WORKERS) as pool:
            t = time.perf_counter()
            pool.map(noop, items, progress_bar=False)
            t = time.perf_counter() - t
    return n / t


def run_apply_async(lib: str, n: int = 20_000) -> float:
    if lib in POOLS:
        pool = POOLS[lib]()
        pool.apply(noop, (0,))
        t = time.perf_counter()
        results = [pool.apply_async(noop, (i,)) for i in range(n)]
        for r in results:
            r.get()
        t = time.perf_counter() - t
        pool.terminate()
        pool.join()
    elif lib == "loky":
        from loky import get_reusable_executor

        ex = get_reusable_executor(max_workers=WORKERS)
        ex.submit(noop, 0).result()
        t = time.perf_counter()
        futures = [ex.submit(noop, i) for i in range(n)]
        for f in futures:
            f.result()
        t = time.perf_counter() - t
    elif lib == "pebble":
        from pebble import ProcessPool

        with ProcessPool(max_workers=WORKERS) as pool:
            pool.schedule(noop, (0,)).result()
            t = time.perf_counter()
            futures = [pool.schedule(noop, (i,)) for i in range(n)]
            for f in futures:
                f.result()
            t = time.perf_counter() - t
    else:
        from mpire import WorkerPool

        with WorkerPool(n_jobs=WORKERS) as pool:
            t = time.perf_counter()
            results = [pool.apply_async(noop, (i,)) for i in range(n)]
            for r in results:
                r.get()
            t = time.perf_counter() - t
    return n / t


def run_imap_unordered(lib: str, n: int = 20_000) -> float:
    if lib in POOLS:
        pool = POOLS[lib]()
        pool.apply(noop, (0,))
        t = time.perf_counter()
        for _ in pool.imap_unordered(noop, range(n), chunksize=1):
            pass
        t = time.perf_counter() - t
        pool.terminate()
        pool.join()
    elif lib == "mpire":
        from mpire import WorkerPool

        with WorkerPool(n_jobs=WORKERS) as pool:
            t = time.perf_counter()
            for _ in pool.imap_unordered(noop, range(n), chunk_size=1, progress_bar=False):
                pass
            t = time.perf_counter() - t
    else:
        return float("nan")
    return n / t


def run_maxtasks(lib: str, n: int = 500) -> float:
    if lib == "billiard":
        n = 20  # billiard replaces a worker about every 0.5 s: a rate needs few tasks
    if lib in POOLS:
        pool = POOLS[lib](maxtasksperchild=1)
        t = time.perf_counter()
        pool.map(noop, range(n), chunksize=1)
        t = time.perf_counter() - t
        pool.terminate()
        pool.join()
    elif lib == "pebble":
        from pebble import ProcessPool

        with ProcessPool(max_workers=WORKERS, max_tasks=1) as pool:
            t = time.perf_counter()
            list(pool.map(noop, range(n)).result())
            t = time.perf_counter() - t
    elif lib == "mpire":
        from mpire import WorkerPool

        with WorkerPool(n_jobs=WORKERS) as pool:
            t = time.perf_counter()
            pool.map(noop, range(n), worker_lifespan=1, chunk_size=1, progress_bar=False)
            t = time.perf_counter() - t
    else:
        return float("nan")
    return n / t


def run_cold_start(lib: str) -> float:
    if lib not in POOLS:
        return float("nan")
    t = time.perf_counter()
    pool = POOLS[lib]()
    pool.apply(noop, (1,))
    pool.close()
    pool.join()
    return time.perf_counter() - t


def measure_memory(lib: str) -> dict[str, float]:
    """In a fresh interpreter: parent RSS with an idle pool, mean worker USS."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = "\n".join([
        "import json, psutil, sys",
        f"sys.path.insert(0, {here!r})",
        "import bench_pool as b",
        f"pool = b.POOLS[{lib!r}]()",
        "pool.apply(b.noop, (1,))",
        "me = psutil.Process()",
        "kids = me.children()",
        "uss = sum(k.memory_full_info().uss for k in kids) / max(1, len(kids))",
        "print(json.dumps({'rss': me.memory_info().rss / 2**20, 'uss': uss / 2**20}))",
        "pool.terminate()",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


SCENARIOS: list[tuple[str, Callable[[str], float], str, bool]] = [
    ("map 200k no-ops", run_map, "items/s", True),
    ("apply_async 20k", run_apply_async, "tasks/s", True),
    ("imap_unordered 20k (chunksize=1)", run_imap_unordered, "items/s", True),
    ("maxtasksperchild=1, 500 tasks", run_maxtasks, "tasks/s", True),
    ("cold start", run_cold_start, "s", False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="libraries to run (default: all installed)")
    args = parser.parse_args()
    libs = args.only or _available()
    print(f"libraries: {', '.join(libs)}; {args.rounds} rounds, {WORKERS} workers, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    samples: dict[tuple[str, str], list[float]] = {}
    for round_no in range(args.rounds):
        print(f"round {round_no + 1}/{args.rounds}", flush=True)
        for name, func, unit, _ in SCENARIOS:
            for lib in libs:
                try:
                    value = func(lib)
                except Exception as exc:  # a peer failing is a result, not a crash
                    print(f"  {lib} / {name}: failed: {exc!r}", flush=True)
                    value = float("nan")
                samples.setdefault((name, lib), []).append(value)
                if value == value:  # each result as it is measured (nan: failed, said above)
                    base = samples.get((name, "stdlib"), [float("nan")])[-1]
                    ratio = f"  ({value / base:.2f}x stdlib)" if lib != "stdlib" and base == base and base else ""
                    shown = f"{value:,.0f}" if unit != "s" else f"{value:.3f}"
                    print(f"  {name:38} {lib:10} {shown:>12} {unit}{ratio}", flush=True)
    print()
    header = f"{'scenario':38} {'unit':8}" + "".join(f"{lib:>18}" for lib in libs)
    print(header)
    print("-" * len(header))
    for name, _, unit, _higher in SCENARIOS:
        base = statistics.median(samples[(name, "stdlib")])
        cells = []
        for lib in libs:
            med = statistics.median(samples[(name, lib)])
            if med != med:  # nan
                cells.append(f"{'n/a':>18}")
                continue
            ratio = med / base
            shown = f"{med:,.0f}" if unit != "s" else f"{med:.3f}"
            cells.append(f"{shown + f' ({ratio:.2f}x)':>18}")
        print(f"{name:38} {unit:8}" + "".join(cells), flush=True)
    memory = {}
    for lib in libs:
        if lib in POOLS:
            memory[lib] = measure_memory(lib)
            print(f"  memory {lib:10} idle parent RSS {memory[lib]['rss']:.1f} MiB, "
                  f"worker USS {memory[lib]['uss']:.1f} MiB", flush=True)
    for key, label in (("rss", "idle parent RSS"), ("uss", "worker USS")):
        base = memory["stdlib"][key]
        cells = "".join(
            f"{f'{memory[lib][key]:.1f} ({memory[lib][key] / base:.2f}x)':>18}" if lib in memory
            else f"{'n/a':>18}" for lib in libs)
        print(f"{label:38} {'MiB':8}" + cells)
    print("\nratios are against the standard library in this run "
          "(rates: higher is better; times and memory: lower is better)")


if __name__ == "__main__":
    main()
