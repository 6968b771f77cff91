"""Memory limits: stop a runaway task, recycle a leaky worker.

``memory_limit`` is enforced *during* a task (the supervisor samples the
worker's memory); ``max_memory_per_child`` (KiB, billiard's unit) retires a
worker after a task when it holds more than that.
"""

import os

from poolx import Pool
from poolx.exceptions import MemoryLimitExceeded

_cache = []


def runaway() -> None:
    hoard = []
    while True:  # allocates until the pool stops it
        hoard.append(bytearray(10 * 2**20))


def leaky(n: int) -> int:
    _cache.append(bytearray(60 * 2**20))  # forgets to free
    return os.getpid()


if __name__ == "__main__":
    with Pool(1, memory_limit="300MB", memory_poll_interval=0.02) as pool:
        try:
            pool.apply(runaway)
        except MemoryLimitExceeded as exc:
            print("stopped:", exc)
        print("the pool goes on:", pool.apply(sum, ([1, 2, 3],)))

    with Pool(1, max_memory_per_child=100 * 1024) as pool:
        pids = [pool.apply(leaky, (i,)) for i in range(4)]
        print("workers used for 4 leaky tasks:", len(set(pids)))
