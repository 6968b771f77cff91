"""``redis+cluster://``: a real three-node Redis Cluster (tests/redis/cluster.py).

Each queue's keys share one hash tag, so one queue lives on one node and its
scripts run there; different queues spread over the nodes.  The task-queue
contract suite also runs on the cluster (tests/taskqueue/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from poolx import Task, TaskFailure, get_queue
from poolx.core import batch, get_broker
from poolx.queue.redis import TaskQueue
from poolx.task import wait_all
from tests.conftest import wait_until
from tests.redis.tasks import ts
from tests.taskqueue.conftest import delete_prefix, isolated_url
from tests.taskqueue.helpers import WAIT, thread_worker
from tests.worker import tasks
from tests.worker.conftest import start_pool  # noqa: F401 - a fixture


@pytest.fixture
def cluster_url(redis_cluster) -> Iterator[str]:
    url = isolated_url(redis_cluster.url)
    yield url
    get_broker(url).discard_pending_tasks()
    delete_prefix(url)


def _node_of(cluster, key: str) -> int:
    """The port of the node serving ``key``'s slot (asked of the nodes)."""
    slot = key_slot(key.encode())
    client = redis.Redis(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        for start, end, primary, *_ in client.cluster("SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
    finally:
        client.close()
    raise AssertionError(f"slot {slot} not served")


def test_queues_live_on_different_nodes(redis_cluster, cluster_url):
    ports = {}
    for i in range(100):  # names until three queues are on three nodes
        name = f"q{i}"
        ports.setdefault(_node_of(redis_cluster, f"{{{name}}}"), name)  # the hash tag's slot
        if len(ports) == len(redis_cluster.nodes):
            break
    assert len(ports) == 3
    for port, name in ports.items():
        broker = get_broker(cluster_url, name)
        broker.expose(ts)
        with thread_worker(broker):
            assert get_queue(cluster_url, name).rt.square(3).wait(WAIT)
        prefix = broker.taskqueue.prefix
        node = redis.Redis(host="127.0.0.1", port=port)
        try:  # this node holds the queue's keys, and only this queue's
            keys = [k.decode() for k in node.scan_iter(match=f"{prefix}:*")]
        finally:
            node.close()
        queue_keys = [k for k in keys if "{pools}" not in k]
        assert queue_keys and all(f"{{{name}}}" in k for k in queue_keys), keys


def test_process_pool_consumes_a_cluster(cluster_url, start_pool):  # noqa: F811
    """The process WorkerPool: results, a Deferred graph, a hard time limit,
    the pool registry (another slot, maybe another node), no lease left."""
    broker = get_broker(cluster_url)
    pool = start_pool(broker, tasks.init)
    q = get_queue(cluster_url)
    with batch(q):
        squares = [q.wt.num(i) for i in range(100)]
        bad = q.wt.no_such_task()
    total = q.wt.add(squares)  # a Deferred graph across the batch
    limited = Task(q.wt.sleep, timeout=0.2)(30)
    assert wait_all([*squares, bad, total, limited], WAIT)
    assert total.value == sum(range(100))
    assert isinstance(bad._value, TaskFailure) and bad._value.error == "no such task"
    with pytest.raises(TaskFailure, match=r"TimeLimitExceeded: hard time limit \(0.2 s\)"):
        _ = limited.value
    assert wait_until(lambda: broker.taskqueue.live_pools(), timeout=WAIT)  # another slot
    pool.stop()
    taskqueue = get_broker(cluster_url).taskqueue
    assert taskqueue.client.zcard(taskqueue._key + "leases") == 0
    assert len(q) == 0 and broker.taskqueue.live_pools() == []


def test_cluster_url_options_and_errors(redis_cluster):
    node = redis_cluster.nodes[0].port
    queue = TaskQueue(f"redis+cluster://127.0.0.1:{node},127.0.0.1:1/?prefix=p&socket_timeout=3")
    assert isinstance(queue.client, redis.RedisCluster)  # one reachable node is enough
    assert len(queue.client.get_primaries()) == 3
    assert queue.client.get_default_node().redis_connection.connection_pool \
        .connection_kwargs["socket_timeout"] == 3
    assert queue._conn.max_block == 1.5  # blocking calls stay below the socket timeout
    queue.close()
    with pytest.raises(ValueError, match="a cluster has only database 0"):
        TaskQueue("redis+cluster://127.0.0.1:7000/3")
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        TaskQueue("redis+cluster://127.0.0.1:7000/?bogus=1")
    with pytest.raises(ValueError, match="not a Redis URL"):
        TaskQueue("rediss+cluster://127.0.0.1:7000/")


def test_cluster_subclass_as_redis_factory(redis_cluster):
    class Mine(redis.RedisCluster):
        pass

    queue = TaskQueue(isolated_url(redis_cluster.url), redis_factory=Mine)
    assert type(queue.client) is Mine and queue.ping()
    queue.close()


def test_no_reachable_node_is_a_clear_error_naming_the_url():
    from poolx.queue.redis import RedisUnavailable
    from tests.redis_server import free_port

    port = free_port()  # nothing listens there
    with pytest.raises(RedisUnavailable) as info:
        get_broker(f"redis+cluster://:pw-secret@127.0.0.1:{port}/").taskqueue.ping()
    text = str(info.value)
    assert text.startswith(f"cannot connect to Redis at redis+cluster://:***@127.0.0.1:{port}/")
    assert "pw-secret" not in text


def test_cleanup_reaches_every_node(redis_cluster):
    """delete_prefix (every test's teardown) scans all nodes of a cluster."""
    url = isolated_url(redis_cluster.url)
    for i in range(6):
        broker = get_broker(url, f"c{i}")
        broker.expose(ts)
        broker.queue().rt.square(i)
    prefix = get_broker(url).taskqueue.prefix
    delete_prefix(url)
    for node in redis_cluster.nodes:
        client = redis.Redis(host="127.0.0.1", port=node.port)
        try:
            assert list(client.scan_iter(match=f"{prefix}:*")) == []
        finally:
            client.close()


def test_tasks_survive_a_node_restart(start_pool):  # noqa: F811
    """The node holding a queue is killed (SIGKILL) while a process
    WorkerPool works through it, and restarted: every task still completes,
    with its own result, per the delivery guarantees (docs/delivery.rst) —
    a task is never lost, and its Deferred is never left waiting."""
    from tests.redis.cluster import LocalCluster

    cluster = LocalCluster(persistent=True).start()  # its own: this test kills a node
    try:
        url = cluster.url
        port = _node_of(cluster, "{default}")
        node = next(n for n in cluster.nodes if n.port == port)
        broker = get_broker(url)
        pool = start_pool(broker, tasks.init)
        q = get_queue(url)
        with batch(q):
            first = [q.wt.num(i) for i in range(20)]
        assert wait_all(first, WAIT)
        with batch(q):
            rest = [q.wt.num(i) for i in range(20, 60)]
        node.kill()
        node.start()  # same port, directory, nodes.conf and append-only file
        cluster.wait_ready()
        assert wait_all(rest, 60)
        assert [d.value for d in first + rest] == list(range(60))
        pool.stop()
        assert len(q) == 0
    finally:
        cluster.cleanup()
