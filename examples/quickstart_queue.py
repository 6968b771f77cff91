"""The task queue in a minute: the Getting started page shows this file.

Tasks live in a TaskSpace; a process WorkerPool (a poolx.Pool fed by the
broker) runs them; a producer enqueues them through a queue and waits for
Deferred results.  On ``memory://`` it all runs in this one program; with
``redis://host:6379/0`` the same code spreads over machines.  Run it with
``python examples/quickstart_queue.py``; tests/test_docs.py checks what it prints.
"""

from poolx import Task, TaskFailure, TaskSpace, get_broker, get_queue
from poolx.pool.process import WorkerPool

tasks = TaskSpace("tasks")


@tasks.task
def num(value):
    return int(value)


@tasks.task
def add(values):
    return sum(values)


def init(url):
    """Runs once in each worker process: a broker that exposes the tasks."""
    broker = get_broker(url)
    broker.expose(tasks)
    return broker


if __name__ == "__main__":
    url = "memory://"  # or "redis://localhost:6379/0"
    workers = WorkerPool(init(url), init, workers=2, timeout=60)
    workers.start(handle_sigterm=False)
    try:
        q = get_queue(url)
        nums = [q.tasks.num(x) for x in range(10)]  # ten tasks, run in parallel
        total = q.tasks.add(nums)  # waits for all ten: Deferred arguments
        total.wait(timeout=60)
        print("total:", total.value)

        bad = Task(q.tasks.num, timeout=10)("not a number")  # per-task options
        bad.wait(timeout=60)
        try:
            print("unexpected:", bad.value)  # .value raises the task's failure
        except TaskFailure as failure:
            print("failed:", failure.task_name, "-", failure.error)
    finally:
        workers.stop()
