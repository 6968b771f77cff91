"""poolx in 30 seconds: the documentation's landing page shows this file.

Run it with ``python examples/quickstart.py``; tests/test_docs.py runs it and
checks that it prints what the page says it prints.
"""

import os
import time

from poolx import Pool
from poolx.exceptions import TimeLimitExceeded, WorkerLostError


def square(x):
    return x * x


def crash():
    os._exit(3)  # the worker process dies mid-job


def hang():
    time.sleep(3600)  # a job that would never end


if __name__ == "__main__":
    with Pool(2, timeout=2) as pool:  # a 2-second hard limit for every job
        print(pool.map(square, range(8)))
        for job in (crash, hang):
            try:
                pool.apply(job)
            except (WorkerLostError, TimeLimitExceeded) as exc:
                print(f"{job.__name__}: {type(exc).__name__}")
        print(pool.apply(square, (12,)), "- the pool goes on")
