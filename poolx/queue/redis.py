"""``redis://``, ``rediss://`` and ``unix://`` — the distributed backend.

Owned here: :class:`TaskQueue` (WorQ's ``worq.queue.redis.TaskQueue`` under
poolx's name), the URL parsing, the connection and reconnection policy, and
this process's view of the tasks it has taken.  Everything stored lives in
Redis and changes only through the Lua script in
:mod:`poolx.queue._redis_lua` (key layout documented there and in
``docs/redis.rst``)::

    producer ── enqueue_task ─(batch: hundreds per call)──▶ EVALSHA enqueue ──▶ ready list
    consumer ── get ── one fetcher thread per TaskQueue ──▶ EVALSHA fetch ──▶ leases (zset)
                 ▲        takes a task for *every* idle       │ (reclaims expired leases
                 │        thread in one call                  │  first: at-least-once)
                 │     BLMOVE ready ready (blocks, takes nothing) when empty
                heartbeat ── set_task_timeout ───────────▶ EVALSHA renew
                result ───── store_result ─▶ writer thread: EVALSHA commit (every result
                             (task_done)       buffered meanwhile, one call) ─▶ wake tokens
    waiter ──── pop_result / pop_results ────────────────▶ EVALSHA pop; BLPOP w:<id>

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
* **The writer** (:class:`_Writer`): results stored through
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

Failures.  Redis errors that mean "not reachable" (refused, reset, timed out,
loading, read-only replica) are retried with exponential backoff for up to
``retry_timeout`` seconds once the queue has talked to Redis at least once,
logged with the URL minus its password; every script call is idempotent
under retry (creating calls carry a nonce).  A Redis that cannot be reached
the first time, or refuses the credentials, fails at once with
:class:`RedisUnavailable`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import (
        AuthenticationError,
        NoScriptError,
        ReadOnlyError,
        ResponseError,
    )
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
    from redis.retry import Retry
except ImportError as err:  # pragma: no cover - exercised without redis-py only
    raise ImportError(
        "poolx's redis:// backend needs the redis package: pip install 'poolx[redis]'"
    ) from err

from poolx.const import DEFAULT, TASK_EXPIRED
from poolx.queue._redis_lua import SCRIPT
from poolx.queue.base import AbstractTaskQueue, Delivery
from poolx.queue.urls import redact_url
from poolx.serialization import JSONSerializer, PickleSerializer, Serializer

if TYPE_CHECKING:
    from poolx.task import Deferred

__all__ = ["TaskQueue", "RedisUnavailable", "SCHEMES"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMES = ("redis", "rediss", "unix")
"""URL schemes this backend serves (TLS is ``rediss``)."""

DEFAULT_PREFIX = "poolx"
MAX_BLOCK = 5.0
"""Longest single blocking call (seconds): a wait re-checks leases and
records at least this often, so nothing waits forever on a vanished key."""
BATCH_SIZE = 500
"""Tasks per script call when a batch is flushed."""
POP_CHUNK = 500
"""Results asked for per script call by :meth:`TaskQueue.pop_results`."""
RECLAIM_LIMIT = 100
"""Expired leases reclaimed per fetch."""
POPPED_KEEP_MS = 60_000
"""How long a read result stays readable by the same (retried) call."""
HANDOFF_FRESH = 1.0
"""A fetched task handed to a thread later than this is re-checked (and its
lease renewed) first."""

_RETRYABLE = (_RedisConnectionError, _RedisTimeoutError, ReadOnlyError)
_OWN_OPTIONS = frozenset(["prefix", "serializer", "retry_timeout"])


class RedisUnavailable(ConnectionError):
    """Redis could not be reached (or refused the credentials).

    The message names the URL with its password replaced by ``***``.
    """


def _lease_ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL for redis-py, and poolx's own query options taken out of it."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise ValueError(f"malformed Redis URL {shown!r}: {err}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"not a Redis URL: {shown!r} (schemes: redis, rediss, unix)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in query if key in _OWN_OPTIONS}
    rest = [(key, value) for key, value in query if key not in _OWN_OPTIONS]
    # Not urlunsplit: it drops the "//" of "unix:///path" (empty host).
    clean = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if rest:
        clean += "?" + urlencode(rest)
    try:
        redis.connection.parse_url(clean)
        if parts.scheme.lower() != "unix":
            parts.port  # noqa: B018 - raises ValueError for a bad port
            db = parts.path.strip("/")
            if db and not db.isdigit():
                raise ValueError(f"database must be a number, not {db!r}")
    except ValueError as err:
        raise ValueError(f"invalid Redis URL {shown!r}: {err}") from None
    return clean, own


def _make_serializer(choice: Serializer | str | None) -> Serializer | None:
    if choice is None or isinstance(choice, Serializer):
        return choice
    named = {"pickle": PickleSerializer, "json": JSONSerializer}
    try:
        return named[choice.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown serializer {choice!r} (pickle or json)") from None


def default_redis_factory(url: str) -> redis.Redis:
    """The client poolx uses: redis-py's own retries are off (poolx retries
    idempotent script calls itself), a socket timeout well above the longest
    blocking call, bytes responses."""
    options: dict[str, Any] = {}
    if not url.lower().startswith("unix:"):
        options["socket_keepalive"] = True  # TCP only
    return redis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=MAX_BLOCK * 6,
        socket_connect_timeout=5,
        health_check_interval=30,
        **options,
    )


class _Writer:
    """Group commit: one thread writes everything buffered, one call per batch."""

    LINGER = 0.2
    """Seconds the idle writer thread waits for more before it exits."""

    def __init__(self, commit: Callable[[list[tuple[Any, ...]]], None], name: str) -> None:
        self._commit = commit
        self._name = name
        self._cond = threading.Condition()
        self._items: list[tuple[Any, ...]] = []
        self._submitted = 0
        self._committed = 0
        self._thread: threading.Thread | None = None

    def add(self, item: tuple[Any, ...]) -> None:
        with self._cond:
            self._items.append(item)
            self._submitted += 1
            self._ensure_thread()
            self._cond.notify()

    def _ensure_thread(self) -> None:
        # After a fork the parent's thread object reports not alive.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=False)
            self._thread.start()

    def sync(self) -> None:
        """Return once everything added so far is committed (or failed)."""
        with self._cond:
            target = self._submitted
            while self._committed < target:
                self._ensure_thread()
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._items:
                    self._cond.wait(self.LINGER)  # idle: linger briefly for more
                    if not self._items:
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                items, self._items = self._items, []
                upto = self._submitted
            try:
                self._commit(items)
            except BaseException:
                log.error(
                    "could not store %d result(s); their tasks will be delivered again "
                    "when their leases expire", len(items), exc_info=True,
                )
            finally:
                with self._cond:
                    self._committed = max(self._committed, upto)
                    self._cond.notify_all()


class TaskQueue(AbstractTaskQueue):
    """Redis task queue: reliable (leased) delivery, atomic scripts, blocking
    waits.

    :param url: ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://...`` (TLS; redis-py's ``ssl_*`` query options such as
        ``ssl_ca_certs`` and ``ssl_cert_reqs`` apply) or
        ``unix://[[user]:password@]/path/to/socket[?db=N]``.  poolx's own
        query options: ``prefix`` (key prefix, default ``poolx``),
        ``serializer`` (``pickle`` or ``json``), ``retry_timeout``.
    :param name: The queue name (its keys share the hash tag ``{name}``).
    :param initial_result_timeout: WorQ's name for the lease of a taken task
        before its first heartbeat.  poolx tasks name their own lease
        (``2 * heartrate + 5`` seconds, the same as every heartbeat grants),
        so this only applies to records that carry none.
    :param redis_factory: Builds the client: a ``redis.Redis`` subclass (its
        ``from_url`` is used) or a callable taking the URL without poolx's
        options.  Pass ``redis.RedisCluster.from_url`` for Redis Cluster.
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
        clean, own = _split_url(url)
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
        self.serializer = _make_serializer(
            serializer if serializer is not None else own.get("serializer")
        )
        self.initial_result_timeout = max(float(initial_result_timeout), 1.0)
        self.retry_timeout = retry
        self.prefix = prefix
        self._key = f"{prefix}:{{{name}}}:"
        self._pools_key = f"{prefix}:{{pools}}:"
        self._ready_key = self._key + "ready"
        self._min_lease_ms = _lease_ms(self.initial_result_timeout)
        if redis_factory is None:
            self._client = default_redis_factory(clean)
        elif isinstance(redis_factory, type) and issubclass(redis_factory, redis.Redis):
            self._client = redis_factory.from_url(clean, retry=Retry(NoBackoff(), 0))
        else:
            self._client = redis_factory(clean)
        timeout = getattr(self._client, "connection_pool", None)
        timeout = getattr(timeout, "connection_kwargs", {}).get("socket_timeout")
        self._max_block = MAX_BLOCK if not timeout else max(0.05, min(MAX_BLOCK, timeout / 2))
        self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
        self._connected = False
        self._closed = threading.Event()
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
        # The fetcher protocol among threads blocked in get().
        self._cond = threading.Condition()
        self._idle = 0
        self._fetching = False
        self._handoff: deque[tuple[Delivery, float]] = deque()
        self._writer = _Writer(self._commit, f"poolx-redis-writer-{self.name}")

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

    def _run(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """Call Redis, retrying while it is unreachable (see module docs)."""
        deadline = None
        attempt = 0
        while True:
            try:
                result = call(*args)
            except AuthenticationError as err:
                raise RedisUnavailable(
                    f"Redis at {self.display_url} refused the credentials ({what}): {err}"
                ) from None
            except _RETRYABLE as err:
                if self._closed.is_set():
                    raise RedisUnavailable(f"queue on {self.display_url} is closed") from None
                if not self._connected:
                    raise RedisUnavailable(
                        f"cannot connect to Redis at {self.display_url} ({what}): {err}"
                    ) from None
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_timeout
                    log.warning(
                        "Redis at %s unreachable during %s (%s); retrying for up to %.0f s",
                        self.display_url, what, err, self.retry_timeout,
                    )
                if now >= deadline:
                    raise RedisUnavailable(
                        f"Redis at {self.display_url} unreachable for {self.retry_timeout:.0f} s "
                        f"({what} not done): {err}"
                    ) from None
                delay = min(0.05 * 2**attempt, 2.0, deadline - now)
                attempt += 1
                if self._closed.wait(delay):
                    raise RedisUnavailable(f"queue on {self.display_url} is closed") from None
                continue
            if attempt:
                log.warning("reconnected to Redis at %s (%s)", self.display_url, what)
            self._connected = True
            return result

    def _script(self, key: str, *args: Any) -> Any:
        try:
            return self._client.evalsha(self._sha, 1, key, *args)
        except NoScriptError:
            # A fresh (or restarted) server: EVAL also caches the script.
            return self._client.eval(SCRIPT, 1, key, *args)

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
        self._closed.set()
        with contextlib.suppress(Exception):
            self._client.close()

    # -- producer side ----------------------------------------------------------

    @staticmethod
    def _task_fields(result: Deferred) -> tuple[bytes, int, int]:
        task = result.task
        heartrate = getattr(task, "heartrate", 30)
        retries = getattr(task, "max_retries", 3)
        ignore = b"1" if getattr(task, "ignore_result", False) else b"0"
        return ignore, _lease_ms(heartrate * 2 + 5), 1 + retries

    def enqueue_task(self, result: Deferred, message: bytes) -> bool:
        self._here()
        ignore, lease, deliveries = self._task_fields(result)
        buffer = getattr(self._local, "buffer", None)
        if buffer is not None:
            if result.id in buffer:
                return False
            buffer[result.id] = (result.task.name, message, ignore, lease, deliveries)
            if len(buffer) >= BATCH_SIZE:
                self._flush()
            return True
        dups = self._call("enqueue", os.urandom(8), result.id, message, ignore, lease, deliveries)
        return not dups

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
            args: list[Any] = [os.urandom(8)]
            for task_id, (_name, message, ignore, lease, deliveries) in items[
                start : start + BATCH_SIZE
            ]:
                args += (task_id, message, ignore, lease, deliveries)
            dups += [_text(dup) for dup in self._call("enqueue", *args)]
        if dups:
            from poolx.task import DuplicateTask

            names = dict((task_id, fields[0]) for task_id, fields in items)
            more = f" ({len(dups) - 1} more duplicates in the batch)" if len(dups) > 1 else ""
            raise DuplicateTask(
                names[dups[0]], self.name, dups[0], f"cannot enqueue task with duplicate id{more}"
            )

    def defer_task(self, result: Deferred, message: bytes, args: list[str]) -> bool:
        self._flush()  # its arguments may be waiting in this thread's batch
        ignore, lease, deliveries = self._task_fields(result)
        made = self._call(
            "defer", os.urandom(8), result.id, message, ignore, lease, deliveries, len(args)
        )
        return bool(made)

    def undefer_task(self, task_id: str) -> None:
        self._call("undefer", task_id)

    def reserve_argument(self, argument_id: str, deferred_id: str) -> tuple[bool, Any]:
        self._sync()
        reply = self._call("reserve", argument_id, deferred_id)
        if not reply[0]:
            return (False, None)
        return (True, reply[1] if len(reply) > 1 else None)

    def set_argument(self, task_id: str, argument_id: str, message: Any) -> bool:
        return bool(self._call("setarg", task_id, argument_id, message))

    def size(self) -> int:
        return int(self._call("size"))

    def discard_pending(self) -> None:
        self._sync()
        self._call("purge")

    # -- consumer side ----------------------------------------------------------

    def get_arguments(self, task_id: str) -> dict[str, Any]:
        self._here()
        with self._lock:
            fetched = self._args.pop(task_id, None)
        if fetched is not None:
            return fetched
        reply = self._call("args", task_id)
        return {_text(reply[i]): reply[i + 1] for i in range(1, 1 + 2 * int(reply[0]), 2)}

    def _parse_fetch(self, reply: list[Any]) -> tuple[list[Delivery], int, int]:
        reclaimed, next_ms = int(reply[0]), int(reply[1])
        out: list[Delivery] = []
        i = 2
        while i < len(reply):
            ref, task_id, message = _text(reply[i]), _text(reply[i + 1]), reply[i + 2]
            attempt, allowed = int(reply[i + 3]), int(reply[i + 4])
            lease, nargs = int(float(reply[i + 5])), int(reply[i + 6])
            i += 7
            args = {_text(reply[i + 2 * k]): reply[i + 2 * k + 1] for k in range(nargs)}
            i += 2 * nargs
            failure = None
            if allowed and attempt > allowed:
                failure = (
                    f"WorkerLost: the task was delivered {attempt - 1} times and each time its "
                    f"consumer was lost before it finished (lease expired: process killed, "
                    f"machine lost or stalled); max_retries={allowed - 1} is used up"
                )
            with self._lock:
                self._held[task_id] = (ref, f"{self.consumer_id}#{attempt}", lease)
                if nargs:
                    self._args[task_id] = args
            out.append(Delivery(task_id, message, attempt, failure))
        return out, reclaimed, next_ms

    def _fetch(self, want: Callable[[], int], deadline: float | None) -> list[Delivery]:
        """Take up to ``want()`` tasks, blocking until ``deadline`` for one."""
        while True:
            reply = self._call(
                "fetch", self.consumer_id, max(1, want()), self._min_lease_ms, RECLAIM_LIMIT
            )
            deliveries, reclaimed, next_ms = self._parse_fetch(reply)
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
            block = self._max_block
            if deadline is not None:
                block = min(block, deadline - time.monotonic())
                if block <= 0:
                    return []
            if next_ms >= 0:
                block = min(block, next_ms / 1000 + 0.005)
            self._run("get", self._wait_ready, max(block, 0.01))

    def _wait_ready(self, block: float) -> None:
        """Block until the ready list is non-empty, taking nothing from it."""
        if self._blmove:
            try:
                self._client.blmove(self._ready_key, self._ready_key, block, "RIGHT", "RIGHT")
                return
            except ResponseError as err:
                if "unknown command" not in str(err).lower():
                    raise
                self._blmove = False  # Redis < 6.2: rotate instead (order may shift)
        self._client.brpoplpush(self._ready_key, self._ready_key, max(1, round(block)))

    def _fresh(self, item: Delivery, fetched: float) -> bool:
        """Is a task fetched a while ago still leased to us?  (Renews it.)"""
        if time.monotonic() - fetched < HANDOFF_FRESH:
            return True
        with self._lock:
            ref, owner, lease = self._held.get(item[0], ("t" + item[0], "", self._min_lease_ms))
        if self._call("renew", lease, ref, owner)[0]:
            return True
        log.warning("[%s:%s] was reclaimed before a thread took it; skipped", self.name, item[0])
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
        if timeout <= 0:
            raise ValueError(f"invalid task timeout: {timeout!r}")
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
        self._writer.add(("d", ref, owner))

    def requeue_task(self, task_id: str, message: bytes, ignore_result: bool = False) -> bool:
        with self._lock:
            ref, owner, _lease = self._held.pop(task_id, ("t" + task_id, "", 0))
            self._args.pop(task_id, None)
        self._sync()
        return bool(self._call("requeue", task_id, message, b"1" if ignore_result else b"0",
                               ref, owner))

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
        self._writer.add(("r", task_id, message, _lease_ms(timeout)))

    def _commit(self, items: list[tuple[Any, ...]]) -> None:
        """The writer's call: results and acknowledgements, one script call
        per :data:`BATCH_SIZE` of them."""
        for start in range(0, len(items), BATCH_SIZE):
            part = items[start : start + BATCH_SIZE]
            results = [item[1:] for item in part if item[0] == "r"]
            args: list[Any] = [len(results)]
            for fields in results:
                args += fields
            for item in part:
                if item[0] == "d":
                    args += item[1:]
            ready = self._call("commit", *args)
            if ready:
                log.debug("[%s] undefer %s", self.name, ", ".join(_text(dep) for dep in ready))

    def discard_result(self, task_id: str, task_expired_token: bytes) -> None:
        with self._lock:
            ref, _owner, _lease = self._held.pop(task_id, ("", "", 0))
            self._args.pop(task_id, None)
        self._sync()
        self._call("discard", task_id, task_expired_token, ref)

    def _pop(self, nonce: bytes, register: bool, ids: list[str]) -> list[tuple[bytes, Any]]:
        reply = self._call("pop", nonce, POPPED_KEEP_MS, b"1" if register else b"0", *ids)
        return [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]

    def _wait_result(self, task_id: str, block: float) -> None:
        self._client.blpop([self._key + "w:" + task_id], max(block, 0.01))

    def pop_result(self, task_id: str, timeout: float | None) -> Any:
        self._sync()
        deadline = None if timeout is None else time.monotonic() + timeout
        nonce = os.urandom(8)
        while True:
            [(code, message)] = self._pop(nonce, timeout != 0, [task_id])
            if code == b"r":
                return message
            if code == b"x":
                return TASK_EXPIRED
            block = self._max_block
            if deadline is not None:
                block = min(block, deadline - time.monotonic())
                if block <= 0:
                    return None
            self._run("pop_result", self._wait_result, task_id, block)

    def pop_results(self, task_ids: list[str], timeout: float | None) -> dict[str, Any]:
        """Results in order: each call reads every ready result up to the first
        task still running, then blocks until *that* one is done, so a
        stream of results costs one round trip per burst, not per task."""
        self._sync()
        deadline = None if timeout is None else time.monotonic() + timeout
        nonce = os.urandom(8)
        pending = list(dict.fromkeys(task_ids))
        found: dict[str, Any] = {}
        start = 0
        while start < len(pending):
            chunk = pending[start : start + POP_CHUNK]
            replies = self._pop(nonce, timeout != 0, chunk)
            for task_id, (code, message) in zip(chunk, replies, strict=False):
                if code == b"w":
                    break
                found[task_id] = message if code == b"r" else TASK_EXPIRED
                start += 1
            else:
                continue  # the whole chunk was ready: go on at once
            block = self._max_block
            if deadline is not None:
                block = min(block, deadline - time.monotonic())
                if block <= 0:
                    break
            self._run("pop_results", self._wait_result, pending[start], block)
        return found

    # -- the registry of live worker pools --------------------------------------

    def register_pool(self, pool_id: str, info: str, ttl: float) -> None:
        if not ttl > 0:
            raise ValueError(f"invalid pool ttl: {ttl!r}")
        self._run("register_pool", self._script, self._pools_key, "preg", pool_id, info,
                  _lease_ms(ttl))

    def unregister_pool(self, pool_id: str) -> None:
        self._run("unregister_pool", self._script, self._pools_key, "punreg", pool_id)

    def live_pools(self) -> list[str]:
        reply = self._run("live_pools", self._script, self._pools_key, "plive")
        return [_text(info) for info in reply if info is not None]

