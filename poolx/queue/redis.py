"""``redis://``, ``rediss://``, ``unix://`` and ``redis+cluster://`` — the
distributed backend.

Owned here: :class:`TaskQueue` (WorQ's ``worq.queue.redis.TaskQueue`` under
poolx's name), the URL parsing, the connection and reconnection policy, and
this process's view of the tasks it has taken.  Everything stored lives in
Redis and changes only through the Lua script ``poolx/queue/redis.lua``
(key layout documented there and in ``docs/redis.rst``)::

    producer ── enqueue_task ─(batch: hundreds per call)──▶ EVALSHA enqueue ──▶ ready list
    producer ── schedule_task (delay/eta) ─▶ EVALSHA enqueue ──▶ sched (zset by due time)
    consumer ── get ── one fetcher thread per TaskQueue ──▶ EVALSHA fetch ──▶ leases (zset)
                 ▲        takes a task for *every* idle       │ (reclaims expired leases and
                 │        thread in one call                  │  queues due scheduled tasks
                 │                                            │  first: at-least-once)
                 │     BLMOVE ready ready (blocks, takes nothing) when empty, no longer
                 │     than until the next due time (a task scheduled earlier rings)
                heartbeat ── set_task_timeout ───────────▶ EVALSHA renew
                result ───── store_result ─▶ writer thread: EVALSHA commit (every result
                             (task_done)       buffered meanwhile, one call) ─▶ wake tokens
    waiter ──── pop_result / pop_results ─(own tasks)─────▶ EVALSHA wait: the task's result
                 ▲   and every other ready one of this queue object's live Deferreds
                 └── cache ◀──────────────────────────────┘  (mailbox); BLMOVE mailbox
                           (other tasks) ─────────────────▶ EVALSHA pop; BLPOP w:<id>

Who owns what:

* **Redis** owns all task state.  Each operation is one script call: atomic,
  one round trip, no WATCH loops.
* **A TaskQueue** owns its connection pool, the deliveries it fetched but no
  thread has picked up yet (``_handoff``), and the lease of each task it
  handed out (``_held``: which record and which delivery), so heartbeats,
  results and ``task_done`` name exactly that delivery.
* **The fetcher**: threads blocked in :meth:`TaskQueue.get` elect one of
  themselves to talk to Redis; it takes as many tasks as there are idle
  threads in one call and hands them over — batching exactly where workers
  are idle, never hoarding tasks a busy pool cannot start.
* **Result prefetch**: each TaskQueue has a *mailbox* in Redis; a task it
  enqueues names it, and the task's result, when stored, adds the task id
  to it.  A wait for one such result reads, in the same script call, every
  result the mailbox announces whose Deferred is still alive here, into a
  bounded cache (``_cache``) the others' waits read without a round trip.
  The TaskQueue tracks those Deferreds by weak reference (``_subs``) and
  tells Redis, in its next call, which Deferreds are gone.  The call deletes
  the results it read (keeping its reply's results aside for a retry of the
  same call).  One waiting thread blocks in Redis, the others on a
  condition.
* **The writer** (:class:`~poolx.queue._redis_writer.Writer`): results stored through
  :meth:`TaskQueue.store_result` (what the broker uses) and ``task_done``
  acknowledgements are buffered and committed by one thread, all that
  accumulated during the previous round trip in one script call (group
  commit).  A worker never waits for its result to reach Redis, and a busy
  pool's results cost a fraction of a round trip each.  Every other call on
  the same TaskQueue first waits until earlier writes are committed, so the
  queue object always reads its own writes.  The thread is not a daemon:
  a process that exits normally commits what is buffered first.  If a
  commit fails for good (Redis gone longer than ``retry_timeout``), it is
  logged, and the tasks' leases bring them back: at-least-once, not lost.

Failures: see :mod:`poolx.queue._redis_conn` (retry with backoff while
Redis is unreachable, for up to ``retry_timeout`` seconds; a server never
reached, or refused credentials, fail at once with :class:`RedisUnavailable`).
Every script call is idempotent under retry (creating calls carry a nonce).

Modules: this one owns the queue semantics; :mod:`poolx.queue._redis_conn`
the URL, client, script registration and retries;
:mod:`poolx.queue._redis_writer` the group commit; ``redis.lua`` the server
side.  Layer L4: imports the task layer (L2) and serialization (L3), never
:mod:`poolx.core`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

from poolx.checks import check_seconds
from poolx.const import DEFAULT, TASK_EXPIRED
from poolx.queue._redis_conn import (
    SCHEMES,
    Connection,
    RedisUnavailable,
    ResponseError,
    default_redis_factory,
    make_client,
    make_serializer,
    split_url,
)
from poolx.queue._redis_writer import Writer
from poolx.queue.base import AbstractTaskQueue, Delivery, PeriodicEntry, QueuedTask
from poolx.queue.urls import redact_url
from poolx.serialization import Serializer
from poolx.task import DuplicateTask, Task, lease_seconds

if TYPE_CHECKING:
    from poolx.task import Deferred

__all__ = ["TaskQueue", "RedisUnavailable", "SCHEMES", "default_redis_factory"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "poolx"
BATCH_SIZE = 500
"""Tasks per script call when a batch is flushed."""
POP_CHUNK = 500
"""Results asked for per script call by :meth:`TaskQueue.pop_results`."""
RECLAIM_LIMIT = 100
"""Expired leases reclaimed per fetch."""
PROMOTE_LIMIT = 1000
"""Scheduled tasks that are due moved to the ready list per fetch."""
POPPED_KEEP_MS = 10_000
"""How long a read result stays readable by the same (retried) call, unless
the reader's next call deletes it earlier (a ``pop``: the next call
acknowledges it; a ``wait``: its copy in the mailbox's last list goes with
the next ``wait``)."""
PREFETCH_LIMIT = 1000
"""Results of other tasks a ``wait`` call brings back at most."""
PREFETCH_MAX = 10_000
"""Prefetched results a TaskQueue holds at most (unread, for live Deferreds)."""
IDLE_RECHECK = 30.0
"""Seconds an idle consumer blocks on the empty ready list before it runs the
fetch script again, at most: that run re-queues tasks whose consumer died
(expired leases) that it did not know of when it started waiting."""
FETCH_REMEMBER_EXTRA = 5.0
"""Seconds beyond ``retry_timeout`` that Redis remembers which tasks a fetch
took, for a retry of that fetch whose first reply was lost."""
HANDOFF_FRESH = 1.0
"""A fetched task handed to a thread later than this is re-checked (and its
lease renewed) first."""


class PopCode(bytes, Enum):
    """What the script's ``pop`` command says about each task asked for."""

    READY = b"r"
    """The result follows (it is now read)."""
    EXPIRED = b"x"
    """The task is unknown, or its result was read by another call."""
    WAITING = b"w"
    """Not done yet: the reply ends here."""


class _StoreResult(NamedTuple):
    """A result for the writer to commit (``store_result``)."""

    task_id: str
    message: bytes
    ttl_ms: int


class _TaskDone(NamedTuple):
    """A finished ``ignore_result`` task for the writer to acknowledge."""

    ref: str
    owner: str


def _lease_ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


_DEFAULT_FIELDS = (b"0", _lease_ms(lease_seconds(Task.OPTIONS["heartrate"])),
                   1 + Task.OPTIONS["max_retries"])
""":meth:`TaskQueue._task_fields` of a task with the default options."""


def _delay_ms(seconds: float) -> int:
    """A delay in whole milliseconds, rounded up: never shorter than asked."""
    return max(1, math.ceil(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TaskQueue(AbstractTaskQueue):
    """Redis task queue: reliable (leased) delivery, atomic scripts, blocking
    waits.

    :param url: ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://...`` (TLS; redis-py's ``ssl_*`` query options such as
        ``ssl_ca_certs`` and ``ssl_cert_reqs`` apply) or
        ``unix://[[user]:password@]/path/to/socket[?db=N]`` or
        ``redis+cluster://[[user]:password@]host:port[,host:port...]/``
        (Redis Cluster; any reachable node is enough).  poolx's own
        query options: ``prefix`` (key prefix, default ``poolx``),
        ``serializer`` (``pickle`` or ``json``), ``retry_timeout``.
    :param name: The queue name (its keys share the hash tag ``{name}``).
    :param initial_result_timeout: WorQ's name for the lease of a taken task
        before its first heartbeat.  poolx tasks name their own lease
        (``2 * heartrate + 5`` seconds, the same as every heartbeat grants),
        so this only applies to records that carry none.
    :param redis_factory: Builds the client: a ``redis.Redis`` subclass (its
        ``from_url`` is used), for a ``redis+cluster://`` URL a
        ``redis.RedisCluster`` subclass, or a callable taking the URL without
        poolx's options.
    :param prefix: Key prefix (overrides the URL's ``prefix`` option).
    :param serializer: ``"pickle"``, ``"json"`` or a
        :class:`~poolx.serialization.Serializer` that brokers on this queue
        use by default (overrides the URL's ``serializer`` option).
    :param retry_timeout: Seconds to keep retrying an operation while Redis
        is unreachable (after the queue first reached it) before raising
        :class:`RedisUnavailable`.
    :param consumer_id: Names this process's leases (default:
        ``host:pid:random``).
    :raises ValueError: for a malformed URL or option (naming the URL
        without its password).
    """

    def __init__(
        self,
        url: str,
        name: str = DEFAULT,
        initial_result_timeout: float = 60,
        redis_factory: Callable[..., Any] | None = None,
        *,
        prefix: str | None = None,
        serializer: Serializer | str | None = None,
        retry_timeout: float | None = None,
        consumer_id: str | None = None,
    ) -> None:
        super().__init__(url, name)
        clean, own = split_url(url)
        shown = redact_url(url)
        if not isinstance(name, str) or not name or name.startswith("}"):
            raise ValueError(f"invalid Redis queue name {name!r}: its hash tag would be empty")
        prefix = prefix if prefix is not None else own.get("prefix", DEFAULT_PREFIX)
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"invalid key prefix {prefix!r} in {shown!r} (no braces, not empty)")
        try:
            retry = float(retry_timeout if retry_timeout is not None
                          else own.get("retry_timeout", 30.0))
        except ValueError:
            raise ValueError(f"invalid retry_timeout in {shown!r}") from None
        self.serializer = make_serializer(
            serializer if serializer is not None else own.get("serializer")
        )
        self.initial_result_timeout = max(float(initial_result_timeout), 1.0)
        self.prefix = prefix
        self._key = f"{prefix}:{{{name}}}:"
        self._pools_key = f"{prefix}:{{pools}}:"
        self._ready_key = self._key + "ready"
        self._min_lease_ms = _lease_ms(self.initial_result_timeout)
        client = make_client(clean, redis_factory)
        self._conn = Connection(url, client, retry)
        self._client = client
        self._max_block = self._conn.max_block
        self._run = self._conn.run
        self._script = self._conn.script
        self._blmove = True
        self._consumer_id = consumer_id
        self._consumer_pid: int | None = None if consumer_id is not None else -1
        self._init_process_state()

    def _init_process_state(self) -> None:
        """State that belongs to one process: a child made by ``fork`` starts
        afresh (its parent's locks may have been held by parent threads, and
        its parent's tasks and buffered results are the parent's to finish)."""
        self._pid = os.getpid()
        self._local = threading.local()
        # Taken tasks: id -> (ref, owner, lease ms); fetched Deferred
        # arguments: id -> dict.
        self._lock = threading.Lock()
        self._held: dict[str, tuple[str, str, int]] = {}
        self._args: dict[str, dict[str, bytes]] = {}
        self._cancelled: set[str] = set()  # held tasks found cancelled, not reported yet
        self._reported: set[str] = set()  # held tasks reported cancelled (markers stay)
        # The fetcher protocol among threads blocked in get().
        self._cond = threading.Condition()
        self._idle = 0
        self._fetching = False
        self._handoff: deque[tuple[Delivery, float]] = deque()
        self._writer = Writer(self._commit, f"poolx-redis-writer-{self.name}")
        # Result prefetch: this process's mailbox, the Deferreds enqueued here
        # whose results it collects (id -> weak reference), the results read
        # ahead for them, and what the next call tells Redis: results read
        # (to delete) and ids no longer waited for.  One waiting thread at a
        # time (the leader) blocks in Redis; the others wait on _rcond.
        self._mailbox = os.urandom(8).hex()
        self._subs: dict[str, weakref.ref[Any]] = {}
        self._cache: dict[str, Any] = {}
        self._acks: deque[str] = deque()
        self._unsub: deque[str] = deque()
        self._rcond = threading.Condition()
        self._rleader = False
        # One mailbox read at a time: a read takes other tasks' results (and
        # marks them read in Redis), so no other call may ask Redis for one of
        # them until this read's reply has put them in the cache.
        self._read_lock = threading.Lock()

    def _here(self) -> None:
        """Start this process's state afresh if we are in a forked child."""
        if os.getpid() != self._pid:
            self._init_process_state()

    def _sync(self) -> None:
        """Wait until this process's buffered writes are committed."""
        self._here()
        self._writer.sync()

    @classmethod
    def factory(cls, url: str, name: str = DEFAULT, *args: Any, **kw: Any) -> TaskQueue:
        """How :func:`~poolx.core.get_broker` builds one (a new queue per call)."""
        return cls(url, name, *args, **kw)

    # -- plumbing ---------------------------------------------------------------

    @property
    def consumer_id(self) -> str:
        """The name of this process's leases (``host:pid:random``)."""
        pid = os.getpid()
        if pid != self._consumer_pid and self._consumer_pid is not None:
            # Not chosen by the user, and new to this process (first use, or
            # after a fork: a child is a different consumer).
            self._consumer_pid = pid
            self._consumer_id = f"{socket.gethostname()}:{pid}:{os.urandom(4).hex()}"
        assert self._consumer_id is not None
        return self._consumer_id

    @consumer_id.setter
    def consumer_id(self, value: str) -> None:
        self._consumer_id = value
        self._consumer_pid = None  # chosen: kept as it is, even across fork

    @property
    def client(self) -> Any:
        """The redis-py client (for diagnostics; do not change queue keys)."""
        return self._client

    @property
    def reconnects(self) -> int:
        """Operations that succeeded after Redis had been unreachable (each
        one logged "reconnected to Redis")."""
        return self._conn.reconnects

    @property
    def retry_timeout(self) -> float:
        """Seconds an operation is retried while Redis is unreachable (also
        settable: a consumer that stops shortens it, and operations already
        retrying follow the new value)."""
        return self._conn.retry_timeout

    @retry_timeout.setter
    def retry_timeout(self, seconds: float) -> None:
        self._conn.retry_timeout = check_seconds("retry_timeout", seconds, allow_none=False,
                                                 allow_zero=True)  # type: ignore[assignment]

    def _call(self, what: str, *args: Any) -> Any:
        """One script command on this queue's keys."""
        return self._run(what, self._script, self._key, what, *args)

    def ping(self) -> bool:
        """True if Redis answers (raises :class:`RedisUnavailable` if not)."""
        return bool(self._run("ping", self._client.ping))

    def flush(self) -> None:
        """Wait until every result and acknowledgement stored so far through
        :meth:`store_result` or :meth:`task_done` is committed to Redis."""
        self._sync()

    def close(self) -> None:
        """Give back tasks fetched but never handed to a thread, and close the
        connections.  Operations after ``close`` raise :class:`RedisUnavailable`
        (once Redis would have to be retried)."""
        self._here()
        with self._cond:
            leftovers = [item for item, _ in self._handoff]
            self._handoff.clear()
        for item in leftovers:
            try:
                self.requeue_task(item[0], item[1])
            except Exception:
                log.warning("could not give back task %s; its lease will expire", item[0])
        self._sync()
        self._conn.close()

    # -- producer side ----------------------------------------------------------

    @staticmethod
    def _task_fields(result: Deferred) -> tuple[bytes, int, int]:
        """What the record keeps of the task's options: whether its result is
        ignored, the lease one heartbeat grants, the deliveries allowed."""
        task = result.task
        if not task.options:
            return _DEFAULT_FIELDS
        ignore = b"1" if task.ignore_result else b"0"
        return ignore, _lease_ms(task.lease), 1 + task.max_retries

    def enqueue_task(self, result: Deferred, message: bytes) -> bool:
        return self._enqueue(result, message, 0)

    def schedule_task(self, result: Deferred, message: bytes, delay: float,
                      args: list[str] | None = None) -> bool:
        check_seconds("delay", delay, allow_none=False, allow_zero=True)
        if args:
            return self._defer(result, message, args, _delay_ms(delay))
        return self._enqueue(result, message, _delay_ms(delay))

    def _enqueue(self, result: Deferred, message: bytes, delay_ms: int) -> bool:
        """Create and queue (or, with ``delay_ms``, schedule) one task."""
        self._here()
        ignore, lease, deliveries = self._task_fields(result)
        buffer = getattr(self._local, "buffer", None)
        if buffer is not None:
            if result.id in buffer:
                return False
            # the clock starts at this call, not at the flush
            buffer[result.id] = (result.task.name, message, ignore, lease, deliveries, delay_ms,
                                 time.monotonic())
            if len(buffer) >= BATCH_SIZE:
                self._flush()
            return True
        # The record names this queue's mailbox (harmless for an ignored
        # result: nothing is stored), and the call tells Redis which of its
        # Deferreds were dropped since the last call.
        unsub = self._take(self._unsub) if self._unsub else []
        # Subscribed *before* the call: its result may reach the mailbox, and
        # another thread's read may take it, before the call returns here.
        added = not result.task.ignore_result and self._subscribe(result)
        try:
            dups = self._call("enqueue", os.urandom(8), self._mailbox, len(unsub), *unsub,
                              result.id, message, ignore, lease, deliveries, result.task.name,
                              delay_ms)
        except BaseException:
            if added:
                self._subs.pop(result.id, None)
            raise
        if dups:
            if added:
                self._subs.pop(result.id, None)
            return False
        return True

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        return self._batch()

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:
        if getattr(self._local, "buffer", None) is not None:
            yield  # nested: the outer batch flushes
            return
        self._local.buffer = {}
        try:
            yield
        finally:
            try:
                self._flush()
            finally:
                self._local.buffer = None

    def _flush(self) -> None:
        buffer = getattr(self._local, "buffer", None)
        if not buffer:
            return
        items = list(buffer.items())
        buffer.clear()
        dups: list[str] = []
        for start in range(0, len(items), BATCH_SIZE):
            args: list[Any] = [os.urandom(8), b"", 0]
            now = time.monotonic()
            for task_id, (name, message, ignore, lease, deliveries, delay_ms, called) in items[
                start : start + BATCH_SIZE
            ]:
                if delay_ms:  # what is left of the delay (at least 1 ms: still scheduled)
                    delay_ms = max(1, delay_ms - int((now - called) * 1000))
                args += (task_id, message, ignore, lease, deliveries, name, delay_ms)
            dups += [_text(dup) for dup in self._call("enqueue", *args)]
        if dups:
            names = dict((task_id, fields[0]) for task_id, fields in items)
            more = f" ({len(dups) - 1} more duplicates in the batch)" if len(dups) > 1 else ""
            raise DuplicateTask(
                names[dups[0]], self.name, dups[0], f"cannot enqueue task with duplicate id{more}"
            )

    def defer_task(self, result: Deferred, message: bytes, args: list[str]) -> bool:
        return self._defer(result, message, args, 0)

    def _defer(self, result: Deferred, message: bytes, args: list[str], delay_ms: int) -> bool:
        self._flush()  # its arguments may be waiting in this thread's batch
        ignore, lease, deliveries = self._task_fields(result)
        mailbox = b"" if result.task.ignore_result else self._mailbox
        added = bool(mailbox) and self._subscribe(result)  # before the call: see enqueue_task
        try:
            made = self._call(
                "defer", os.urandom(8), result.id, message, ignore, lease, deliveries, len(args),
                mailbox, result.task.name, delay_ms,
            )
        except BaseException:
            if added:
                self._subs.pop(result.id, None)
            raise
        if not made and added:
            self._subs.pop(result.id, None)
        return bool(made)

    def undefer_task(self, task_id: str) -> None:
        self._call("undefer", task_id)

    def reserve_argument(self, argument_id: str, deferred_id: str) -> tuple[bool, Any]:
        self._sync()
        with self._rcond:
            # Read ahead (so marked read in Redis): the cache has it, and
            # keeps it for the argument's own Deferred.
            cached = self._cache.get(argument_id)
        if cached is not None:
            return (False, None) if cached is TASK_EXPIRED else (True, cached)
        reply = self._call("reserve", argument_id, deferred_id)
        if not reply[0]:
            return (False, None)
        return (True, reply[1] if len(reply) > 1 else None)

    def set_argument(self, task_id: str, argument_id: str, message: Any) -> bool:
        return bool(self._call("setarg", task_id, argument_id, message))

    def size(self) -> int:
        return int(self._call("size"))

    def scheduled_size(self) -> int:
        return int(self._call("nsched"))

    def discard_pending(self) -> None:
        self._sync()
        self._call("purge")

    def queued_tasks(self, limit: int) -> list[QueuedTask]:
        if limit <= 0:
            return []
        reply = self._call("queued", limit)
        # Ages by the server's clock, as times on this machine's clock.
        now, server_ms = time.time(), int(reply[0])
        return [
            QueuedTask(
                _text(reply[i]),
                _text(reply[i + 1]) or None,
                now - (server_ms - int(reply[i + 2])) / 1000 if reply[i + 2] else None,
            )
            for i in range(1, len(reply), 3)
        ]

    # -- consumer side ----------------------------------------------------------

    def get_arguments(self, task_id: str) -> dict[str, Any]:
        self._here()
        with self._lock:
            fetched = self._args.pop(task_id, None)
        if fetched is not None:
            return fetched
        reply = self._call("args", task_id)
        return {_text(reply[i]): reply[i + 1] for i in range(1, 1 + 2 * int(reply[0]), 2)}

    def _parse_fetch(self, reply: list[Any]) -> tuple[list[Delivery], int, int, int]:
        reclaimed, next_ms, due_ms = int(reply[0]), int(reply[1]), int(reply[2])
        out: list[Delivery] = []
        held: list[tuple[str, tuple[str, str, int]]] = []
        fetched_args: list[tuple[str, dict[str, bytes]]] = []
        consumer = self.consumer_id
        i, end = 3, len(reply)
        while i < end:
            ref, task_id, message = _text(reply[i]), _text(reply[i + 1]), reply[i + 2]
            attempt, allowed = int(reply[i + 3]), int(reply[i + 4])
            lease, nargs = int(float(reply[i + 5])), int(reply[i + 6])
            i += 7
            if nargs:
                fetched_args.append(
                    (task_id, {_text(reply[i + 2 * k]): reply[i + 2 * k + 1] for k in range(nargs)})
                )
                i += 2 * nargs
            failure = None
            if allowed and attempt > allowed:
                failure = (
                    f"WorkerLost: the task was delivered {attempt - 1} times and each time its "
                    f"consumer was lost before it finished (lease expired: process killed, "
                    f"machine lost or stalled); max_retries={allowed - 1} is used up"
                )
            held.append((task_id, (ref, f"{consumer}#{attempt}", lease)))
            out.append(Delivery(task_id, message, attempt, failure))
        with self._lock:
            self._held.update(held)
            self._args.update(fetched_args)
        return out, reclaimed, next_ms, due_ms

    def _fetch(self, want: Callable[[], int], deadline: float | None) -> list[Delivery]:
        """Take up to ``want()`` tasks, blocking until ``deadline`` for one."""
        while True:
            # The nonce lets a retry of this call (its reply lost) take the
            # same tasks again; it is remembered while a retry may come.
            reply = self._call(
                "fetch", self.consumer_id, max(1, want()), self._min_lease_ms, RECLAIM_LIMIT,
                PROMOTE_LIMIT, os.urandom(8).hex(),
                int((self._conn.retry_timeout + FETCH_REMEMBER_EXTRA) * 1000),
            )
            deliveries, reclaimed, next_ms, due_ms = self._parse_fetch(reply)
            if reclaimed:
                log.warning(
                    "%s [%s]: %d task(s) whose consumer stopped renewing its lease "
                    "are queued again", self.display_url, self.name, reclaimed,
                )
            if deliveries:
                for delivery in deliveries:
                    if delivery.attempt > 1:
                        log.warning("redelivering [%s:%s] (delivery %d)",
                                    self.name, delivery[0], delivery.attempt)
                return deliveries
            # Nothing ready: block on the ready list, and run the script again
            # only when a task shows up, when a lease may have expired
            # (next_ms), when a scheduled task is due (due_ms: the block ends
            # then by this process's clock, not Redis's next tick), or after
            # IDLE_RECHECK seconds (a lease taken since then by a consumer
            # that died): an idle queue costs one blocking call per max_block
            # seconds, not a script run each time.  A task scheduled earlier
            # than due_ms meanwhile rings (a marker in the ready list).
            start = time.monotonic()
            recheck = start + IDLE_RECHECK
            if next_ms >= 0:
                recheck = min(recheck, start + next_ms / 1000 + 0.005)
            due = None if due_ms < 0 else start + due_ms / 1000 + 0.001
            if due is not None:
                recheck = min(recheck, due)
            while True:
                now = time.monotonic()
                block = min(self._max_block, recheck - now)
                if deadline is not None:
                    if deadline - now <= 0:
                        return []
                    block = min(block, deadline - now)
                if block <= 0:
                    break
                precise = due is not None and now + block >= due
                if self._run("get", self._wait_ready, max(block, 0.001), precise):
                    break

    def _wait_ready(self, block: float, precise: bool = False) -> bool:
        """Block until the ready list is non-empty, taking nothing from it;
        False if it stayed empty for ``block`` seconds (``precise``: see
        :meth:`_wait_list`)."""
        return self._wait_list(self._ready_key, block, precise)

    def _wait_list(self, key: str, block: float, precise: bool = False) -> bool:
        """Block until the list ``key`` is non-empty, taking nothing from it
        (``precise``: no longer than ``block`` by this process's clock, on
        Redis >= 6.2); False if it stayed empty."""
        if self._blmove:
            try:
                if precise:
                    return self._conn.block(block, "BLMOVE", key, key, "RIGHT", "RIGHT") is not None
                return self._client.blmove(key, key, block, "RIGHT", "RIGHT") is not None
            except ResponseError as err:
                if "unknown command" not in str(err).lower():
                    raise
                self._blmove = False  # Redis < 6.2: rotate instead (order may shift)
        return self._client.brpoplpush(key, key, max(1, round(block))) is not None  # whole seconds

    def _fresh(self, item: Delivery, fetched: float) -> bool:
        """Is a task fetched a while ago still leased to us?  (Renews it.)"""
        if time.monotonic() - fetched < HANDOFF_FRESH:
            return True
        with self._lock:
            ref, owner, lease = self._held.get(item[0], ("t" + item[0], "", self._min_lease_ms))
        renewed = self._call("renew", lease, ref, owner)[0]
        if renewed == 1:
            return True
        if renewed == 2:
            log.info("[%s:%s] was cancelled before a thread took it; skipped", self.name, item[0])
        else:
            log.warning("[%s:%s] was reclaimed before a thread took it; skipped", self.name,
                        item[0])
        with self._lock:
            self._held.pop(item[0], None)
            self._args.pop(item[0], None)
        return False

    def get(self, timeout: float | None = None) -> Delivery | None:
        self._here()
        if timeout is not None and timeout < 0:
            raise ValueError("negative timeout not supported")
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._cond
        with cond:
            self._idle += 1
        try:
            while True:
                item = None
                with cond:
                    while True:
                        if self._handoff:
                            item, fetched = self._handoff.popleft()
                            break
                        if not self._fetching:
                            self._fetching = True
                            break
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return None
                        cond.wait(remaining)
                if item is not None:
                    if self._fresh(item, fetched):
                        return item
                    continue
                got: list[Delivery] = []
                try:
                    got = self._fetch(lambda: self._idle, deadline)
                finally:
                    now = time.monotonic()
                    with cond:
                        self._fetching = False
                        self._handoff.extend((extra, now) for extra in got[1:])
                        cond.notify_all()
                return got[0] if got else None
        finally:
            with cond:
                self._idle -= 1

    def get_many(self, count: int, timeout: float | None = None) -> list[Delivery]:
        """Up to ``count`` tasks in one round trip (blocking up to ``timeout``
        for the first); for consumers that feed several workers."""
        self._here()
        if timeout is not None and timeout < 0:
            raise ValueError("negative timeout not supported")
        items: list[Delivery] = []
        while len(items) < count:
            with self._cond:
                if not self._handoff:
                    break
                item, fetched = self._handoff.popleft()
            if self._fresh(item, fetched):
                items.append(item)
        if len(items) < count:
            deadline = time.monotonic() + (0 if items else timeout or 0)
            if timeout is None and not items:
                deadline = None
            items += self._fetch(lambda: count - len(items), deadline)
        return items

    def set_task_timeout(self, task_id: str, timeout: float) -> None:
        self._here()
        check_seconds("task timeout", timeout, allow_none=False)
        with self._lock:
            ref, owner, _lease = self._held.get(task_id, ("t" + task_id, "", 0))
        if not self._call("renew", _lease_ms(timeout), ref, owner)[0]:
            log.warning(
                "[%s:%s] lost its lease (it ran longer than its heartbeat allowed, or its "
                "result is already in); it may run again elsewhere", self.name, task_id,
            )

    def task_done(self, task_id: str) -> None:
        self._here()
        with self._lock:
            ref, owner, _lease = self._held.pop(task_id, ("t" + task_id, "", 0))
            self._args.pop(task_id, None)
        self._writer.add(_TaskDone(ref, owner))

    def requeue_task(self, task_id: str, message: bytes, ignore_result: bool = False) -> bool:
        with self._lock:
            ref, owner, _lease = self._held.pop(task_id, ("t" + task_id, "", 0))
            self._args.pop(task_id, None)
        self._sync()
        return bool(self._call("requeue", task_id, message, b"1" if ignore_result else b"0",
                               ref, owner))

    def retry_task(self, task_id: str, message: bytes, delay: float,
                   ignore_result: bool = False) -> bool:
        check_seconds("delay", delay, allow_none=False, allow_zero=True)
        with self._lock:
            ref, owner, _lease = self._held.pop(task_id, ("t" + task_id, "", 0))
            self._args.pop(task_id, None)
        self._sync()
        return bool(self._call("retry", task_id, message, b"1" if ignore_result else b"0",
                               ref, owner, _delay_ms(delay) if delay > 0 else 0))

    # -- cancelling -----------------------------------------------------------------

    def cancel_task(self, task_id: str, token: bytes, timeout: float) -> bool:
        self._flush()  # the task may be waiting in this thread's batch
        self._sync()
        # The nonce lets a retry of this call (its reply lost) answer as the
        # first; it is remembered while a retry may come.
        return bool(self._call("cancel", task_id, token, _lease_ms(timeout), os.urandom(8).hex(),
                               int((self._conn.retry_timeout + FETCH_REMEMBER_EXTRA) * 1000)))

    def cancelled_tasks(self, task_ids: list[str], timeout: float | None) -> list[str]:
        """See :meth:`AbstractTaskQueue.cancelled_tasks`.  Blocks (without
        taking it) on this consumer's notice list, which the ``cancel``
        script pushes to, a few seconds at most (the longest blocking call); then
        one script call finds which held tasks were cancelled (each marker
        names the delivery, so a task redelivered elsewhere is not hit)."""
        self._here()
        deadline = None if timeout is None else time.monotonic() + timeout
        found = self._report_cancelled(task_ids)
        if found:
            return found
        block = self._block(deadline)
        if block > 0:
            self._run("cancelled_tasks", self._wait_list, f"{self._key}cn:{self.consumer_id}",
                      max(block, 0.001), block < self._max_block)
        with self._lock:
            held = [(ref, owner) for ref, owner, _lease in self._held.values()]
            ids = {ref: task_id for task_id, (ref, _owner, _lease) in self._held.items()}
        if held:
            args = [item for pair in held for item in pair]
            refs = self._call("cxcheck", self.consumer_id, *args)
            with self._lock:
                marked = {ids[_text(ref)] for ref in refs if _text(ref) in ids}
                self._cancelled.update(marked - self._reported)
        return self._report_cancelled(task_ids)

    def _report_cancelled(self, task_ids: list[str]) -> list[str]:
        """The ids among ``task_ids`` found cancelled, now reported (once:
        Redis keeps the markers while the tasks run)."""
        with self._lock:
            cancelled, reported = self._cancelled, self._reported
            cancelled.intersection_update(self._held)  # answered meanwhile: nothing to stop
            reported.intersection_update(self._held)
            found = [task_id for task_id in task_ids if task_id in cancelled]
            cancelled.difference_update(found)
            reported.update(found)
        return found

    # -- results ------------------------------------------------------------------

    def get_status(self, task_id: str) -> str | None:
        self._sync()
        status = self._call("status", task_id)
        return None if status is None else _text(status)

    def set_result(self, task_id: str, message: bytes, timeout: float) -> list[str]:
        with self._lock:
            self._held.pop(task_id, None)
            self._args.pop(task_id, None)
        self._sync()
        ready = self._call("setres", task_id, message, _lease_ms(timeout))
        return [_text(dep) for dep in ready]

    def store_result(self, task_id: str, message: bytes, timeout: float) -> None:
        self._here()
        with self._lock:
            self._held.pop(task_id, None)
            self._args.pop(task_id, None)
        self._writer.add(_StoreResult(task_id, message, _lease_ms(timeout)))

    def _commit(self, items: list[_StoreResult | _TaskDone]) -> None:
        """The writer's call: results and acknowledgements, one script call
        per :data:`BATCH_SIZE` of them."""
        for start in range(0, len(items), BATCH_SIZE):
            part = items[start : start + BATCH_SIZE]
            results = [item for item in part if isinstance(item, _StoreResult)]
            args: list[Any] = [len(results)]
            for result in results:
                args += result
            for item in part:
                if isinstance(item, _TaskDone):
                    args += item
            ready = self._call("commit", *args)
            if ready:
                log.debug("[%s] undefer %s", self.name, ", ".join(_text(dep) for dep in ready))

    def discard_result(self, task_id: str, task_expired_token: bytes) -> None:
        with self._lock:
            ref, _owner, _lease = self._held.pop(task_id, ("", "", 0))
            self._args.pop(task_id, None)
        self._sync()
        self._call("discard", task_id, task_expired_token, ref)

    @staticmethod
    def _take(items: deque[str], limit: int = PREFETCH_LIMIT) -> list[str]:
        taken: list[str] = []
        with contextlib.suppress(IndexError):
            while len(taken) < limit:
                taken.append(items.popleft())
        return taken

    def _pop(self, nonce: bytes, register: bool, ids: list[str]) -> list[tuple[bytes, Any]]:
        acks = self._take(self._acks)
        reply = self._call("pop", nonce, POPPED_KEEP_MS, b"1" if register else b"0",
                           len(acks), *acks, *ids)
        pairs = [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
        self._acks.extend(task_id for task_id, (code, _msg) in zip(ids, pairs, strict=False)
                          if code == PopCode.READY)
        return pairs

    # -- result prefetch ------------------------------------------------------------

    def _subscribe(self, result: Deferred) -> bool:
        """Collect ``result``'s result through this process's mailbox for as
        long as the Deferred lives (see :meth:`pop_result`); False if it
        was subscribed already."""
        task_id = result.id
        subs, cache, unsub = self._subs, self._cache, self._unsub

        def dropped(ref: weakref.ref[Any]) -> None:
            # Runs inside the garbage collector: no locks, atomic dict and
            # deque operations only.
            current = subs.get(task_id)
            if current is ref:
                subs.pop(task_id, None)
                unsub.append(task_id)
            if current is ref or current is None:
                cache.pop(task_id, None)

        if task_id in subs:
            return False
        subs[task_id] = weakref.ref(result, dropped)
        return True

    def share_result(self, task_id: str) -> bool:
        """Stop prefetching ``task_id``'s result (a copy of its Deferred goes
        to another process, whose reader must find it in Redis).

        :returns: True if the result was already prefetched: the caller
            should read it now (:meth:`pop_result`, no round trip).
        """
        self._here()
        with self._read_lock, self._rcond:  # not while a read may be taking it
            if task_id in self._cache:
                return True
            if self._subs.pop(task_id, None) is not None:
                self._unsub.append(task_id)
        return False

    def _prefetch(self, task_id: str, register: bool) -> tuple[bytes, Any, int]:
        """One ``wait`` call: ``task_id``'s result, and those of the
        mailbox's other tasks into the cache (waking threads waiting there).

        :returns: ``(code, message, left)``: ``left`` counts the mailbox
            entries still there (the cache was too full to take them).
        """
        acks, unsub = self._take(self._acks, 2 * PREFETCH_LIMIT), self._take(self._unsub)
        limit = max(0, min(PREFETCH_LIMIT, PREFETCH_MAX - len(self._cache)))
        reply = self._call(
            "wait", os.urandom(8), POPPED_KEEP_MS, b"1" if register else b"0", len(acks), *acks,
            self._mailbox, limit, len(unsub), *unsub, task_id,
        )
        # The results it read are deleted already (no ack: see redis.lua).
        (code, message), drained, left = (reply[0][0], reply[0][1]), reply[1], int(reply[2])
        if drained:
            with self._rcond:
                for i in range(0, len(drained), 3):
                    other, other_code = _text(drained[i]), drained[i + 1]
                    if other != task_id and other in self._subs:
                        self._cache[other] = (
                            drained[i + 2] if other_code == PopCode.READY else TASK_EXPIRED
                        )
                self._rcond.notify_all()
        return code, message, left

    def _cached(self, task_id: str) -> Any:
        """The prefetched result of ``task_id`` (now read), or None."""
        with self._rcond:
            message = self._cache.pop(task_id, None)
            if message is not None:
                self._subs.pop(task_id, None)
            return message

    def _wait_prefetched(self, task_id: str, timeout: float | None) -> Any:
        """:meth:`pop_result` for a task whose result comes to the mailbox."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cond, lead = self._rcond, False
        try:
            while True:
                with cond:
                    message = self._cache.pop(task_id, None)
                    if message is not None:
                        self._subs.pop(task_id, None)
                        return message
                    if not lead and timeout != 0:
                        if self._rleader:
                            remaining = None if deadline is None else deadline - time.monotonic()
                            if remaining is not None and remaining <= 0:
                                return None
                            cond.wait(remaining)
                            continue
                        self._rleader = lead = True
                with self._read_lock:
                    with cond:  # a read that finished meanwhile may have brought it
                        message = self._cache.pop(task_id, None)
                        if message is not None:
                            self._subs.pop(task_id, None)
                            return message
                    full = len(self._cache) >= PREFETCH_MAX
                    code, message, left = self._prefetch(task_id, register=full and timeout != 0)
                    if code != PopCode.WAITING:
                        with cond:
                            self._subs.pop(task_id, None)
                        return message if code == PopCode.READY else TASK_EXPIRED
                block = self._block(deadline)
                if timeout == 0 or block <= 0:
                    return None
                if left and full:
                    # The cache is full: wait for this task alone.
                    self._run("pop_result", self._wait_result, task_id, block)
                else:
                    self._run("pop_result", self._wait_list, f"{self._key}mb:{self._mailbox}",
                              max(block, 0.01), block < self._max_block)
        finally:
            if lead:
                with cond:
                    self._rleader = False
                    cond.notify_all()

    def _block(self, deadline: float | None) -> float:
        """Seconds the next blocking call may last (<= 0: the deadline passed)."""
        if deadline is None:
            return self._max_block
        return min(self._max_block, deadline - time.monotonic())

    def _wait_result(self, task_id: str, block: float) -> None:
        """Block on ``task_id``'s wake-up tokens; a block that ends at the
        caller's deadline ends on time (see :meth:`Connection.block`)."""
        key, block = self._key + "w:" + task_id, max(block, 0.01)
        if block < self._max_block:
            self._conn.block(block, "BLPOP", key)
        else:
            self._client.blpop([key], block)

    def pop_result(self, task_id: str, timeout: float | None) -> Any:
        """See :meth:`AbstractTaskQueue.pop_result`.

        For a task enqueued through this queue object whose Deferred is
        alive, the call also reads the results of this process's other such
        tasks that are ready into a cache (their own ``pop_result`` then
        costs no round trip), and blocks on this process's mailbox, which
        every one of their results reaches.
        """
        self._sync()
        cached = self._cached(task_id)
        if cached is not None:
            return cached
        if task_id in self._subs:
            return self._wait_prefetched(task_id, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        nonce = os.urandom(8)
        while True:
            [(code, message)] = self._pop(nonce, timeout != 0, [task_id])
            if code == PopCode.READY:
                return message
            if code == PopCode.EXPIRED:
                return TASK_EXPIRED
            block = self._block(deadline)
            if block <= 0:
                return None
            self._run("pop_result", self._wait_result, task_id, block)

    def pop_results(self, task_ids: list[str], timeout: float | None) -> dict[str, Any]:
        """Results in order: each call reads every ready result up to the first
        task still running, then blocks until *that* one is done, so a
        stream of results costs one round trip per burst, not per task.
        Tasks whose results come to this queue object's mailbox are read
        through it (see :meth:`pop_result`), which drains it as it goes."""
        self._sync()
        deadline = None if timeout is None else time.monotonic() + timeout
        nonce = os.urandom(8)
        pending = list(dict.fromkeys(task_ids))
        found: dict[str, Any] = {}
        start = 0
        # Tasks this queue object enqueued: through their mailbox (which that
        # drains), in order; once one times out, only what is read already.
        timed_out = False
        for task_id in pending:
            if task_id not in self._subs and task_id not in self._cache:
                continue
            if timed_out:
                message = self._cached(task_id)
            else:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                message = self.pop_result(task_id, remaining)
                timed_out = message is None
            if message is not None:
                found[task_id] = message
        pending = [task_id for task_id in pending
                   if task_id not in found and task_id not in self._subs]
        while start < len(pending):
            chunk = pending[start : start + POP_CHUNK]
            replies = self._pop(nonce, timeout != 0, chunk)
            for task_id, (code, message) in zip(chunk, replies, strict=False):
                if code == PopCode.WAITING:
                    break
                found[task_id] = message if code == PopCode.READY else TASK_EXPIRED
                start += 1
            else:
                continue  # the whole chunk was ready: go on at once
            block = self._block(deadline)
            if block <= 0:
                break
            self._run("pop_results", self._wait_result, pending[start], block)
        for task_id in found:
            self._subs.pop(task_id, None)
        return found

    # -- the registry of live worker pools --------------------------------------

    def register_pool(self, pool_id: str, info: str, ttl: float) -> None:
        check_seconds("pool ttl", ttl, allow_none=False)
        self._run("register_pool", self._script, self._pools_key, "preg", pool_id, info,
                  _lease_ms(ttl))

    def unregister_pool(self, pool_id: str) -> None:
        self._run("unregister_pool", self._script, self._pools_key, "punreg", pool_id)

    def live_pools(self) -> list[str]:
        reply = self._run("live_pools", self._script, self._pools_key, "plive")
        return [_text(info) for info in reply if info is not None]


    # -- periodic tasks ---------------------------------------------------------------

    def set_periodic(self, name: str, task: str, schedule: str, spec: bytes,
                     next_run: float) -> bool:
        self._sync()
        return bool(self._call("pset", name, task, schedule, spec, _epoch_ms(next_run),
                               os.urandom(8).hex()))

    def remove_periodic(self, name: str) -> bool:
        self._sync()
        return bool(self._call("pdel", name))

    def periodic_entries(self, scheduler: str = "") -> tuple[float, list[PeriodicEntry]]:
        reply = self._call("plist", scheduler, _lease_ms(PERIODIC_WATCH))
        entries = [
            PeriodicEntry(_text(reply[i]), _text(reply[i + 1]), _text(reply[i + 2]),
                          int(reply[i + 3]) / 1000, _text(reply[i + 4]), reply[i + 5])
            for i in range(1, len(reply), 6)
        ]
        return int(reply[0]) / 1000, entries

    def claim_periodic(self, entry: PeriodicEntry, next_run: float, result: Deferred,
                       message: bytes) -> bool:
        self._here()
        ignore, lease, deliveries = self._task_fields(result)
        return bool(self._call("pclaim", entry.name, entry.version, _epoch_ms(entry.next_run),
                               _epoch_ms(next_run), result.id, message, ignore, lease,
                               deliveries, result.task.name))

    def wait_periodic(self, scheduler: str, timeout: float) -> None:
        """Block on the scheduler's wake-up token (at most the connection's
        longest blocking call, and no longer than ``timeout`` by this
        process's clock)."""
        seconds = min(timeout, self._max_block, PERIODIC_WATCH / 2)
        if seconds > 0:  # (BLPOP's 0 would wait forever; under 1 ms Redis rounds to it)
            self._run("wait_periodic", self._conn.block, max(seconds, 0.001), "BLPOP",
                      f"{self._key}pw:{scheduler}")

    def wake_periodic(self, scheduler: str) -> None:
        self._call("pwake", scheduler)


PERIODIC_WATCH = 60.0
"""Seconds a scheduler's registration for wake-ups lasts after it read the
periodic entries (it reads them again at least every few seconds)."""


def _epoch_ms(seconds: float) -> str:
    """An epoch time as Redis stores it: whole milliseconds, as text (the
    script compares these texts)."""
    return str(round(seconds * 1000))
