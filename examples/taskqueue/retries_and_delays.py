"""Retries with back-off and delayed tasks: the Retries and delayed tasks page
shows this file, and tests/test_docs.py checks what it prints.

Run it with ``python examples/taskqueue/retries_and_delays.py`` (``memory://``)
or with a Redis URL as the argument: the same code, the same output.
"""

import sys
import time
from datetime import datetime, timedelta, timezone

from poolx import Retry, Task, TaskFailure, TaskSpace, get_broker
from poolx.pool.thread import WorkerPool

tasks = TaskSpace("tasks")
attempts: dict[str, int] = {}  # per host: how often fetch ran (one process here)


@tasks.task
def fetch(host):
    """Down for the first two attempts, then up; example.org never is."""
    attempts[host] = attempts.get(host, 0) + 1
    if host == "example.org" or attempts[host] < 3:
        raise ConnectionError(f"{host} is down")
    return f"{host}: 200 OK after {attempts[host]} attempts"


@tasks.task
def remind(text):
    return text


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "memory://"
    broker = get_broker(url)
    broker.expose(tasks)
    workers = WorkerPool(broker, workers=2)
    workers.start()
    try:
        q = broker.queue()

        # Retries: ConnectionError is retried after 0.1 s, then 0.2 s, 0.4 s...
        retry = Retry(max=3, delay=0.1, backoff=2.0, jitter=True, on=(ConnectionError,))
        page = Task(q.tasks.fetch, retry=retry)("example.com")
        page.wait(timeout=10)
        print(page.value)

        gone = Task(q.tasks.fetch, retry=Retry(max=2, delay=0.05))("example.org")
        gone.wait(timeout=10)
        try:
            print("unexpected:", gone.value)  # .value raises the final failure
        except TaskFailure as failure:
            print("gave up:", failure.error, "- attempts:", failure.attempts)

        # Delayed tasks: not before 0.5 s from now, or not before an aware datetime.
        start = time.monotonic()
        later = Task(q.tasks.remind, delay=0.5)("half a second later")
        print("status:", later.status)
        later.wait(timeout=10)
        print(later.value, "- waited at least 0.5 s:", time.monotonic() - start >= 0.5)

        eta = datetime.now(timezone.utc) + timedelta(seconds=0.3)
        at = Task(q.tasks.remind, eta=eta)("at a given time")
        at.wait(timeout=10)
        print(at.value, "- not before the eta:", datetime.now(timezone.utc) >= eta)
    finally:
        workers.stop(use_sentinel=True)
        broker.close()
