"""Periodic tasks: the Periodic tasks page shows this file, and
tests/test_docs.py checks what it prints.

Run it with ``python examples/taskqueue/periodic.py`` (``memory://``) or with
a Redis URL as the argument: the same code, the same output.  The ``cron=``
entry needs croniter (``pip install 'poolx[cron]'``).
"""

import sys
import threading

from poolx import TaskSpace, get_broker
from poolx.pool.thread import WorkerPool

tasks = TaskSpace("tasks")
beats: list[str] = []
three = threading.Event()


@tasks.task
def heartbeat(service):
    beats.append(service)
    if len(beats) == 3:
        three.set()


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "memory://"
    broker = get_broker(url)
    broker.expose(tasks)
    q = broker.queue()

    # Stored in the backend (on Redis: shared by every machine, kept across restarts).
    broker.periodic(q.tasks.heartbeat, every=0.2, args=("api",), name="heartbeat")
    broker.periodic(q.tasks.heartbeat, cron="0 3 * * *", args=("backup",), name="nightly")
    for entry in broker.periodic_entries():  # the next to run first
        print(entry.name, "->", entry.task, entry.schedule)

    # A pool with a scheduler enqueues each tick; any number of them may run.
    workers = WorkerPool(broker, workers=2, scheduler=True)
    workers.start()
    try:
        three.wait(timeout=10)
        print("ran:", beats[:3])
    finally:
        workers.stop(use_sentinel=True)
    print("removed:", broker.unperiodic("heartbeat"), "- again:", broker.unperiodic("heartbeat"))
    broker.unperiodic("nightly")
    broker.close()
