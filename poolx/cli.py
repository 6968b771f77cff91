"""The ``poolx`` command line (also ``python -m poolx``).

Owned here: argument parsing, output and exit codes of six commands; the
work itself is done by the public API:

* ``poolx worker URL --init module:function`` — one
  :class:`~poolx.pool.process.WorkerPool` per ``--queue``, run by
  :func:`~poolx.pool.process.start_pools` until SIGTERM/SIGINT (graceful),
  a second signal stops at once.
* ``poolx status URL`` — what :class:`poolx.status.StatusReader` reads:
  the pool registry, queue sizes (waiting, scheduled), the next tasks and
  the periodic entries of each queue, and the tasks that failed recently.
* ``poolx enqueue URL TASK [ARGS_JSON]`` — a task by its dotted name
  (``--wait``: on a terminal, a spinner on stderr while it waits).
* ``poolx purge URL`` — ``discard_pending_tasks`` after confirmation.
* ``poolx cancel URL TASK_ID...`` — :meth:`~poolx.core.Broker.cancel` for
  each id; exit code 1 if any of them could not be cancelled.
* ``poolx dashboard URL`` — :func:`poolx.dashboard.serve` until CTRL+C.

``poolx --version`` prints the version.

Exit codes: 0 success; 1 a task failed or timed out, a pool broke, the
broker is unreachable, or the user declined; 2 a usage mistake.  Errors are
one line on stderr, never a traceback.

Layer L8, the top: it may import anything below; only ``python -m poolx``
imports it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pkgutil import resolve_name
from typing import TYPE_CHECKING, Any

from poolx import __version__
from poolx.checks import check_count, check_seconds, parse_size
from poolx.const import DEFAULT

if TYPE_CHECKING:
    from poolx.status import StatusReader

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

FETCH_TIMEOUT = 30.0
"""Seconds one fetch of ``poolx worker`` blocks waiting for a task: an idle
pool costs Redis little, and a stop does not wait for the fetch (a task it
brings meanwhile goes back to the queue)."""

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


class _Failure(Exception):
    """A command failed (exit code 1): the message is printed as is."""


class _Usage(Exception):
    """A usage mistake (exit code 2)."""


# -- argument parsing --------------------------------------------------------------


def _argument(parse: Callable[[str], Any], check: Callable[..., Any], what: str, **kw: Any) -> Any:
    """An argparse type: ``parse`` the text, then ``check`` it (poolx.checks)."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        try:
            return check("the value", value, **kw)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("the value ")) from None

    return convert


_positive_int = _argument(int, check_count, "an integer", minimum=1)
_count = _argument(int, check_count, "an integer", minimum=0)
_seconds = _argument(float, check_seconds, "a number of seconds", allow_none=False)
_size = _argument(str, parse_size, "a size")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0 to 65535): {text!r}")
    return port


def _log_level(text: str) -> int:
    level = logging.getLevelName(text.upper())
    if not isinstance(level, int):
        raise argparse.ArgumentTypeError(f"unknown log level {text!r} (DEBUG, INFO, WARNING, ERROR)")
    return level


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``poolx`` command."""
    parser = argparse.ArgumentParser(
        prog="poolx",
        description="Run and inspect poolx worker pools on a task queue (memory:// or redis://).",
        epilog="Exit codes: 0 ok, 1 a task failed (or the broker is unreachable), 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"poolx {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    worker = commands.add_parser(
        "worker",
        help="run a process worker pool until SIGTERM/SIGINT",
        description=(
            "Run a process worker pool that consumes tasks from URL until SIGTERM or SIGINT, "
            "then shut down gracefully: running tasks finish and store their results.  "
            "A second signal stops at once (running tasks fail with Terminated, tasks "
            "not started go back to the queue)."
        ),
    )
    worker.add_argument("url", metavar="URL", help="task queue URL, e.g. redis://localhost:6379/0")
    worker.add_argument(
        "--init", required=True, metavar="MODULE:FUNCTION",
        help="worker initializer: called as FUNCTION(URL) once in each worker, it returns a broker "
             "exposing the tasks (WorQ's init_func); MODULE is imported from the current directory too",
    )
    worker.add_argument("--queue", action="append", metavar="NAME",
                        help="queue name to consume (repeat for several queues: one pool each; "
                             f"default {DEFAULT!r})")
    worker.add_argument("--workers", type=_positive_int, metavar="N",
                        help="worker processes per queue (default: the CPU count)")
    worker.add_argument("--max-worker-tasks", type=_positive_int, metavar="N",
                        help="replace a worker after N tasks")
    worker.add_argument("--timeout", type=_seconds, metavar="S",
                        help="hard time limit of every task (a task's own timeout option wins)")
    worker.add_argument("--soft-timeout", type=_seconds, metavar="S",
                        help="soft time limit: SoftTimeLimitExceeded is raised inside the task")
    worker.add_argument("--memory-limit", type=_size, metavar="SIZE",
                        help="memory a worker may use during a task, e.g. 512MB")
    worker.add_argument("--prefetch", type=_count, metavar="N",
                        help="tasks each worker may hold ahead of the one it runs; 0 takes a task "
                             "only for a free worker (default: adapts to each task name's run time, "
                             "none for slow or unknown tasks)")
    worker.add_argument("--name", metavar="NAME", help="pool name shown in logs and `poolx status`")
    worker.add_argument("--scheduler", action="store_true",
                        help="also enqueue the ticks of each queue's periodic tasks (any number of "
                             "workers may: each tick is enqueued once)")
    worker.add_argument("--status-interval", type=_seconds, default=5.0, metavar="S",
                        help="seconds between two status heartbeats for `poolx status` (default 5); "
                             "a pool silent for three intervals disappears from it")
    worker.add_argument("--log-level", type=_log_level, default=logging.INFO, metavar="LEVEL",
                        help="DEBUG, INFO (default), WARNING or ERROR; DEBUG adds tracebacks of failed tasks")
    worker.add_argument("--metrics-port", type=_port, metavar="PORT",
                        help="serve Prometheus metrics of every queue's pool on this TCP port "
                             "(needs the metrics extra: pip install 'poolx[metrics]')")
    worker.add_argument("--metrics-bind", default="127.0.0.1", metavar="ADDRESS",
                        help="address the metrics server listens on (default 127.0.0.1: "
                             "this machine only)")

    status = commands.add_parser(
        "status",
        help="show the live worker pools, queue sizes and queued tasks",
        description="Show every live worker pool on URL (pools heartbeat; one that stops "
                    "disappears after a while), queue sizes, tasks in flight and the next "
                    "tasks waiting in each queue.",
    )
    status.add_argument("url", metavar="URL", help="task queue URL")
    status.add_argument("--queue", action="append", metavar="NAME",
                        help="only this queue and the pools consuming it (repeatable; default: "
                             "'default' and every queue a live pool consumes)")
    status.add_argument("--pool", action="append", metavar="NAME",
                        help="only the pools of this name (repeatable)")
    status.add_argument("--watch", action="store_true",
                        help="refresh every --interval seconds until CTRL+C")
    status.add_argument("--interval", type=_seconds, default=2.0, metavar="S",
                        help="seconds between two refreshes with --watch (default 2)")
    status.add_argument("--tasks", type=_count, default=10, metavar="N",
                        help="list the next N tasks waiting in each queue: id, name, age "
                             "(default 10; 0 lists none)")
    status.add_argument("--failed", type=_count, default=10, metavar="N",
                        help="list the last N tasks that failed in the pools shown: time, name, "
                             "id, pool, worker, error (default 10; 0 lists none)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")

    enqueue = commands.add_parser(
        "enqueue",
        help="enqueue a task by its dotted name",
        description="Enqueue TASK (its dotted name, e.g. tasks.add) and print its id.  ARGS_JSON "
                    "is a JSON array of positional arguments, a JSON object of keyword "
                    "arguments, or any other JSON value as the only argument.",
    )
    enqueue.add_argument("url", metavar="URL", help="task queue URL")
    enqueue.add_argument("task", metavar="TASK", help="dotted task name")
    enqueue.add_argument("args", metavar="ARGS_JSON", nargs="?", help="arguments as JSON")
    enqueue.add_argument("--queue", default=DEFAULT, metavar="NAME", help=f"queue name (default {DEFAULT!r})")
    enqueue.add_argument("--wait", type=_seconds, metavar="SECONDS",
                         help="wait up to SECONDS for the result and print it as JSON "
                              "(exit code 1 if the task failed or did not finish in time); "
                              "on a terminal, a spinner shows the time waited")
    enqueue.add_argument("--timeout", type=_seconds, metavar="S", help="the task's hard time limit")
    enqueue.add_argument("--soft-timeout", type=_seconds, metavar="S", help="the task's soft time limit")
    enqueue.add_argument("--memory-limit", type=_size, metavar="SIZE", help="the task's memory limit")

    purge = commands.add_parser(
        "purge",
        help="discard the tasks waiting in a queue",
        description="Discard every task waiting in the queue (running tasks are not affected; "
                    "their waiters get TaskExpired).  Asks for confirmation unless --yes.",
    )
    purge.add_argument("url", metavar="URL", help="task queue URL")
    purge.add_argument("--queue", default=DEFAULT, metavar="NAME", help=f"queue name (default {DEFAULT!r})")
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _add_dashboard_parser(commands)
    _add_cancel_parser(commands)
    return parser


def _add_dashboard_parser(commands: Any) -> None:
    from poolx.dashboard import DEFAULT_BIND, DEFAULT_PORT

    dashboard = commands.add_parser(
        "dashboard",
        help="serve a read-only web page that shows pools and queues live",
        description="Serve a read-only web page showing the live worker pools, queues, their next "
                    "tasks and the throughput on URL, refreshed every --interval seconds, until "
                    "CTRL+C.  It listens on this machine only unless --bind says otherwise.",
    )
    dashboard.add_argument("url", metavar="URL", help="task queue URL")
    dashboard.add_argument("--port", type=_count, default=DEFAULT_PORT, metavar="P",
                           help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    dashboard.add_argument("--bind", default=DEFAULT_BIND, metavar="ADDRESS",
                           help=f"address to listen on (default {DEFAULT_BIND}: this machine only)")
    dashboard.add_argument("--token", default=os.environ.get("POOLX_DASHBOARD_TOKEN"), metavar="T",
                           help="require ?token=T or 'Authorization: Bearer T' on every request "
                                "(default: $POOLX_DASHBOARD_TOKEN, else none)")
    dashboard.add_argument("--interval", type=_seconds, default=2.0, metavar="S",
                           help="seconds between two refreshes of the page (default 2)")
    dashboard.add_argument("--tasks", type=_count, default=10, metavar="N",
                           help="list the next N tasks waiting in each queue (default 10)")


def _add_cancel_parser(commands: Any) -> None:
    cancel = commands.add_parser(
        "cancel",
        help="cancel tasks by id",
        description="Cancel each TASK_ID: a waiting task (queued, pending or scheduled) is "
                    "removed, a running one's worker is killed; its outcome is a TaskCancelled. "
                    "Prints one line per id; exit code 0 if every task was cancelled, 1 if any "
                    "had finished or is unknown.",
    )
    cancel.add_argument("url", metavar="URL", help="task queue URL")
    cancel.add_argument("task_ids", metavar="TASK_ID", nargs="+", help="id of a task to cancel")
    cancel.add_argument("--queue", default=DEFAULT, metavar="NAME", help=f"queue name (default {DEFAULT!r})")


# -- helpers ---------------------------------------------------------------------------


def _broker(url: str, queue: str = DEFAULT) -> Any:
    from poolx.core import get_broker

    try:
        return get_broker(url, queue)
    except ValueError as err:
        raise _Usage(str(err)) from None
    except ImportError as err:
        raise _Failure(str(err)) from None


def _reach(url: str, call: Any) -> Any:
    """Run one broker call; a connection problem becomes a one-line failure."""
    from poolx.queue.urls import redact_url

    try:
        return call()
    except (_Failure, _Usage):
        raise
    except Exception as err:
        raise _Failure(f"cannot reach {redact_url(url)}: {type(err).__name__}: {err}") from None


def _resolve(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise _Usage(f"--init must look like module:function, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = resolve_name(spec)
    except AttributeError:
        raise _Usage(f"module {module_name!r} has no attribute {attr!r} (from --init {spec})") from None
    except Exception as err:
        raise _Usage(f"cannot import {module_name!r} (from --init {spec}): {type(err).__name__}: {err}") from None
    if not callable(obj):
        raise _Usage(f"--init {spec} is not callable")
    return obj


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _ago(timestamp: Any, now: float) -> str:
    if not isinstance(timestamp, (int, float)):
        return "?"
    return _duration(now - timestamp) + " ago"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def _utc(timestamp: float) -> str:
    """An epoch time as ``2026-12-03 18:05:00 UTC``."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _mib(value: Any) -> str:
    return f"{value / 2**20:.1f} MiB" if isinstance(value, (int, float)) else "? MiB"


# -- commands ------------------------------------------------------------------------------


def _setup_logging(level: int) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger().setLevel(level)
    if level > logging.DEBUG:
        # the pool logs one line per failed task; the worker-side traceback only at DEBUG
        logging.getLogger("poolx.task").setLevel(logging.CRITICAL)


def worker_init(url: str, init: Any, level: int) -> Any:
    """The workers' ``init_func`` under ``poolx worker``: log as the command
    does (workers are started fresh, not forked), then call ``--init``."""
    _setup_logging(level)
    return init(url)


# Imported once in the forkserver (after ignore_sigterm) rather than in every
# worker: each worker then shares their pages with the forkserver instead of
# holding its own copy (2 MB less unique memory per worker; see
# benchmarks/bench_memory.py).  Importing them starts no thread.
_FORKSERVER_PRELOAD = ["poolx.pool.ignore_sigterm", "poolx.cli", "poolx.pool.process", "poolx.engine.worker"]


def _shield_forkserver() -> None:
    """Workers and their forkserver ignore SIGTERM: a signal to the process
    group stops the pool gracefully instead of killing its workers (see
    :mod:`poolx.pool.ignore_sigterm`).  The forkserver preloads the modules
    every worker imports, and no resource tracker runs beside it
    (:func:`poolx.pool.process.skip_resource_tracker`): ``--workers N`` runs
    N + 2 processes."""
    import multiprocessing

    from poolx.pool.process import skip_resource_tracker

    if "forkserver" in multiprocessing.get_all_start_methods():
        multiprocessing.get_context("forkserver").set_forkserver_preload(_FORKSERVER_PRELOAD)
        skip_resource_tracker()


def _cmd_worker(args: argparse.Namespace) -> int:
    from poolx.pool.process import Error, WorkerPool, start_pools
    from poolx.queue.urls import redact_url

    _setup_logging(args.log_level)
    init = _resolve(args.init)
    _shield_forkserver()
    queues = list(dict.fromkeys(args.queue or [DEFAULT]))
    options: dict[str, Any] = {}
    for key in ("timeout", "soft_timeout", "memory_limit", "prefetch"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    pools = []
    for queue in queues:
        broker = _broker(args.url, queue)
        _reach(args.url, lambda broker=broker: len(broker))
        name = args.name
        if name and len(queues) > 1:
            name = f"{name}-{queue}"
        pools.append(WorkerPool(broker, worker_init, (init, args.log_level), workers=args.workers,
                                max_worker_tasks=args.max_worker_tasks,
                                name=name, status_interval=args.status_interval,
                                scheduler=args.scheduler, **options))
    logging.getLogger("poolx.cli").info(
        "poolx worker on %s, queue(s) %s", redact_url(args.url), ", ".join(queues))
    metrics = _serve_metrics(pools, args.metrics_port, args.metrics_bind)
    try:
        start_pools(*pools, timeout=FETCH_TIMEOUT)
    except Error as err:
        raise _Failure(str(err)) from None
    finally:
        if metrics is not None:
            metrics.close()
    return EXIT_OK


def _serve_metrics(pools: list[Any], port: int | None, bind: str) -> Any:
    """One Prometheus metrics server for every pool of ``poolx worker`` (or None)."""
    if port is None:
        return None
    from poolx.metrics import serve

    try:
        server = serve(*pools, port=port, bind=bind)
    except ImportError as err:
        raise _Failure(str(err)) from None
    except OSError as err:
        raise _Failure(f"cannot serve metrics on {bind}:{port}: {err}") from None
    logging.getLogger("poolx.cli").info("serving Prometheus metrics on %s", server.url)
    return server


def _status_reader(url: str) -> StatusReader:
    from poolx.status import StatusReader

    try:
        return StatusReader(url)
    except ValueError as err:
        raise _Usage(str(err)) from None
    except ImportError as err:
        raise _Failure(str(err)) from None


def _status(reader: StatusReader, args: argparse.Namespace) -> dict[str, Any]:
    from poolx.status import StatusUnavailable

    try:
        return reader.read(args.queue or [], args.pool or [], args.tasks, failed=args.failed)
    except StatusUnavailable as err:
        raise _Failure(str(err)) from None
    except ValueError as err:  # a --queue name the backend cannot have
        raise _Usage(str(err)) from None


def _print_status(status: dict[str, Any]) -> None:
    now = status["time"]
    pools = status["pools"]
    print(f"{len(pools)} worker pool{'s' if len(pools) != 1 else ''} on {status['url']}")
    for info in pools:
        workers = info.get("workers") or []
        states: dict[str, int] = {}
        for worker in workers:
            states[worker.get("state", "?")] = states.get(worker.get("state", "?"), 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
        print()
        print(f"{info.get('name')} on {info.get('host')} (pid {info.get('pid')}), "
              f"queue {info.get('queue')}: {info.get('state', '?')}")
        if info.get("broken"):
            print(f"  broken: {info['broken']}")
        print(f"  started {_ago(info.get('started'), now)}, last heartbeat {_ago(info.get('heartbeat'), now)}")
        print(f"  tasks: {info.get('tasks_done', 0)} done, {info.get('tasks_failed', 0)} failed, "
              f"{len(info.get('in_flight') or ())} in flight ({len(info.get('running') or ())} running, "
              f"{len(info.get('prefetched') or ())} prefetched)")
        for task in info.get("prefetched") or ():
            print(f"    prefetched: {task}")
        print(f"  workers: {len(workers)} ({summary})")
        for worker in workers:
            task = worker.get("task") or ""
            print(f"    {worker.get('pid'):>7}  {worker.get('state', '?'):<8} {worker.get('tasks_done', 0):>7} done"
                  f"  {_mib(worker.get('rss')):>10}  up {_duration(worker.get('uptime')):<7} {task}".rstrip())
    print()
    print("queues:")
    for name, sizes in status["queues"].items():
        scheduled = f"{sizes['scheduled']} scheduled, " if sizes.get("scheduled") else ""
        print(f"  {name}: {sizes['waiting']} waiting, {scheduled}{sizes['in_flight']} in flight")
        listed = sizes["tasks"] or ()
        for task in listed:
            print(f"    {task['id']}  {task['name'] or '?'}  waiting {_duration(task['age'])}")
        if listed and sizes["waiting"] > len(listed):
            print(f"    ... {sizes['waiting'] - len(listed)} more")
        for entry in sizes.get("periodic") or ():
            due = entry["due_in"]
            when = f"in {_duration(due)}" if due >= 0 else f"{_duration(-due)} late"
            print(f"    periodic {entry['name']}: {entry['task']} {entry['schedule']}, "
                  f"next run {_utc(entry['next_run'])} ({when})")
    _print_failed(status.get("failed") or [])


def _print_failed(failed: list[dict[str, Any]]) -> None:
    """The recently failed tasks of ``poolx status`` (newest first), two
    lines each: control characters in their texts (a newline, a terminal
    escape in an error message) are shown escaped, as ``\\n``."""
    if not failed:
        return
    print()
    print("recently failed:")
    for task in failed:
        name, queue, task_id, error = (_escaped(task[key]) for key in ("task", "queue", "id", "error"))
        print(f"  {_duration(task['age'])} ago  {name} [{queue}:{task_id}]  "
              f"{task['pool']} on {task['host']} (worker {task['worker'] or '-'})")
        print(f"    {error}")


def _escaped(text: str) -> str:
    """``text`` with its control characters written as Python escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _cmd_status(args: argparse.Namespace) -> int:
    with _status_reader(args.url) as reader:
        if not args.watch:
            _show_status(reader, args, clear=False)
            return EXIT_OK
        import threading

        pause = threading.Event()
        clear = not args.json and sys.stdout.isatty()
        try:
            while True:
                _show_status(reader, args, clear)
                sys.stdout.flush()
                pause.wait(args.interval)
                if not clear:
                    print()
        except KeyboardInterrupt:
            return EXIT_OK  # CTRL+C ends --watch


def _show_status(reader: StatusReader, args: argparse.Namespace, clear: bool) -> None:
    status = _status(reader, args)
    if clear:
        sys.stdout.write("\033[H\033[J")  # home, clear the screen
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        _print_status(status)


def _check_consumed_here(url: str, broker: Any,
                         why: str = "the task would be lost when this command exits") -> None:
    """A ``memory://`` queue lives inside one process: enqueuing to it from
    this command is an error unless a pool in this process consumes it (the
    task would be lost when the command exits; ``why`` says so)."""
    if not url.lower().startswith("memory:"):
        return
    from poolx.status import StatusUnavailable

    try:
        with _status_reader(url) as reader:
            pools = reader.live_pools()
    except StatusUnavailable as err:
        raise _Failure(str(err)) from None
    if not any(info.get("queue") == broker.name for info in pools):
        raise _Usage(f"a memory:// queue lives inside one process and no pool in this one "
                     f"consumes queue {broker.name!r}: {why} (use a shared queue, e.g. redis://)")


def _cmd_enqueue(args: argparse.Namespace) -> int:
    from poolx.task import TaskFailure

    positional: tuple = ()
    keywords: dict[str, Any] = {}
    if args.args is not None:
        try:
            value = json.loads(args.args)
        except ValueError as err:
            raise _Usage(f"ARGS_JSON is not valid JSON: {err}") from None
        if isinstance(value, list):
            positional = tuple(value)
        elif isinstance(value, dict):
            keywords = value
        else:
            positional = (value,)
    options = {key: getattr(args, key) for key in ("timeout", "soft_timeout", "memory_limit")
               if getattr(args, key) is not None}
    broker = _broker(args.url, args.queue)
    _check_consumed_here(args.url, broker)
    try:
        queue = broker.queue(args.task, **options)
    except ValueError as err:
        raise _Usage(str(err)) from None
    deferred = _reach(args.url, lambda: queue(*positional, **keywords))
    print(deferred.id, flush=True)
    if args.wait is None:
        return EXIT_OK
    if not _reach(args.url, lambda: _wait_showing_spinner(deferred, args.wait)):
        status = _reach(args.url, lambda: deferred.status)
        raise _Failure(f"no result within {args.wait:g} s (task {deferred.id} is {status or 'unknown'})")
    try:
        value = deferred.value
    except TaskFailure as failure:
        raise _Failure(f"task failed: {failure}") from None
    print(_json_text(value))
    return EXIT_OK


SPINNER_REFRESH = 0.25
"""Seconds between two refreshes of ``enqueue --wait``'s spinner."""


def _wait_showing_spinner(deferred: Any, seconds: float) -> bool:
    """``deferred.wait(seconds)``; on a terminal (stdout and stderr are TTYs)
    a spinner on stderr shows the time waited, and is erased once the wait
    ends.  Piped or redirected output, or no tqdm (the ``progress`` extra),
    shows nothing."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        return deferred.wait(seconds)
    from poolx.progress import open_bar

    try:
        spinner = open_bar({"desc": f"waiting for {deferred.task.name} [{deferred.id}]",
                            "bar_format": "{desc} {elapsed}", "leave": False,
                            "file": sys.stderr, "mininterval": SPINNER_REFRESH}, 1)
    except ImportError:
        return deferred.wait(seconds)
    deadline = time.monotonic() + seconds
    try:
        while True:
            left = deadline - time.monotonic()
            if deferred.wait(max(0.0, min(left, SPINNER_REFRESH))):
                return True
            if left <= SPINNER_REFRESH:
                return False
            spinner.show(0, 0)
    finally:
        spinner.close()


def _cmd_purge(args: argparse.Namespace) -> int:
    from poolx.queue.urls import redact_url

    broker = _broker(args.url, args.queue)
    count = _reach(args.url, lambda: len(broker))
    where = f"queue {args.queue!r} on {redact_url(args.url)}"
    if not count:
        print(f"no tasks waiting in {where}")
        return EXIT_OK
    if not args.yes:
        sys.stderr.write(f"Discard {count} waiting task{'s' if count != 1 else ''} in {where}? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise _Failure("purge cancelled")
    _reach(args.url, broker.discard_pending_tasks)
    print(f"discarded {count} task{'s' if count != 1 else ''} from {where}")
    return EXIT_OK


def _cmd_cancel(args: argparse.Namespace) -> int:
    broker = _broker(args.url, args.queue)
    _check_consumed_here(args.url, broker, "there is nothing to cancel in this command's process")
    missed = []
    for task_id in dict.fromkeys(args.task_ids):
        if _reach(args.url, lambda task_id=task_id: broker.cancel(task_id)):
            print(f"cancelled {task_id}", flush=True)
        else:
            missed.append(task_id)
            print(f"not cancelled {task_id} (finished, or unknown in queue {args.queue!r})",
                  flush=True)
    if missed:
        raise _Failure(f"{len(missed)} of {len(dict.fromkeys(args.task_ids))} tasks not cancelled")
    return EXIT_OK


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from poolx.dashboard import serve

    def ready(server: Any) -> None:
        print(f"poolx dashboard of {server.reader.display_url} on {server.url} "
              f"({'token required' if args.token else 'no token'}); CTRL+C stops", flush=True)
        if not server.loopback_only and not args.token:
            print(f"poolx dashboard: warning: {server.url} is reachable from other machines "
                  f"and asks for no token: anyone there sees your pools and task names "
                  f"(--token T, or --bind 127.0.0.1)", file=sys.stderr, flush=True)

    try:
        serve(args.url, args.port, args.bind, token=args.token or None, interval=args.interval,
              tasks=args.tasks, ready=ready)
    except ValueError as err:
        raise _Usage(str(err)) from None
    except (ImportError, OSError) as err:
        raise _Failure(f"{type(err).__name__}: {err}") from None
    except KeyboardInterrupt:
        pass  # CTRL+C stops the server
    return EXIT_OK


_COMMANDS = {"worker": _cmd_worker, "status": _cmd_status, "enqueue": _cmd_enqueue, "purge": _cmd_purge,
             "dashboard": _cmd_dashboard, "cancel": _cmd_cancel}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``poolx`` command; return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except _Usage as err:
        print(f"poolx {args.command}: error: {err}", file=sys.stderr)
        print(f"(see: poolx {args.command} --help)", file=sys.stderr)
        return EXIT_USAGE
    except _Failure as err:
        print(f"poolx {args.command}: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"poolx {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (``poolx status URL | head``): exit quietly.
        # stdout is pointed at devnull so that the interpreter's final
        # flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
