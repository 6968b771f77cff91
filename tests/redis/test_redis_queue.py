"""What only the Redis backend promises: URLs (TLS, unix sockets), one hash
slot per queue, batching, blocking waits, the result writer, the pool
registry, and few round trips."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from poolx import Task, get_broker, get_queue
from poolx.const import TASK_EXPIRED
from poolx.core import batch
from poolx.pool.thread import WorkerPool
from poolx.queue.redis import POPPED_KEEP_MS, TaskQueue
from poolx.serialization import JSONSerializer
from poolx.task import DuplicateTask, TaskExpired, queue_broker, wait_all
from tests.conftest import wait_until
from tests.redis.tasks import ts
from tests.taskqueue.conftest import isolated_url
from tests.taskqueue.helpers import WAIT, thread_worker, value_of

ROOT = Path(__file__).resolve().parents[2]


class Counting:
    """Counts a queue's script commands (one round trip each)."""

    def __init__(self, queue: TaskQueue) -> None:
        self.calls: list[str] = []
        real = queue._call

        def call(what, *args):
            self.calls.append(what)
            return real(what, *args)

        queue._call = call

    def count(self, what: str) -> int:
        return self.calls.count(what)


# -- URLs -------------------------------------------------------------------------


def test_url_options_prefix_serializer_and_validation(redis_server):
    base = redis_server.url
    queue = get_broker(f"{base}?prefix=app1&serializer=json&retry_timeout=5", "jobs").taskqueue
    assert queue._key == "app1:{jobs}:" and queue.retry_timeout == 5
    assert isinstance(queue.serializer, JSONSerializer)
    assert isinstance(get_broker(base).serializer.__class__, type)
    for bad, message in [
        (f"{base}?prefix=a{{b", "invalid key prefix"),
        (f"{base}?serializer=yaml", "unknown serializer"),
        ("redis://127.0.0.1:99999/0", "invalid Redis URL"),
        ("redis://127.0.0.1:6379/x", "database must be a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            get_broker(bad)
    with pytest.raises(ValueError, match="hash tag would be empty"):
        get_broker(base, "")
    with pytest.raises(ValueError, match="not a Redis URL"):
        TaskQueue("memory://x")


def test_tls_url_builds_an_ssl_connection_and_hides_the_password():
    queue = get_broker(
        "rediss://user:pw-secret@cache.example:6380/2?ssl_cert_reqs=none&prefix=p"
    ).taskqueue
    pool = queue.client.connection_pool
    assert issubclass(pool.connection_class, redis.SSLConnection)
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 2)
    assert kwargs["ssl_cert_reqs"] == "none" and kwargs["password"] == "pw-secret"
    assert "prefix" not in kwargs and queue.prefix == "p"
    assert repr(queue) == "<poolx.queue.redis.TaskQueue rediss://user:***@cache.example:6380/2" \
        "?ssl_cert_reqs=none&prefix=p [default]>"


def test_tls_end_to_end(private_redis, tmp_path):
    """A real TLS server (self-signed certificate) when openssl is available."""
    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = private_redis()
    from tests.redis_server import RedisServer, free_port

    tls = RedisServer(server.binary)
    tls.port = free_port()
    tls_port = free_port()
    base_command = tls.command

    def command():
        return base_command() + ["--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                                 "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                                 "--tls-auth-clients", "no"]

    tls.command = command  # type: ignore[method-assign]
    try:
        tls.start()
        url = f"rediss://localhost:{tls_port}/0?ssl_ca_certs={cert}"
        broker = get_broker(url)
        broker.expose(ts)
        with thread_worker(broker):
            assert get_queue(url).rt.square(12).wait(WAIT)
        assert issubclass(broker.taskqueue.client.connection_pool.connection_class,
                          redis.SSLConnection)
    finally:
        tls.cleanup()


def test_rediss_to_a_silent_port_fails_within_the_connect_timeout():
    # A TLS handshake with a server that never answers (a plain TCP port, a
    # firewall) is bounded by the connect timeout (5 s), not by the 30 s
    # socket timeout of blocking commands.
    import socket
    import time

    from poolx.queue.redis import RedisUnavailable

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # accepted by the kernel, never answered
        port = listener.getsockname()[1]
        broker = get_broker(f"rediss://127.0.0.1:{port}/0")
        start = time.monotonic()
        with pytest.raises(RedisUnavailable, match=r"^cannot connect to Redis at rediss://127"):
            broker.taskqueue.ping()
        elapsed = time.monotonic() - start
    assert elapsed < 15, f"took {elapsed:.1f} s"
    client = broker.taskqueue.client
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 30  # commands keep theirs


def test_unix_socket_url(redis_server):
    if not getattr(redis_server, "unix_url", None):
        pytest.skip("the external test server has no known unix socket")
    url = isolated_url(redis_server.unix_url)
    broker = get_broker(url)
    broker.expose(ts)
    assert broker.taskqueue.ping()
    assert isinstance(broker.taskqueue.client.connection_pool.connection_class(),
                      redis.UnixDomainSocketConnection)
    with thread_worker(broker):
        res = get_queue(url).rt.square(11)
        assert res.wait(WAIT) and res.value == 121


def test_missing_redis_py_names_the_extra_to_install():
    code = ("import sys; sys.modules['redis'] = None\n"
            "try:\n    import poolx.queue.redis\n"
            "except ImportError as err:\n    print(err)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert "pip install 'poolx[redis]'" in out.stdout, out.stderr


# -- keys -------------------------------------------------------------------------


def test_every_key_of_a_queue_is_in_one_cluster_slot(url):
    broker = get_broker(url, "jobs")
    queue = broker.taskqueue

    def scan():
        return set(queue.client.scan_iter(match=f"{queue.prefix}:*"))

    q = broker.queue()
    first, second = q.rt.square(2), q.rt.square(3)
    q.rt.total([first, second])
    Task(q.rt.square, ignore_result=True)(4)
    third = q.rt.square(5)
    keys = scan()  # records, the ready list, the deferred set
    taken = [queue.get(WAIT) for _ in range(4)]
    queue.register_pool("pool-1", "{}", 60)
    assert broker.cancel(third.id) is True
    keys |= scan()  # leases, what a fetch took, a detached record, the pool registry,
    # the cancel's marker, notice and answer
    assert queue._pop(b"nonce", True, [first.id]) == [(b"w", b"")]  # a waiter
    for task_id, _ in taken[:2]:
        queue.set_result(task_id, b"1", WAIT)
    keys |= scan()  # wake-up tokens, the mailbox
    queue_keys = {k for k in keys if b"{jobs}" in k}
    kinds = {k.decode().split(":")[2] for k in queue_keys}
    assert kinds == {"ready", "deferred", "leases", "t", "f", "seq", "w", "mb", "fetched", "cx",
                     "cn", "cancelled"}, kinds
    assert len({key_slot(k) for k in queue_keys}) == 1
    assert keys - queue_keys == {
        f"{queue.prefix}:{{pools}}:expiry".encode(), f"{queue.prefix}:{{pools}}:info".encode()
    }


# -- producer ---------------------------------------------------------------------


def test_batch_enqueue_sends_hundreds_per_round_trip(url):
    broker = get_broker(url)
    counter = Counting(broker.taskqueue)
    q = broker.queue()
    with batch(q):
        results = [q.rt.square(i) for i in range(1200)]
        assert counter.count("enqueue") == 2  # two full buffers of 500 so far
    assert counter.count("enqueue") == 3
    assert len(q) == 1200 and results[0].status == "enqueued"


def test_batch_reports_duplicates_at_the_flush_and_keeps_the_rest(url):
    q = get_queue(url)
    Task(q.rt.square, id="taken")(0)
    with pytest.raises(DuplicateTask, match=r"\[default:taken\] cannot enqueue task with duplicate"):
        with batch(q):
            Task(q.rt.square, id="a")(1)
            Task(q.rt.square, id="taken")(2)
            Task(q.rt.square, id="b")(3)
    assert len(q) == 3
    with batch(q):
        with pytest.raises(DuplicateTask):
            for _ in range(2):
                Task(q.rt.square, id="same")(1)  # within one batch: at once


def test_batch_flushes_before_a_task_with_deferred_arguments(url):
    broker = get_broker(url)
    broker.expose(ts)
    q = broker.queue()
    with batch(q):
        parts = [q.rt.square(i) for i in range(4)]
        total = q.rt.total(parts)
    with thread_worker(broker, workers=2):
        assert total.wait(WAIT) and total.value == 14


# -- consumer ---------------------------------------------------------------------


def test_idle_threads_share_one_fetch(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    counter = Counting(queue)
    started = threading.Barrier(5)
    got = []

    def take():
        started.wait(WAIT)
        got.append(queue.get(WAIT))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait(WAIT)
    wait_until(lambda: queue._idle == 4 and queue._fetching)
    before = counter.count("fetch")
    with batch(broker):
        for i in range(4):
            broker.queue().rt.square(i)
    for thread in threads:
        thread.join(WAIT)
    assert sorted(item[1] is not None for item in got) == [True] * 4
    assert counter.count("fetch") - before <= 2  # one wake-up, one fetch for all
    assert len({item[0] for item in got}) == 4


def test_get_many_takes_several_in_one_call(url):
    broker = get_broker(url)
    counter = Counting(broker.taskqueue)
    with batch(broker):
        for i in range(5):
            broker.queue().rt.square(i)
    tasks = broker.next_tasks(3, timeout=WAIT)
    assert [t.args for t in tasks] == [(0,), (1,), (2,)]
    assert counter.count("fetch") == 1
    assert broker.next_tasks(10, timeout=0) and broker.next_tasks(10, timeout=0) == []


def test_get_blocks_on_the_server_until_a_task_arrives(url):
    queue = get_broker(url).taskqueue
    counter = Counting(queue)
    got = []
    taker = threading.Thread(target=lambda: got.append(queue.get(WAIT)))
    taker.start()
    wait_until(lambda: queue._fetching)
    threading.Timer(0.3, get_queue(url).rt.square, (1,)).start()
    taker.join(WAIT)
    assert got[0] is not None
    assert counter.count("fetch") <= 3  # no polling: blocked in BLMOVE meanwhile


def test_close_gives_back_tasks_no_thread_took(url):
    queue = get_broker(url).taskqueue
    q = get_queue(url)
    with batch(q):
        for i in range(3):
            q.rt.square(i)
    first = queue._fetch(lambda: 3, None)
    queue._handoff.extend((item, 0.0) for item in first[1:])
    queue.close()
    other = get_broker(url).taskqueue
    again = other.get_many(10, 0)
    assert {item[0] for item in first[1:]} <= {item[0] for item in again}
    assert all(item.attempt == 1 for item in again)


# -- results ----------------------------------------------------------------------


def test_store_result_returns_at_once_and_the_queue_reads_its_own_writes(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    res = get_queue(url).rt.square(3)
    task = broker.next_task(WAIT)
    broker.set_result(task, 9)  # buffered for the writer thread
    assert queue.get_status(res.id) == "completed"  # waits for the commit
    assert broker.pop_result(res) == 9


def test_results_stored_just_before_exit_are_committed(url):
    q = get_queue(url)
    res = q.rt.square(8)
    code = ("import sys\nfrom poolx import get_broker\n"
            "broker = get_broker(sys.argv[1])\n"
            "broker.set_result(broker.next_task(10), 64)\n")  # and exit at once
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-c", code, url], check=True, timeout=60, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": path})
    assert res.wait(0) and res.value == 64


def test_wait_all_reads_many_results_per_round_trip(url):
    broker = get_broker(url)
    broker.expose(ts)
    q = get_broker(url).queue()
    counter = Counting(queue_broker(q).taskqueue)
    with batch(q):
        results = [q.rt.square(i) for i in range(300)]
    pool = WorkerPool(broker, workers=2)
    pool.start(timeout=0.1)
    try:
        assert wait_all(results[:150], WAIT)  # while the workers run
    finally:
        pool.stop()
    assert counter.count("pop") < 150
    while (task := broker.next_task(0)) is not None:
        broker.invoke(task)
    broker.taskqueue.flush()
    before = counter.count("pop")
    assert wait_all(results, WAIT)  # all of them are ready: one call
    assert counter.count("pop") - before == 1
    assert [r.value for r in results] == [i * i for i in range(300)]


def test_every_blocked_waiter_is_woken(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    res = get_queue(url).rt.square(5)
    queue.get(WAIT)
    got = []
    ready = threading.Barrier(4)

    def wait():
        ready.wait(WAIT)
        got.append(get_broker(url).taskqueue.pop_result(res.id, WAIT))

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    ready.wait(WAIT)
    wait_until(lambda: int(queue.client.hget(queue._key + "t:" + res.id, "wt") or 0) == 3)
    queue.set_result(res.id, b"v", WAIT)
    for waiter in waiters:
        waiter.join(WAIT)
    assert sorted(got, key=repr) == sorted([b"v", TASK_EXPIRED, TASK_EXPIRED], key=repr)


def test_unread_results_expire_after_result_timeout(url):
    broker = get_broker(url)
    res = Task(get_queue(url).rt.square, result_timeout=0.3)(2)
    broker.set_result(broker.next_task(WAIT), 4)
    assert broker.taskqueue.get_status(res.id) == "completed"  # (res.status would read it)
    wait_until(lambda: broker.taskqueue.get_status(res.id) is None, timeout=WAIT)
    assert res.wait(0)
    with pytest.raises(TaskExpired):
        value_of(res)


def test_a_result_read_by_a_retried_call_is_not_lost(url):
    """A pop whose reply was lost (Redis died after the write) is retried with
    the same nonce and gets the result again; anyone else sees it as read."""
    broker = get_broker(url)
    queue = broker.taskqueue
    res = get_queue(url).rt.square(2)
    queue.set_result(queue.get(WAIT)[0], b"four", WAIT)

    def pop(nonce):  # one script call, as the retry policy repeats it
        return queue._call("pop", nonce, POPPED_KEEP_MS, b"0", 0, res.id)

    assert pop(b"nonce-1") == [b"r", b"four"]
    assert pop(b"nonce-1") == [b"r", b"four"]  # the retry
    assert pop(b"nonce-2") == [b"x", b""]
    assert queue.get_status(res.id) is None


def test_tasks_taken_by_a_retried_fetch_are_not_left_to_their_leases(url):
    """A fetch whose reply was lost (Redis restarted after the write) is
    retried with the same nonce and gets the same tasks again, still leased
    to the consumer — not new ones, and the first ones not left waiting a
    whole lease (65 s by default) to be delivered again."""
    broker = get_broker(url)
    queue = broker.taskqueue
    q = get_queue(url)
    with batch(q):
        first = [q.rt.square(i) for i in range(3)]
    third = q.rt.square(3)
    consumer = queue.consumer_id

    def fetch(nonce, count):  # one script call, as the retry policy repeats it
        reply = queue._call("fetch", consumer, count, 60_000, 100, 1000, nonce, 30_000)
        return [task_id for task_id, _ in queue._parse_fetch(reply)[0]]

    taken = fetch(b"nonce-1", 3)
    assert sorted(taken) == sorted(d.id for d in first)
    assert fetch(b"nonce-1", 3) == taken  # the retry: the same tasks
    assert fetch(b"nonce-2", 3) == [third.id]  # a new call: what is left
    assert fetch(b"nonce-3", 3) == []
    assert queue.get_status(first[0].id) == "processing"


# -- the pool registry ------------------------------------------------------------


def test_pool_registry_spans_queue_names_and_expires(url):
    a = get_broker(url, "alpha").taskqueue
    b = get_broker(url, "beta").taskqueue
    a.register_pool("p1", json.dumps({"queue": "alpha"}), 60)
    b.register_pool("p2", json.dumps({"queue": "beta"}), 0.3)
    assert sorted(json.loads(info)["queue"] for info in a.live_pools()) == ["alpha", "beta"]
    a.register_pool("p1", json.dumps({"queue": "alpha", "n": 2}), 60)  # upsert
    wait_until(lambda: len(b.live_pools()) == 1, timeout=WAIT)
    assert json.loads(b.live_pools()[0]) == {"queue": "alpha", "n": 2}
    a.unregister_pool("p1")
    assert a.live_pools() == []
    with pytest.raises(ValueError):
        a.register_pool("p3", "{}", 0)


# -- round trips ------------------------------------------------------------------


def test_round_trips_per_task(url, redis_server):
    """Producer, consumer and waiter together, counted by the server."""
    if os.environ.get("POOLX_TEST_REDIS_URL"):
        pytest.skip("other clients may share the external server")
    broker = get_broker(url)
    broker.expose(ts)
    q = get_queue(url)
    client = broker.taskqueue.client
    with thread_worker(broker, workers=2):
        q.rt.square(0).wait(WAIT)  # warm up
        before = client.info("stats")["total_reads_processed"]
        with batch(q):
            results = [q.rt.square(i) for i in range(400)]
        assert wait_all(results, WAIT)
        trips = client.info("stats")["total_reads_processed"] - before - 1
    assert trips / 400 < 2.5, trips


def test_a_forked_child_starts_with_fresh_process_state(url):
    queue = get_broker(url).taskqueue
    res = get_queue(url).rt.square(2)
    queue.get(WAIT)  # the parent holds a lease
    with queue._writer._cond:  # ...and a parent thread holds the writer's lock
        pid = os.fork()
        if pid == 0:  # the child must neither deadlock nor inherit the lease
            code = 1
            try:
                if queue.get_status(res.id) == "processing" and queue._held == {}:
                    code = 0
            finally:
                os._exit(code)
    reaped: list[int] = []

    def child_exited() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            reaped.append(status)
        return bool(done)

    try:
        wait_until(child_exited, timeout=WAIT)
    finally:
        if not reaped:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(reaped[0]) == 0


# -- the direct lane: the queue's commands on connections it keeps ---------------


def test_commands_reuse_a_kept_connection(url, monkeypatch):
    """The queue's commands do not check a connection out of redis-py's pool
    (and poll it) each time: one that answered is kept for the next."""
    queue = get_broker(url).taskqueue
    queue.size()
    pool = queue.client.connection_pool
    checkouts = []
    real = pool.get_connection
    monkeypatch.setattr(pool, "get_connection", lambda *a, **kw: checkouts.append(1) or real(*a, **kw))
    for i in range(50):
        get_queue(url).rt.square(i)  # another queue object: its own connections
        assert queue.size() == i + 1
    assert checkouts == []


def test_a_kept_connection_the_server_closed_is_replaced_without_a_retry(url, caplog):
    """A kept connection that Redis closed meanwhile (a restart, an idle
    timeout): the command goes out again at once on a fresh connection, with
    no outage logged."""
    queue = get_broker(url).taskqueue
    kept_id = queue._conn.command("CLIENT", "ID")  # the connection the queue keeps now
    redis.Redis.from_url(url.partition("?")[0]).client_kill_filter(_id=kept_id)
    with caplog.at_level(logging.WARNING, logger="poolx.queue.redis"):
        get_queue(url).rt.square(1)
        assert queue.size() == 1
    assert queue.reconnects == 0 and "unreachable" not in caplog.text
    assert queue._conn.command("CLIENT", "ID") != kept_id


def test_a_client_whose_commands_are_watched_sees_every_script_call(url):
    """Replacing a client's ``execute_command`` (instrumentation, tests)
    still sees every command: the direct lane steps aside."""
    queue = get_broker(url).taskqueue
    seen: list[tuple] = []
    real = queue.client.execute_command

    def watched(*args, **options):
        seen.append(args)
        return real(*args, **options)

    queue.client.execute_command = watched
    assert queue.size() == 0
    assert [args[0] for args in seen] == ["EVALSHA"]


def test_the_script_is_loaded_again_after_a_script_flush(url):
    queue = get_broker(url).taskqueue
    assert queue.size() == 0
    queue.client.script_flush()  # as after a restart without persistence
    get_queue(url).rt.square(1)
    assert queue.size() == 1
