"""CPU-bound work from asyncio, on poolx's ProcessPoolExecutor.

``loop.run_in_executor`` works as with the standard library's executor.
What poolx adds: a call that crashes its worker fails alone (the executor
goes on), per-call time limits, and a way to stop a running call when the
coroutine awaiting it is cancelled (``executor.terminate(future)``), so a
timed-out request never leaves a worker busy with work nobody wants.
"""

import asyncio
import os
import time

from poolx import ProcessPoolExecutor
from poolx.exceptions import TimeLimitExceeded, WorkerLostError


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def crash() -> None:
    os._exit(1)  # stands for a segfault in a C extension


def stuck(seconds: float) -> str:
    time.sleep(seconds)  # stands for work that takes far too long
    return "finished"


async def run_stoppable(executor: ProcessPoolExecutor, fn, *args):
    """Await a call; if the awaiting task is cancelled, stop the call too.

    ``run_in_executor`` alone cancels a call only while it waits for a
    worker; a running one would go on to the end (its result unused).
    """
    future = executor.submit(fn, *args)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        executor.terminate(future)  # kills the worker running it; a new one starts
        raise


async def main() -> None:
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=2) as executor:
        results = await asyncio.gather(*(loop.run_in_executor(executor, fib, n) for n in range(20, 25)))
        print("fib(20..24):", results)

        try:
            await loop.run_in_executor(executor, crash)
        except WorkerLostError as exc:  # also a concurrent.futures BrokenProcessPool
            print("a worker died; only its call failed:", type(exc).__name__)
        print("the executor goes on:", await loop.run_in_executor(executor, fib, 10))

        try:
            await asyncio.wrap_future(executor.schedule(stuck, (60,), timeout=0.5))  # a hard limit
        except TimeLimitExceeded:
            print("hard time limit: the call was stopped")

        try:
            await asyncio.wait_for(run_stoppable(executor, stuck, 60), timeout=0.5)
        except asyncio.TimeoutError:
            print("request timed out: its call was terminated too")
        print("the next call:", await loop.run_in_executor(executor, fib, 15))
        busy = sum(w["state"] == "busy" for w in executor.stats()["workers"])
        print("calls still running in the workers:", busy)


if __name__ == "__main__":
    asyncio.run(main())
