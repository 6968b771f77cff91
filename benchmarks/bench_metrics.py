"""What Prometheus metrics cost on ``apply_async`` throughput.

Run: ``python3 dev.py bench benchmarks/bench_metrics.py`` (or directly with
the venv's python).  Three pools run the same scenario in the same process,
interleaved round by round so machine noise hits them alike: no metrics; an
exporter nobody scrapes (``metrics_port=0``); and an exporter scraped every
second over HTTP, as Prometheus would (``--interval``).  Scenario: 2 fork
workers, ``apply_async`` of N no-op tasks, then ``get`` of each.  The table
shows medians and the ratio to the pool without metrics (target: >= 0.97,
i.e. under 3 % slower): wall-clock throughput, and the parent process's CPU
time per task (supervisor, caller and scraper threads; steadier than the
wall clock on a loaded machine, where other processes take turns on the
cores).  The cost of one scrape is also timed alone: at one scrape per
second, that is the exporter's whole cost.

The per-task-name tally behind ``stats()["tasks"]`` is always kept (it is
what the exporter reads), so its cost is in every row; the last line
estimates it by timing the tally's calls alone against a task's cost.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
import urllib.request
from typing import Any

import poolx
from poolx import tally

WORKERS = 2
TARGET = 0.97


def noop(x: Any) -> Any:
    return x


class Scraper:
    """Scrapes ``url`` every ``interval`` seconds on a thread until stopped."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.stop = threading.Event()
        self.scrapes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            with urllib.request.urlopen(self.url, timeout=10) as response:
                response.read()
            self.scrapes += 1
            self.stop.wait(self.interval)  # the scrape interval, as Prometheus's

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.scrapes


def run(variant: str, n: int, interval: float) -> tuple[float, float, int]:
    """Tasks per second of one round, the parent's CPU seconds per task, and
    the scrapes made during it."""
    kw = {} if variant == "off" else {"metrics_port": 0}
    pool = poolx.Pool(WORKERS, context=multiprocessing.get_context("fork"), **kw)
    try:
        pool.apply(noop, (0,))
        scraper = Scraper(pool.metrics_server.url, interval) if variant == "scraped" else None
        start, cpu = time.perf_counter(), time.process_time()
        results = [pool.apply_async(noop, (i,)) for i in range(n)]
        for result in results:
            result.get()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        scrapes = scraper.close() if scraper is not None else 0
    finally:
        pool.terminate()
        pool.join()
    return n / seconds, cpu / n, scrapes


def scrape_cost(scrapes: int = 200) -> float:
    """Seconds of one scrape over HTTP (a pool that ran a few tasks)."""
    with poolx.Pool(WORKERS, context=multiprocessing.get_context("fork"), metrics_port=0) as pool:
        pool.map(noop, range(100), chunksize=1)
        url = pool.metrics_server.url
        start = time.perf_counter()
        for _ in range(scrapes):
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
        return (time.perf_counter() - start) / scrapes


def tally_cost(calls: int = 50_000, repeats: int = 5) -> float:
    """Seconds per job of the tally's work (its name, one ended() call):
    the best of ``repeats`` runs, as timeit reports (the others measure the
    machine's other processes)."""
    t = tally.TaskTally()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            t.ended(tally.task_name(noop), None, 0.0001, False)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    args = parser.parse_args()
    variants = ("off", "unscraped", "scraped")
    rates: dict[str, list[float]] = {v: [] for v in variants}
    cpus: dict[str, list[float]] = {v: [] for v in variants}
    scrapes = 0
    for _ in range(args.rounds):
        for variant in variants:
            rate, cpu, made = run(variant, args.tasks, args.interval)
            rates[variant].append(rate)
            cpus[variant].append(cpu)
            scrapes += made
    base = statistics.median(rates["off"])
    base_cpu = statistics.median(cpus["off"])
    print(f"apply_async + get of {args.tasks} no-op tasks, {WORKERS} workers, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'variant':<34}{'tasks/s':>10}{'ratio':>7}  {'rounds: min - max':>18}"
          f"{'CPU us/task':>13}{'ratio':>7}")
    labels = {"off": "no metrics", "unscraped": "exporter on, never scraped",
              "scraped": f"exporter on, scraped every {args.interval:g} s"}
    worst = worst_cpu = 1.0
    for variant in variants:
        median = statistics.median(rates[variant])
        ratio = median / base
        cpu = statistics.median(cpus[variant])
        cpu_ratio = base_cpu / cpu  # >1 is better, as for throughput
        worst, worst_cpu = min(worst, ratio), min(worst_cpu, cpu_ratio)
        print(f"{labels[variant]:<34}{median:>10.0f}{ratio:>7.3f}  "
              f"{min(rates[variant]):>8.0f} - {max(rates[variant]):<7.0f}"
              f"{cpu * 1e6:>13.1f}{cpu_ratio:>7.3f}")
    print(f"scrapes made while measuring: {scrapes}")
    one_scrape = scrape_cost()
    print(f"one scrape: {one_scrape * 1e3:.2f} ms = {one_scrape / args.interval:.2%} of the "
          f"time at one scrape every {args.interval:g} s")
    per_task = tally_cost()
    print(f"task tally (always on): {per_task * 1e6:.2f} us per task = "
          f"{per_task * base:.2%} of a task's cost at the rate without metrics")
    print(f"target: ratio >= {TARGET}: throughput {'met' if worst >= TARGET else 'NOT met'}, "
          f"CPU {'met' if worst_cpu >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
