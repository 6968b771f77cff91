"""Big arguments and results: poolx's shared memory side by side with its peers.

Run: ``python3 dev.py bench benchmarks/bench_payload.py`` (or directly with
the venv's python; ``--sizes 1KB,1MB,50MB`` for a quicker run).  For each
payload kind (``bytes``, and numpy arrays when numpy is installed) and size
(1 KB, 1 MB, 50 MB, 500 MB), one ``apply`` sends the payload to a worker
(*send*: the worker returns its length) and one receives it (*recv*: the
worker returns a payload it built before the timing).  2 workers; every
library runs in the same process, interleaved round by round.  In a round,
each library in turn makes ``--repeat`` send/recv pairs back to back, as a
loop or a map over big items does: *steady* rows show its later calls,
*first* rows the first call of its turn, made after the other libraries
ran (seconds at 500 MB: whatever a library keeps warm between calls is
gone by then, and freshly faulted memory costs most on a virtual machine
that hands freed memory back to its host).  Each cell: the median rate of the rounds
(``--best``: the best) in GB/s, its ratio to the standard library's, and
its share of the single-copy rate of this machine (``bytearray(payload)``),
the limit of any transport that copies once.  Peers that are not installed
are skipped (``pip install loky mpire numpy``: the ``bench`` extra).

Last, the parent's peak RSS for a 500 MB round trip (send it, get it back),
as a multiple of the payload, measured in a fresh interpreter per library.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

WORKERS = 2
UNITS = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
_cache: dict[tuple[int, str], Any] = {}


def build(n: int, kind: str) -> Any:
    if kind == "numpy":
        import numpy

        array = numpy.empty(n // 8, dtype=numpy.float64)
        array.view(numpy.uint8)[:] = 7
        return array
    return b"\x07" * n


def length(payload: Any) -> int:
    return len(payload)


def echo(payload: Any) -> Any:
    return payload


def warm(n: int, kind: str) -> int:
    """Build this worker's payload outside the timing."""
    if (n, kind) not in _cache:
        _cache.clear()
        _cache[(n, kind)] = build(n, kind)
    return 0


def touch(payload: Any) -> None:
    """Read one byte of every page."""
    view = memoryview(payload).cast("B")
    sum(view[::4096])


def make(n: int, kind: str) -> Any:
    warm(n, kind)
    return _cache[(n, kind)]


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def _label(n: int) -> str:
    for unit in ("GB", "MB", "KB"):
        if n >= UNITS[unit]:
            return f"{n // UNITS[unit]} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- libraries


class Runner:
    """One library's pool, kept for the whole run: ``call(func, *args)``."""

    def __init__(self, lib: str) -> None:
        self.lib = lib
        fork = multiprocessing.get_context("fork")
        if lib == "stdlib":
            self.pool: Any = fork.Pool(WORKERS)
        elif lib == "poolx":
            import poolx

            self.pool = poolx.Pool(WORKERS, context=fork)
        elif lib == "poolx-pipe":
            import poolx

            self.pool = poolx.Pool(WORKERS, context=fork, shm_threshold=None)
        elif lib == "loky":
            from loky import get_reusable_executor

            self.pool = get_reusable_executor(max_workers=WORKERS)
        else:
            from mpire import WorkerPool

            self.pool = WorkerPool(n_jobs=WORKERS, start_method="fork")
            self.pool.__enter__()

    def call(self, func: Any, *args: Any) -> Any:
        if self.lib == "loky":
            return self.pool.submit(func, *args).result()
        return self.pool.apply(func, args)

    def warm(self, n: int, kind: str) -> None:
        for _ in range(4 * WORKERS):
            self.call(warm, n, kind)

    def close(self) -> None:
        if self.lib == "loky":
            self.pool.shutdown()
        elif self.lib == "mpire":
            self.pool.__exit__(None, None, None)
        else:
            self.pool.terminate()
            self.pool.join()


def _available(libs: list[str]) -> list[str]:
    found = []
    for lib in libs:
        if lib in ("loky", "mpire"):
            try:
                __import__(lib)
            except ImportError:
                continue
        found.append(lib)
    return found


def memcpy_rate(n: int = 50 << 20) -> float:
    data = b"\x07" * n
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        copy = bytearray(data)
        best = min(best, time.perf_counter() - t)
        del copy
    return n / best / 1e9


# ---------------------------------------------------------------- peak RSS


def peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM: unlike ru_maxrss, not
    inherited from the process that started this one)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_child(lib: str, n: int, kind: str) -> None:
    """In a fresh interpreter: peak RSS of a round trip, over the payload."""
    runner = Runner(lib)
    runner.call(length, b"")
    payload = build(n, kind)
    before = peak_rss()
    back = runner.call(echo, payload)
    assert len(back) == len(payload)
    touch(back)  # a lazily mapped result counts once its pages are read
    del back
    peak = peak_rss()
    runner.close()
    base = before - n  # the interpreter and the pool, without the payload
    print(f"{(peak - base) / n:.2f}")


def rss_row(lib: str, n: int, kind: str) -> str:
    out = subprocess.run([sys.executable, __file__, "--rss-child", lib, str(n), kind],
                         capture_output=True, text=True, timeout=600)
    return out.stdout.strip() or "error: " + out.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1KB,1MB,50MB,500MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3,
                        help="send/recv pairs per library per round (the first is the 'first' row)")
    parser.add_argument("--libs", default="stdlib,poolx,poolx-pipe,loky,mpire")
    parser.add_argument("--rss-child", nargs=3, metavar=("LIB", "BYTES", "KIND"))
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--best", action="store_true",
                        help="the best of the rounds instead of their median (a quiet machine)")
    args = parser.parse_args()
    if args.rss_child:
        lib, n, kind = args.rss_child
        rss_child(lib, int(n), kind)
        return

    import bench_payload as me  # workers find the functions by name (loky pickles __main__'s by value)

    sizes = [_parse_size(s) for s in args.sizes.split(",")]
    kinds = ["bytes"]
    try:
        import numpy  # noqa: F401

        kinds.append("numpy")
    except ImportError:
        print("numpy is not installed: bytes only")
    libs = _available(args.libs.split(","))
    copy = memcpy_rate()
    print(f"single-copy rate of this machine (bytearray of 50 MB): {copy:.2f} GB/s")
    stat = "best" if args.best else "median"
    print(f"{WORKERS} workers, fork, {stat} of {args.rounds} rounds of {args.repeat} calls each way per "
          f"library; libraries: {', '.join(libs)}\n")
    runners = {lib: Runner(lib) for lib in libs}
    try:
        print(f"{'payload':<16}{'dir':<13}" + "".join(f"{lib:>22}" for lib in libs))
        for kind in kinds:
            for n in sizes:
                payload = me.build(n, kind)
                for lib in libs:
                    runners[lib].warm(n, kind)
                rates: dict[tuple[str, str, str], list[float]] = {}
                modes = ("steady", "first") if args.repeat > 1 else ("first",)
                for _ in range(args.rounds):
                    for lib in libs:
                        runner = runners[lib]
                        steady: dict[str, list[float]] = {"send": [], "recv": []}
                        for call in range(args.repeat):
                            t = time.perf_counter()
                            assert runner.call(me.length, payload) == len(payload)
                            send = time.perf_counter() - t
                            t = time.perf_counter()
                            back = runner.call(me.make, n, kind)
                            recv = time.perf_counter() - t
                            assert len(back) == len(payload)
                            del back
                            for direction, seconds in (("send", send), ("recv", recv)):
                                if call == 0:
                                    rates.setdefault((lib, direction, "first"), []).append(n / seconds / 1e9)
                                else:
                                    steady[direction].append(n / seconds / 1e9)
                        for direction, values in steady.items():
                            if values:
                                rates.setdefault((lib, direction, "steady"), []).append(statistics.median(values))
                best = {key: max(values) if args.best else statistics.median(values)
                        for key, values in rates.items()}
                del payload
                for mode in modes:
                    for direction in ("send", "recv"):
                        base = best[("stdlib", direction, mode)] if "stdlib" in libs else None
                        cells = []
                        for lib in libs:
                            rate = best[(lib, direction, mode)]
                            ratio = f" {rate / base:4.1f}x" if base else ""
                            share = f" {100 * rate / copy:3.0f}%" if n >= UNITS["MB"] else ""
                            cells.append(f"{rate:8.3f}{ratio}{share}")
                        print(f"{kind + ' ' + _label(n):<16}{direction + ' ' + mode:<13}"
                              + "".join(f"{c:>22}" for c in cells), flush=True)
    finally:
        for runner in runners.values():
            runner.close()
    if args.no_rss:
        return
    n = max(sizes)
    print(f"\nparent peak RSS of a {_label(n)} round trip, as a multiple of the payload "
          "(fresh interpreter each):")
    for kind in kinds:
        print(f"  {kind:<6}" + "".join(f"  {lib}: {rss_row(lib, n, kind)}" for lib in libs), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
