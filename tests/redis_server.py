"""A private ``redis-server`` for tests: started on a free loopback port in a
temporary directory, killed and restarted at will, never the shared server.

Owned here: :class:`RedisServer` (one server process) and
:func:`redis_server_or_skip` (the policy when there is no ``redis-server``
binary: skip with a reason, or fail when ``POOLX_REQUIRE_REDIS=1``, as CI
sets it).  ``POOLX_TEST_REDIS_URL`` points the suite at an existing server
instead; tests that must kill or restart Redis start their own private one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ENV_URL = "POOLX_TEST_REDIS_URL"
ENV_REQUIRE = "POOLX_REQUIRE_REDIS"
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def require_redis_server() -> str:
    """The redis-server binary, or skip (fail under POOLX_REQUIRE_REDIS=1)."""
    binary = redis_binary()
    if binary is None:
        reason = "no redis-server binary on PATH (apt-get install redis-server)"
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{reason}; POOLX_REQUIRE_REDIS=1 requires it", pytrace=False)
        pytest.skip(reason)
    return binary


class RedisServer:
    """One private redis-server process.

    :param persistent: Write an append-only file with ``fsync`` on every
        write, so a killed and restarted server keeps everything it
        acknowledged (for restart tests).
    """

    def __init__(self, binary: str, directory: Path | None = None, persistent: bool = False,
                 password: str | None = None) -> None:
        self.binary = binary
        self.dir = Path(directory or tempfile.mkdtemp(prefix="poolx-redis-"))
        self.port = free_port()
        self.persistent = persistent
        self.password = password
        self.socket_path = self.dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    def command(self) -> list[str]:
        cmd = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "",
            "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--appendonly", "yes" if self.persistent else "no",
        ]
        if self.persistent:
            cmd += ["--appendfsync", "always"]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd

    def start(self) -> RedisServer:
        """Start (or start again, same port and data directory) and wait
        until it answers PING."""
        assert self.proc is None, "already running"
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                             socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log_tail()}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server not ready in {START_TIMEOUT} s")
                # A bounded pause between polls (the server gives no other signal).
                _pause(0.01)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server and reap it (no chance to save anything)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pause(seconds: float) -> None:
    import threading

    threading.Event().wait(seconds)
