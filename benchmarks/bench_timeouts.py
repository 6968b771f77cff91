"""Time-limit precision: how late do soft and hard limits fire?

Run: ``python3 dev.py bench benchmarks/bench_timeouts.py``.

Soft limit: the job records when it started and when it caught
``SoftTimeLimitExceeded``; lateness = caught - (started + limit).
Hard limit: one job at a time on a warm, idle pool; lateness = the moment
``get()`` raised - (submitted + limit), an upper bound (it includes the
dispatch latency).  Medians and worst cases over many jobs, poolx beside
billiard and pebble (when installed); lower is better.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

LIMIT = 0.2


def soft_job(seconds: float, exc_type_path: str) -> tuple[float, float]:
    import importlib

    module, _, name = exc_type_path.rpartition(".")
    soft_exc = getattr(importlib.import_module(module), name)
    started = time.monotonic()
    try:
        time.sleep(seconds)
    except soft_exc:
        return started, time.monotonic()
    return started, float("nan")


def soft_lateness(pool: Any, exc_path: str, samples: int, **limits: Any) -> list[float]:
    late = []
    for _ in range(samples):
        started, caught = pool.apply_async(soft_job, (5 * LIMIT, exc_path), **limits).get(30)
        late.append(caught - started - LIMIT)
    return late


def hard_lateness(submit: Any, samples: int) -> list[float]:
    late = []
    for _ in range(samples):
        t0 = time.monotonic()
        try:
            submit()
        except Exception:
            pass
        late.append(time.monotonic() - t0 - LIMIT)
    return late


def measure_poolx(samples: int) -> dict[str, list[float]]:
    import poolx

    with poolx.Pool(2) as pool:
        pool.apply(time.sleep, (0,))
        soft = soft_lateness(pool, "poolx.exceptions.SoftTimeLimitExceeded", samples,
                             soft_timeout=LIMIT)
        hard = hard_lateness(lambda: pool.apply(time.sleep, (10,), timeout=LIMIT), samples)
    return {"soft": soft, "hard": hard}


def measure_billiard(samples: int) -> dict[str, list[float]]:
    import billiard

    pool = billiard.Pool(2, soft_timeout=LIMIT, timeout=10)
    pool.apply(time.sleep, (0,))
    soft = soft_lateness(pool, "billiard.exceptions.SoftTimeLimitExceeded", samples)
    pool.terminate()
    pool = billiard.Pool(2, timeout=LIMIT)
    pool.apply(time.sleep, (0,))
    hard = hard_lateness(lambda: pool.apply_async(time.sleep, (10,)).get(30), samples)
    pool.terminate()
    return {"soft": soft, "hard": hard}


def measure_pebble(samples: int) -> dict[str, list[float]]:
    from pebble import ProcessPool

    with ProcessPool(max_workers=2) as pool:
        pool.schedule(time.sleep, (0,)).result()
        hard = hard_lateness(lambda: pool.schedule(time.sleep, (10,), timeout=LIMIT).result(), samples)
    return {"hard": hard}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    print(f"limit {LIMIT * 1000:.0f} ms; lateness in ms (median / worst); lower is better")
    print(f"{'library':10} {'soft median':>12} {'soft worst':>11} {'hard median':>12} {'hard worst':>11}",
          flush=True)
    results: dict[str, dict[str, list[float]]] = {}
    measures = (("poolx", measure_poolx, args.samples),
                ("billiard", measure_billiard, max(5, args.samples // 3)),
                ("pebble", measure_pebble, max(5, args.samples // 3)))
    for name, func, samples in measures:
        if name != "poolx":
            try:
                __import__(name)
            except ImportError:
                continue
        try:
            kinds = results[name] = func(samples)
        except Exception as exc:  # a peer failing is a result, not a crash (billiard can race)
            if name == "poolx":
                raise
            print(f"{name:10} failed: {exc!r}", flush=True)
            continue
        cells = []
        for kind in ("soft", "hard"):
            values = kinds.get(kind)
            if values:
                cells += [f"{statistics.median(values) * 1000:12.1f}", f"{max(values) * 1000:11.1f}"]
            else:
                cells += [f"{'n/a':>12}", f"{'n/a':>11}"]
        print(f"{name:10} " + " ".join(cells), flush=True)  # each row as it is measured
    base = results["poolx"]
    for name, kinds in results.items():
        if name == "poolx":
            continue
        for kind in ("soft", "hard"):
            if kinds.get(kind):
                ratio = statistics.median(kinds[kind]) / max(statistics.median(base[kind]), 1e-4)
                print(f"{name} {kind} limit fires {ratio:.0f}x later than poolx's (median)", flush=True)


if __name__ == "__main__":
    main()
