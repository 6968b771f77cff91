"""Soft and hard time limits, pool-wide and per call.

A soft limit raises SoftTimeLimitExceeded *inside* the task, which may catch
it to clean up; a hard limit kills the worker (a replacement starts) and the
caller gets TimeLimitExceeded.
"""

import time

from poolx import Pool
from poolx.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded


def crunch(seconds: float) -> str:
    try:
        time.sleep(seconds)  # stands for real work
        return "done"
    except SoftTimeLimitExceeded:
        return "stopped early, partial results saved"


if __name__ == "__main__":
    with Pool(2, soft_timeout=0.5, timeout=2) as pool:
        print("fast job:", pool.apply(crunch, (0.1,)))
        print("slow job:", pool.apply(crunch, (10,)))  # soft limit after 0.5 s
        try:
            pool.apply(time.sleep, (10,), timeout=0.3)  # per-call hard limit
        except TimeLimitExceeded as exc:
            print("hard limit:", type(exc).__name__, exc)
        # map: limits apply to each chunk (chunksize=1 makes them per item)
        print("map:", pool.map(crunch, [0.1, 10, 0.1], chunksize=1))
