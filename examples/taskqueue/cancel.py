"""Cancelling tasks: the Cancelling tasks page shows this file, and
tests/test_docs.py checks what it prints.

Run it with ``python examples/taskqueue/cancel.py`` (``memory://``) or with
a Redis URL as the argument: the same code, the same output.
"""

import sys
import time

from poolx import Task, TaskSpace, get_broker
from poolx.pool.process import WorkerPool
from poolx.task import TaskCancelled

tasks = TaskSpace("tasks")


@tasks.task
def crunch(seconds):
    time.sleep(seconds)  # a long computation
    return seconds


@tasks.task
def publish(value):
    return f"published {value}"


@tasks.task
def report(name):
    return f"report {name} done"


def init(url):
    """Runs once in each worker process: a broker that exposes the tasks."""
    broker = get_broker(url)
    broker.expose(tasks)
    return broker


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "memory://"
    broker = init(url)
    workers = WorkerPool(broker, init, workers=1)
    workers.start(handle_sigterm=False)
    try:
        q = broker.queue()
        slow = q.tasks.crunch(60)  # runs (or waits to run) for a minute
        summary = q.tasks.publish(slow)  # pending: waits for slow's value
        monthly = Task(q.tasks.report, delay=30)("monthly")  # scheduled

        # Queued, pending, scheduled or running: it will not complete.  A
        # running task's worker is killed; the pool replaces it.
        print("cancel slow:", slow.cancel())
        print("cancel monthly:", monthly.cancel())
        try:
            print("unexpected:", slow.value)  # resolved at once: .value raises the outcome
        except TaskCancelled as cancelled:
            print("slow:", cancelled.error)

        # A task that takes it as an argument follows on_error (FAIL here).
        summary.wait(timeout=10)
        try:
            print("unexpected:", summary.value)
        except TaskCancelled as failure:
            print("summary failed with slow's outcome:", failure.task_id == slow.id)

        # The one worker is free again at once; a finished task stays finished.
        daily = q.tasks.report("daily")
        daily.wait(timeout=30)
        print(daily.value, "- cancel now:", daily.cancel())
        print("cancel an unknown id:", broker.cancel("no-such-task"))
    finally:
        workers.stop()
        broker.close()
