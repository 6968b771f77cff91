"""Lifecycle: callbacks, grow / shrink / restart, stats.

``on_process_up`` / ``on_process_down`` run once per worker and
``on_process_exit`` once per exit, in the parent, on the pool's callback
thread (keep them quick; here they only record what happened).
"""

import os
import threading

from poolx import Pool

events = []
lock = threading.Lock()


def up(process) -> None:
    with lock:
        events.append(f"worker {process.pid} up")


def exited(pid: int, exitcode: int) -> None:
    with lock:
        events.append(f"worker {pid} exited with code {exitcode}")


if __name__ == "__main__":
    pool = Pool(1, on_process_up=up, on_process_exit=exited)
    print("jobs ran in", len(set(pool.map(lambda _: os.getpid(), range(4)))), "worker(s)")
    pool.grow(1)  # two workers
    pool.restart()  # every worker replaced; running jobs finish first
    pool.shrink(1)  # back to one
    stats = pool.stats()
    print("processes:", stats["processes"], "completed:", stats["completed"])
    pool.close()
    pool.join()  # after join, every callback has run
    print("\n".join(events))
