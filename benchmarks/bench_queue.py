"""End-to-end Redis task-queue benchmark: poolx side by side with WorQ and RQ.

Run: ``python3 dev.py bench benchmarks/bench_queue.py`` (or directly with the
venv's python; ``--sizes 2000`` for a quick run).  Every system runs against
the *same* private ``redis-server`` (started here on a free loopback port,
no persistence, killed at the end), one at a time, with the same scenario:

1. a consumer process with 2 workers is started and warmed up (one task);
2. the producer (this process) enqueues N no-op tasks through the system's
   queue API and times that (enqueue rate);
3. it then reads every result; the clock stops when the last one is read
   (end-to-end tasks/s);
4. Redis ``INFO stats`` before and after give the round trips the whole
   system made per task — producer, consumer and waiter together:
   ``total_reads_processed`` counts the requests the server read from its
   clients (one per command, pipeline or script call; commands *inside* a
   Lua script are not round trips, which is why ``INFO commandstats`` would
   mislead here).  ``INFO commandstats`` deltas of the commands a client
   can only send itself (``evalsha``, the blocking ``blpop``/``blmove``/
   ``brpoplpush``) break that down: the ``evalsha/task`` and
   ``block/task`` columns; for poolx, ``producer`` counts the commands of
   the producer's own client (enqueue and result reads) per task;
5. ``MB kept``: how much more memory Redis holds right after the last
   result was read than before the tasks were enqueued (what read results
   and their bookkeeping still occupy).

Systems (skipped when not installed: ``pip install worq==1.1.1 rq``):

* ``poolx batch`` — ``with poolx.core.batch(q)`` to enqueue, and
  ``poolx.task.wait_all`` to read; consumer ``poolx.pool.process.WorkerPool``
  with 2 worker processes.
* ``poolx`` — the plain WorQ API (``q.noop(i)``, ``r.wait()`` one by one),
  same consumer.
* ``worq`` — WorQ 1.1.1's ``get_queue`` and process ``WorkerPool(workers=2)``.
* ``rq`` — RQ's ``Queue.enqueue`` and ``Job.latest_result(timeout)``, with
  two ``SimpleWorker`` processes (RQ's default ``Worker`` forks a process
  per job and is several times slower still).

Each round also measures, with no consumer running, the round-trip floor
(a trivial ``EVALSHA`` from redis-py in a loop) and the poolx producer
alone: microseconds per plain ``q.noop(i)``, wall clock and the producer's
own CPU.

Each figure is the median of ``--rounds`` runs (default 3), the systems
interleaved round by round so that machine noise hits them alike.  Ratios are
against WorQ with the same task count (higher is better for rates).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKERS = 2
TIMEOUT = 300.0


def noop(x: Any = None) -> Any:
    """The task every system runs."""
    return x


# -- the private server ---------------------------------------------------------


class Server:
    """A private redis-server on a free loopback port (killed by ``stop``)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("bench_queue: needs a redis-server binary (apt-get install redis-server)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="poolx-bench-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        import redis

        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                threading.Event().wait(0.01)  # bounded poll: the server gives no signal
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def reads(self) -> int:
        """Requests read from clients so far (each one is a round trip)."""
        return int(self.client.info("stats")["total_reads_processed"])

    def commands(self) -> dict[str, int]:
        """Calls so far per command (``INFO commandstats``)."""
        stats = self.client.info("commandstats")
        return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()}

    def floor(self, n: int = 2000) -> float:
        """Round trips per second one client gets on this machine now: a
        trivial ``EVALSHA`` in a loop (the bound for anything that makes one
        synchronous round trip per task, such as a durable enqueue)."""
        sha = self.client.script_load("return 1")
        began = time.perf_counter()
        for _ in range(n):
            self.client.evalsha(sha, 1, "poolx-bench-floor")
        return n / (time.perf_counter() - began)

    def producer_alone(self, n: int = 2000) -> tuple[float, float]:
        """Microseconds per plain ``q.noop(i)`` with no consumer running:
        wall clock and this process's CPU (the producer's own cost: one
        durable script call per task)."""
        from poolx import get_broker

        self.client.flushall()
        q = get_broker(self.url).queue()
        q.noop(0)  # connected, script loaded
        began, cpu = time.perf_counter(), time.process_time()
        results = [q.noop(i) for i in range(n)]
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        del results
        self.client.flushall()
        return wall / n * 1e6, cpu / n * 1e6

    def memory(self) -> int:
        """Bytes of memory Redis uses for data now."""
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- consumers (run as: bench_queue.py --consume SYSTEM URL) -------------------------


def _poolx_init(url: str) -> Any:
    from poolx import get_broker

    broker = get_broker(url)
    broker.expose(noop)
    return broker


def _worq_init(url: str) -> Any:
    from worq import get_broker

    broker = get_broker(url)
    broker.expose(noop)
    return broker


def consume(system: str, url: str) -> None:
    """Run a 2-worker consumer for ``system`` until SIGTERM."""
    # Worker processes find the initializers by module name, not __main__.
    import bench_queue as this

    if system == "poolx":
        from poolx.pool.process import WorkerPool

        WorkerPool(this._poolx_init(url), this._poolx_init, workers=WORKERS).start(timeout=1)
    elif system == "worq":
        from worq.pool.process import WorkerPool as WorqPool

        WorqPool(this._worq_init(url), this._worq_init, workers=WORKERS).start(timeout=1)
    elif system == "rq-worker":
        import redis
        from rq import Queue, SimpleWorker

        connection = redis.Redis.from_url(url)
        SimpleWorker([Queue("bench", connection=connection)], connection=connection).work()
    else:
        raise SystemExit(f"unknown consumer {system!r}")


def _start_consumers(system: str, url: str) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    count = WORKERS if system == "rq" else 1  # RQ: one process per worker
    name = "rq-worker" if system == "rq" else system
    return [
        subprocess.Popen([sys.executable, str(Path(__file__)), "--consume", name, url],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]


def _stop_consumers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- producers: enqueue n, return a callable that reads every result -----------------


PRODUCER_COMMANDS = [0]
"""Commands the poolx producer's own client sent (enqueue and reads)."""


def _count_commands(client: Any) -> None:
    """Count every request ``client`` sends (a command, a pipeline) into
    :data:`PRODUCER_COMMANDS`: its pool makes connections that count what
    they send (before its first connection is made, so all of them do),
    whichever way poolx sends it."""
    pool = client.connection_pool
    base = pool.connection_class

    class Counted(base):  # type: ignore[valid-type, misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            PRODUCER_COMMANDS[0] += 1
            super().send_packed_command(command, check_health)

    pool.connection_class = Counted


def _poolx_producer(batched: bool) -> Callable[[str, int], Callable[[], None]]:
    def produce(url: str, n: int) -> Callable[[], None]:
        from poolx import get_broker
        from poolx.core import batch
        from poolx.task import wait_all

        broker = get_broker(url)
        q = broker.queue()  # the same as get_queue(url), keeping its broker at hand
        store: Any = broker.taskqueue  # a redis TaskQueue: its client is public
        _count_commands(store.client)
        if batched:
            with batch(q):
                results = [q.noop(i) for i in range(n)]
        else:
            results = [q.noop(i) for i in range(n)]

        def read() -> None:
            if batched:
                assert wait_all(results, TIMEOUT)
            else:
                for res in results:
                    assert res.wait(TIMEOUT)
            assert results[-1].value == n - 1

        return read

    return produce


def _worq_producer(url: str, n: int) -> Callable[[], None]:
    from worq import get_queue

    q = get_queue(url)
    results = [q.noop(i) for i in range(n)]

    def read() -> None:
        for res in results:
            assert res.wait(TIMEOUT)
        assert results[-1].value == n - 1

    return read


def _rq_producer(url: str, n: int) -> Callable[[], None]:
    import redis
    from rq import Queue

    q = Queue("bench", connection=redis.Redis.from_url(url))
    jobs = [q.enqueue("bench_queue.noop", i) for i in range(n)]

    def read() -> None:
        for job in jobs:
            result = job.latest_result(timeout=int(TIMEOUT))
            assert result is not None and result.type == result.Type.SUCCESSFUL, result
        assert jobs[-1].latest_result().return_value == n - 1

    return read


SYSTEMS: dict[str, tuple[str, Callable[[str, int], Callable[[], None]]]] = {
    "poolx batch": ("poolx", _poolx_producer(batched=True)),
    "poolx": ("poolx", _poolx_producer(batched=False)),
    "worq": ("worq", _worq_producer),
    "rq": ("rq", _rq_producer),
}


def _available() -> list[str]:
    names = ["poolx batch", "poolx"]
    for module, name in (("worq", "worq"), ("rq", "rq")):
        try:
            __import__(module)
        except ImportError:
            print(f"bench_queue: {name} is not installed; skipped (pip install {module})")
        else:
            names.append(name)
    return names


def run_one(server: Server, name: str, n: int) -> dict[str, float]:
    """One measurement of ``name`` with ``n`` tasks on a flushed server."""
    consumer, produce = SYSTEMS[name]
    server.client.flushall()
    procs = _start_consumers(consumer, server.url)
    try:
        produce(server.url, 1)()  # warm up: consumers are running and connected
        memory_before = server.memory()
        before, cmds_before = server.reads(), server.commands()
        PRODUCER_COMMANDS[0] = 0
        began = time.perf_counter()
        read = produce(server.url, n)
        enqueued = time.perf_counter()
        read()
        done = time.perf_counter()
        after, cmds_after = server.reads(), server.commands()
        kept = server.memory() - memory_before
    finally:
        _stop_consumers(procs)
    calls = after - before - 2  # not the two INFO calls themselves

    def delta(*names: str) -> float:
        return sum(cmds_after.get(c, 0) - cmds_before.get(c, 0) for c in names) / n

    return {
        "evalsha": delta("evalsha", "eval"),
        "blocking": delta("blpop", "blmove", "brpoplpush", "brpop"),
        "enqueue_rate": n / (enqueued - began),
        "tasks_per_s": n / (done - began),
        "round_trips": calls / n,
        "kept_mb": kept / 2**20,
        "producer": PRODUCER_COMMANDS[0] / n if consumer == "poolx" else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000", help="task counts (comma separated)")
    parser.add_argument("--systems", default="", help="subset of: " + ", ".join(SYSTEMS))
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--consume", nargs=2, metavar=("SYSTEM", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.consume:
        sys.path.insert(0, str(HERE))
        consume(*args.consume)
        return 0
    sys.path.insert(0, str(HERE))
    names = [s.strip() for s in args.systems.split(",") if s.strip()] or _available()
    sizes = [int(size) for size in args.sizes.split(",")]
    server = Server()
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    floors: list[float] = []
    alone: list[tuple[float, float]] = []
    try:
        for n in sizes:
            for round_ in range(args.rounds):
                floors.append(server.floor())
                alone.append(server.producer_alone())
                for name in names:
                    # RQ is slow: fewer tasks keep the run short.
                    n_run = min(n, 5000) if name == "rq" else n
                    print(f"  round {round_ + 1}: {name} with {n_run} tasks...", end="", flush=True)
                    result = run_one(server, name, n_run)
                    runs.setdefault((name, n_run), []).append(result)
                    print(f" {result['tasks_per_s']:,.0f} tasks/s, enqueue {result['enqueue_rate']:,.0f}/s,"
                          f" {result['round_trips']:.2f} trips/task (evalsha {result['evalsha']:.2f},"
                          f" blocking {result['blocking']:.2f}, producer {result['producer']:.2f}), Redis +{result['kept_mb']:.1f} MB after", flush=True)
    finally:
        server.stop()
    rows = [
        (name, n, {key: statistics.median(r[key] for r in results) for key in results[0]})
        for (name, n), results in runs.items()
    ]
    floor = statistics.median(floors)
    print(f"\nround-trip floor: {floor:,.0f} EVALSHA/s = {1e6 / floor:.0f} us each (one redis-py"
          f" client, median of {len(floors)}; a durable one-call enqueue cannot beat it by much)")
    wall, cpu = (statistics.median(us[i] for us in alone) for i in (0, 1))
    print(f"poolx producer alone (no consumer): {wall:.0f} us per q.noop(i) ({1e6 / wall:,.0f}/s),"
          f" of which {cpu:.0f} us CPU in the producer (median of {len(alone)})")
    base = {n: r for name, n, r in rows if name == "worq"}
    print()
    print(f"{'system':<12} {'tasks':>6} {'tasks/s':>9} {'enqueue/s':>10} {'trips/task':>10}"
          f" {'evalsha/task':>12} {'block/task':>10} {'producer':>8} {'MB kept':>7} {'x WorQ':>7} {'enq x WorQ':>10}")
    for name, n, r in rows:
        ref = base.get(n)
        ratio = f"{r['tasks_per_s'] / ref['tasks_per_s']:.1f}" if ref else "-"
        eratio = f"{r['enqueue_rate'] / ref['enqueue_rate']:.1f}" if ref else "-"
        print(f"{name:<12} {n:>6} {r['tasks_per_s']:>9.0f} {r['enqueue_rate']:>10.0f}"
              f" {r['round_trips']:>10.2f} {r['evalsha']:>12.2f} {r['blocking']:>10.2f}"
              f" {r['producer']:>8.2f} {r['kept_mb']:>7.1f}"
              f" {ratio:>7} {eratio:>10}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
