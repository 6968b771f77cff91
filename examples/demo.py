"""The poolx demo: a pool that survives what hangs ``multiprocessing.Pool``.

Run it with ``python3 dev.py demo`` (or ``python examples/demo.py``).  It
needs no server: everything runs on this machine, in this process and its
workers.
"""

from __future__ import annotations

import os
import time

import poolx
from poolx.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError


def square(x: int) -> int:
    return x * x


def crash(code: int) -> None:
    os._exit(code)  # the worker dies mid-job, as a segfault or the OOM killer would


def slow(seconds: float) -> str:
    try:
        time.sleep(seconds)
        return "finished"
    except SoftTimeLimitExceeded:
        return "cleaned up after the soft time limit"


def main() -> None:
    with poolx.Pool(2) as pool:
        print("map:", pool.map(square, range(10)))
        print("a lambda, which multiprocessing cannot send:", pool.map(lambda x: x + 1, [1, 2, 3]))

        try:
            pool.apply(crash, (7,))
        except WorkerLostError as exc:
            print("a worker died mid-job; only its job failed:", exc)
        print("...and the pool goes on:", pool.apply(square, (12,)))

        print("soft time limit:", pool.apply(slow, (5,), soft_timeout=0.2))
        try:
            pool.apply(time.sleep, (5,), timeout=0.2)
        except TimeLimitExceeded:
            print("hard time limit: the worker was killed and replaced after 0.2 s")
        print("stats:", {k: v for k, v in pool.stats().items() if k != "workers"})


if __name__ == "__main__":
    main()
