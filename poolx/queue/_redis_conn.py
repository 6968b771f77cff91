"""Connections of the ``redis://`` backend: URLs, clients, the script, and
what to do when Redis is unreachable.

Owned here: URL parsing (:func:`split_url`: poolx's own query options out,
the rest for redis-py), the default client (:func:`default_redis_factory`),
:class:`RedisUnavailable`, the queue's Lua script (``redis.lua``, shipped as
package data, :data:`LUA_SCRIPT`), and :class:`Connection` — one client, the
script registered on it with redis-py's ``register_script`` (``EVALSHA``,
and ``SCRIPT LOAD`` again after a server restart), and the retry policy every
queue operation goes through, run by redis-py's own ``Retry`` with
``ExponentialBackoff``:

* errors that mean "not reachable" (refused, reset, timed out, loading,
  read-only replica) are retried with backoff (50 ms doubling to 2 s) for
  up to ``retry_timeout`` seconds — but only once the connection has worked
  at least once, so a wrong host or a server that is not running fails at
  once;
* refused credentials fail at once;
* every message names the URL with its password replaced by ``***``.

The ``Retry`` runs around each *queue operation*, not inside the client:
redis-py applies a client's ``Retry`` to every connect attempt *and* again
around every command (a down server costs retries squared), counts attempts
instead of time, and cannot tell a server that never answered from one that
went away.  So the client's own retries are off and this module's ``Retry``
decides, per operation, with the deadline and the "ever connected" fact.

Retrying is safe because every script call of the queue is idempotent (see
``redis.lua``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

try:
    import redis
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.exceptions import (
        AskError,
        AuthenticationError,
        ClusterDownError,
        MovedError,
        NoScriptError,
        ReadOnlyError,
        RedisClusterException,
        ResponseError,
    )
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
    from redis.retry import Retry
    from redis.utils import HIREDIS_AVAILABLE
except ImportError as err:  # pragma: no cover - exercised without redis-py only
    raise ImportError(
        "poolx's redis:// backend needs the redis package: pip install 'poolx[redis]'"
    ) from err

from poolx.queue.urls import redact_url
from poolx.serialization import JSONSerializer, PickleSerializer, Serializer

__all__ = [
    "Connection",
    "RedisUnavailable",
    "SCHEMES",
    "MAX_BLOCK",
    "default_redis_factory",
    "cluster_client",
    "CLUSTER_SCHEME",
    "make_client",
    "split_url",
    "ResponseError",
    "make_serializer",
    "LUA_SCRIPT",
]

log = logging.getLogger("poolx.queue.redis")

T = TypeVar("T")

CLUSTER_SCHEME = "redis+cluster"
"""The scheme of a Redis Cluster: ``redis+cluster://host:port,host:port/``."""
SCHEMES = ("redis", "rediss", "unix", CLUSTER_SCHEME)
"""URL schemes the backend serves (TLS is ``rediss``)."""
MAX_BLOCK = 5.0
"""Longest single blocking call (seconds): a wait re-checks leases and
records at least this often, so nothing waits forever on a vanished key."""

SOCKET_TIMEOUT = MAX_BLOCK * 6
"""Seconds a command's reply may take (well above the longest blocking call)."""
CONNECT_TIMEOUT = 5.0
"""Seconds connecting may take, TLS handshake included."""

LUA_SCRIPT = files(__package__).joinpath("redis.lua").read_text(encoding="utf-8")
"""The server side of every queue operation (``poolx/queue/redis.lua``)."""

KEEP_CONNECTIONS = 8
"""Connections a :class:`Connection` keeps checked out of its client's pool
at most, for its own next commands (see :meth:`Connection.command`)."""

RETRY_FIRST_DELAY = 0.05
"""Seconds before the first retry; each further one waits twice as long..."""
RETRY_MAX_DELAY = 2.0
"""...but never longer than this."""

# A cluster failing over answers CLUSTERDOWN, and a client that lost every
# node it knew raises RedisClusterException until one answers again.
_RETRYABLE = (_RedisConnectionError, _RedisTimeoutError, ReadOnlyError, ClusterDownError,
              RedisClusterException)
_OWN_OPTIONS = frozenset(["prefix", "serializer", "retry_timeout"])
_NO_RETRY = Retry(NoBackoff(), 0)


class RedisUnavailable(ConnectionError):
    """Redis could not be reached (or refused the credentials).

    The message names the URL with its password replaced by ``***``.
    """

    __module__ = "poolx.queue.redis"  # its public home


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL for redis-py, and poolx's own query options taken out of it."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise ValueError(f"malformed Redis URL {shown!r}: {err}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"not a Redis URL: {shown!r} (schemes: {', '.join(SCHEMES)})")
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in query if key in _OWN_OPTIONS}
    rest = [(key, value) for key, value in query if key not in _OWN_OPTIONS]
    unknown = sorted({key for key, _ in rest} - _client_options(scheme))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} in Redis URL {shown!r}")
    # Not urlunsplit: it drops the "//" of "unix:///path" (empty host).
    clean = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if rest:
        clean += "?" + urlencode(rest)
    try:
        if scheme == CLUSTER_SCHEME:
            _cluster_options(clean)
        else:
            redis.connection.parse_url(clean)
        if scheme != "unix" and scheme != CLUSTER_SCHEME:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        db = parts.path.strip("/")
        if scheme != "unix" and db and not db.isdigit():
            raise ValueError(f"database must be a number, not {db!r}")
        if scheme == CLUSTER_SCHEME and db not in ("", "0"):
            raise ValueError(f"a cluster has only database 0, not {db}")
    except ValueError as err:
        raise ValueError(f"invalid Redis URL {shown!r}: {err}") from None
    return clean, own


def _cluster_options(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The nodes (host, port) of a ``redis+cluster://`` URL and redis-py's
    connection options from the rest of it (credentials, query)."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for address in hosts.split(","):
        one = urlsplit(f"redis://{address}")
        if not one.hostname:
            raise ValueError(f"no host in {address!r}")
        nodes.append((one.hostname, one.port or 6379))  # .port raises for a bad port
    auth = f"{userinfo}@" if userinfo else ""
    query = f"?{parts.query}" if parts.query else ""
    options = redis.connection.parse_url(f"redis://{auth}{nodes[0][0]}:{nodes[0][1]}{query}")
    for key in ("host", "port", "db", "connection_class"):
        options.pop(key, None)
    return nodes, options


def _client_options(scheme: str) -> set[str]:
    """The query options redis-py's ``from_url`` accepts for ``scheme``:
    the keyword arguments of its connection pool and connection classes
    (anything else would fail at the first connection, as a TypeError)."""
    import inspect

    connection = {"rediss": redis.connection.SSLConnection,
                  "unix": redis.connection.UnixDomainSocketConnection}.get(scheme, redis.connection.Connection)
    names: set[str] = set()
    for cls in (redis.connection.ConnectionPool, *connection.__mro__):
        init = cls.__dict__.get("__init__")
        if init is not None:
            names |= {name for name, param in inspect.signature(init).parameters.items()
                      if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)}
    return names - {"self"}


def make_serializer(choice: Serializer | str | None) -> Serializer | None:
    if choice is None or isinstance(choice, Serializer):
        return choice
    named = {"pickle": PickleSerializer, "json": JSONSerializer}
    try:
        return named[choice.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown serializer {choice!r} (pickle or json)") from None


class _SSLConnection(redis.connection.SSLConnection):
    """redis-py's TLS connection with the handshake bounded by the *connect*
    timeout.  redis-py wraps the socket after setting the socket timeout, so
    a handshake with a server that never answers (a plain port, a firewall
    that swallows packets) would wait the whole socket timeout — which is
    long on purpose, to outlast blocking commands."""

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        sock.settimeout(self.socket_connect_timeout)
        wrapped = super()._wrap_socket_with_ssl(sock)
        wrapped.settimeout(self.socket_timeout)
        return wrapped


def cluster_client(url: str, cls: type[RedisCluster] = RedisCluster, **options: Any) -> RedisCluster:
    """A ``RedisCluster`` client for a ``redis+cluster://`` URL (any of its
    nodes is enough to find the others), its own retries off."""
    nodes, url_options = _cluster_options(url)
    try:  # RedisCluster asks the nodes for the slot map at once
        return cls(startup_nodes=[ClusterNode(host, port) for host, port in nodes],
                   retry=_NO_RETRY, **{**options, **url_options})
    except RedisClusterException as err:
        raise RedisUnavailable(f"cannot connect to Redis at {redact_url(url)}: {err}") from None


def default_redis_factory(url: str) -> Any:
    """The client poolx uses: no retries inside the client (:class:`Connection`
    retries whole, idempotent queue operations), a socket timeout well above
    the longest blocking call, connecting (TLS handshake included) bounded by
    the shorter connect timeout, bytes responses."""
    options: dict[str, Any] = {}
    if not url.lower().startswith("unix:"):
        options["socket_keepalive"] = True  # TCP only
    if url.lower().startswith("rediss:"):
        options["connection_class"] = _SSLConnection
    options.update(socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
                   health_check_interval=30)
    if url.lower().startswith(f"{CLUSTER_SCHEME}:"):
        return cluster_client(url, **options)
    return redis.Redis.from_url(url, retry=_NO_RETRY, **options)


def make_client(url: str, redis_factory: Callable[..., Any] | None = None) -> Any:
    """The client for ``url`` (poolx's options already taken out).

    :param redis_factory: None for :func:`default_redis_factory`; a
        ``redis.Redis`` subclass (built with its ``from_url``, redis-py's own
        retries off), or for a cluster URL a ``RedisCluster`` subclass; or
        any callable taking the URL.
    """
    if redis_factory is None:
        return default_redis_factory(url)
    if isinstance(redis_factory, type) and issubclass(redis_factory, RedisCluster):
        return cluster_client(url, redis_factory)
    if isinstance(redis_factory, type) and issubclass(redis_factory, redis.Redis):
        return redis_factory.from_url(url, retry=_NO_RETRY)
    return redis_factory(url)


class Connection:
    """A redis-py client, the queue script registered on it, and poolx's
    retry policy.

    :param url: The URL as given (shown redacted in messages).
    :param client: The redis-py client.
    :param retry_timeout: Seconds to keep retrying an unreachable server.
    """

    def __init__(self, url: str, client: Any, retry_timeout: float) -> None:
        self.display_url = redact_url(url)
        self.client = client
        self.retry_timeout = retry_timeout
        self.connected = False
        self.closed = threading.Event()
        self.reconnects = 0
        """Operations that succeeded after Redis had been unreachable (each one
        logs "reconnected"); read by the queue's ``reconnects``."""
        self._reconnects_lock = threading.Lock()
        self._script = client.register_script(LUA_SCRIPT)
        self._retry = Retry(
            ExponentialBackoff(cap=RETRY_MAX_DELAY, base=RETRY_FIRST_DELAY / 2), -1, _RETRYABLE
        )
        # A client's connection pool, or a cluster client's node manager,
        # holds the options of its connections.
        holder = getattr(client, "connection_pool", None) or getattr(client, "nodes_manager", None)
        timeout = getattr(holder, "connection_kwargs", {}).get("socket_timeout")
        self.max_block = MAX_BLOCK if not timeout else max(0.05, min(MAX_BLOCK, timeout / 2))
        """Longest blocking call: below the socket timeout."""
        # The direct lane (see command()): a plain client's pool, and the
        # connections this object keeps checked out of it between commands.
        pool = getattr(client, "connection_pool", None)
        direct = (pool is not None and type(client).execute_command is redis.Redis.execute_command
                  and getattr(client, "connection", None) is None)
        self._pool = pool if direct else None
        self._kept: list[Any] = []
        self._kept_pid = os.getpid()
        # What redis-py's connections would send, packed without its
        # per-argument checks: with hiredis and no packer of the user's,
        # redis-py packs with hiredis.pack_command too.
        self._pack: Callable[[tuple[Any, ...]], bytes] | None = None
        if self._pool is not None and HIREDIS_AVAILABLE \
                and "command_packer" not in getattr(self._pool, "connection_kwargs", {"command_packer": 0}):
            import hiredis

            self._pack = hiredis.pack_command

    def run(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, retried while Redis is unreachable (see the module
        docstring); ``what`` names the operation in logs and errors."""
        try:
            result = call(*args)
        except _RETRYABLE as err:
            result = self._run_again(what, call, args, err)
        self.connected = True
        return result

    def _run_again(self, what: str, call: Callable[..., T], args: tuple[Any, ...],
                   first: Exception) -> T:
        """:meth:`run` once the first attempt failed with ``first``: the
        ``Retry`` takes it from there, as if its own first attempt had."""
        outage, failed = _Outage(self, what), [first]

        def attempt() -> T:
            if failed:
                raise failed.pop()
            return call(*args)

        result = self._retry.call_with_retry(attempt, outage.failed)
        if outage.failures:
            with self._reconnects_lock:
                self.reconnects += 1
            log.warning("reconnected to Redis at %s (%s)", self.display_url, what)
        return result

    def script(self, key: str, *args: Any) -> Any:
        """One call of the queue script with ``KEYS[1] = key`` (no retry)."""
        if self._pool is None or "execute_command" in self.client.__dict__:
            return self._script(keys=[key], args=args)  # a cluster, or commands watched
        script = self._script
        try:
            return self.command("EVALSHA", script.sha, 1, key, *args)
        except NoScriptError:  # a restarted server: load it again (as redis-py's Script does)
            script.sha = self.client.script_load(script.script)
            return self.command("EVALSHA", script.sha, 1, key, *args)

    def command(self, *command: Any) -> Any:
        """Send ``command`` and return Redis's reply, unparsed (no retry).

        The direct lane of the queue's own commands: a plain ``redis.Redis``
        client's ``execute_command`` checks a connection out of its pool,
        polls it, records metrics and releases it again for every command,
        which costs as much CPU as the round trip itself.  Here a connection
        that answered stays checked out, on a list of this object's (at most
        :data:`KEEP_CONNECTIONS`, handed back at :meth:`close`), for the next
        command of any thread: a connection is on the list only while no
        thread uses it, and only after its last reply was read whole.  A
        kept connection the server closed meanwhile (a restart, an idle
        timeout) fails at once; the command is then sent once more on a
        fresh one, without a retry's delay or log (every command of the
        queue's script is idempotent under retry).  A cluster client, or a
        client whose ``execute_command`` is replaced or overridden, gets
        every command through ``execute_command`` instead.
        """
        pool = self._pool
        if pool is None:
            return self.client.execute_command(*command)
        kept = self._kept
        if self._kept_pid != os.getpid():  # a forked child: the parent's sockets are not ours
            self._kept, self._kept_pid = [], os.getpid()
            kept = self._kept
        try:
            conn = kept.pop()
        except IndexError:
            return self._command_on(pool, _checkout(pool), command)
        try:
            return self._command_on(pool, conn, command)
        except _RedisConnectionError:
            return self._command_on(pool, _checkout(pool), command)

    def _command_on(self, pool: Any, conn: Any, command: tuple[Any, ...]) -> Any:
        try:
            if self._pack is None:
                conn.send_command(*command)
            else:
                conn.send_packed_command([self._pack(command)])
            reply = conn.read_response()
        except ResponseError:
            self._keep(pool, conn)  # the reply was read whole: the connection is fine
            raise
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        self._keep(pool, conn)
        return reply

    def _keep(self, pool: Any, conn: Any) -> None:
        kept = self._kept
        if len(kept) < KEEP_CONNECTIONS and not self.closed.is_set():
            kept.append(conn)
        else:
            pool.release(conn)

    def block(self, seconds: float, *command: Any) -> Any:
        """Send a blocking ``command`` (its timeout, ``seconds``, appended)
        and wait for its reply no longer than ``seconds`` by this process's
        clock: Redis ends a blocking call only at its next tick after the
        timeout (up to 100 ms late with the default ``hz 10``), which a
        waiter with a timeout must not add.  If the reply is late, the
        connection is dropped and None returned; use it only for commands
        that are harmless when they complete unseen (waiting without taking,
        wake-up tokens).  On a cluster, the command goes to the node serving
        its key (``command[1]``); if the slot has moved meanwhile, the
        cluster client follows the redirection (with Redis's own timing)."""
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            if not isinstance(self.client, RedisCluster):
                return self.client.execute_command(*command, seconds)
            node = self.client.get_node_from_key(command[1])
            pool = self.client.get_redis_connection(node).connection_pool
            try:
                return self._block_on(pool, seconds, command)
            except (MovedError, AskError):
                return self.client.execute_command(*command, seconds)
        return self._block_on(pool, seconds, command)

    @staticmethod
    def _block_on(pool: Any, seconds: float, command: tuple[Any, ...]) -> Any:
        conn = _checkout(pool)
        try:
            conn.send_command(*command, seconds)
            if conn.can_read(timeout=seconds):
                return conn.read_response()
            conn.disconnect()  # the reply is late: nobody will read it
            return None
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def close(self) -> None:
        """Stop retrying and close the client's connections."""
        self.closed.set()
        pool, kept = self._pool, self._kept
        self._kept = []
        if pool is not None and self._kept_pid == os.getpid():
            for conn in kept:
                pool.release(conn)
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            log.debug("closing the Redis client failed", exc_info=True)


def _checkout(pool: Any) -> Any:
    """A connection from redis-py's ``pool``."""
    try:
        return pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants a command name
        return pool.get_connection("EVALSHA")


class _Outage:
    """One operation's failures: the ``Retry``'s failure handler, which
    raises :class:`RedisUnavailable` to stop retrying."""

    __slots__ = ("conn", "what", "failures", "since")

    def __init__(self, conn: Connection, what: str) -> None:
        self.conn = conn
        self.what = what
        self.failures = 0
        self.since: float | None = None  # the first failure (retry_timeout may change meanwhile)

    def failed(self, err: Exception) -> None:
        conn, what = self.conn, self.what
        if isinstance(err, AuthenticationError):
            raise RedisUnavailable(
                f"Redis at {conn.display_url} refused the credentials ({what}): {err}"
            ) from None
        if conn.closed.is_set():
            raise RedisUnavailable(f"queue on {conn.display_url} is closed") from None
        if not conn.connected:
            raise RedisUnavailable(
                f"cannot connect to Redis at {conn.display_url} ({what}): {err}"
            ) from None
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.warning(
                "Redis at %s unreachable during %s (%s); retrying for up to %.0f s",
                conn.display_url, what, err, conn.retry_timeout,
            )
        elif now >= self.since + conn.retry_timeout:
            raise RedisUnavailable(
                f"Redis at {conn.display_url} unreachable for {conn.retry_timeout:.0f} s "
                f"({what} not done): {err}"
            ) from None
        self.failures += 1
