"""A private Redis Cluster for tests: three ``redis-server --cluster-enabled
yes`` primaries (no replicas) on free loopback ports in temporary
directories, joined with ``redis-cli --cluster create``.

Owned here: :class:`LocalCluster` (start, wait until ``cluster_state:ok``,
clean up).  The binaries policy (skip, or fail under
``POOLX_REQUIRE_REDIS=1``) is ``tests/redis_server.py``'s.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.redis_server import ENV_REQUIRE, RedisServer, _pause, free_port, require_redis_server

NODES = 3
READY_TIMEOUT = 30.0


def _free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class _Node(RedisServer):
    def __init__(self, binary: str, persistent: bool = False) -> None:
        super().__init__(binary, persistent=persistent)
        self.port = _free_cluster_port()

    def command(self) -> list[str]:
        return super().command() + [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.dir / "nodes.conf"),
            "--cluster-node-timeout", "5000",
        ]


class LocalCluster:
    """Three primaries sharing the 16384 slots; ``persistent`` nodes keep
    what they acknowledged across a kill and restart (their append-only file
    and ``nodes.conf`` stay in their directories)."""

    def __init__(self, persistent: bool = False) -> None:
        binary = require_redis_server()
        cli = shutil.which("redis-cli")
        if cli is None:
            reason = "no redis-cli binary on PATH (apt-get install redis-tools)"
            if os.environ.get(ENV_REQUIRE) == "1":
                pytest.fail(f"{reason}; POOLX_REQUIRE_REDIS=1 requires it", pytrace=False)
            pytest.skip(reason)
        self.cli = cli
        self.nodes = [_Node(binary, persistent) for _ in range(NODES)]

    @property
    def url(self) -> str:
        """The cluster URL naming every node (one is enough to connect)."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}/"

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [self.cli, "--cluster", "create",
                 *(f"127.0.0.1:{node.port}" for node in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=READY_TIMEOUT,
            )
            self.wait_ready()
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_ready(self) -> None:
        """Bounded polling until every node says ``cluster_state:ok``."""
        import redis

        clients = [redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1)
                   for node in self.nodes]
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while True:
                if all(client.cluster("INFO").get("cluster_state") == "ok"
                       for client in clients):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis Cluster not ok within {READY_TIMEOUT} s")
                _pause(0.05)  # a bounded pause between polls (no other signal)
        finally:
            for client in clients:
                client.close()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
