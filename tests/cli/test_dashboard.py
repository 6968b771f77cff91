"""``poolx dashboard``: the JSON endpoint against Redis with two process
worker pools, the security model (token, loopback host names, read-only,
no password, escaped user data), the command, and the page rendered by a
real browser (headless chromium)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from poolx.cli import build_parser
from poolx.core import get_broker
from poolx.dashboard import DEFAULT_BIND, DashboardServer, Throughput
from poolx.status import StatusReader
from tests.conftest import default_sigint, wait_until
from tests.redis_server import ENV_REQUIRE, RedisServer, free_port, require_redis_server
from tests.taskqueue.conftest import delete_prefix, isolated_url
from tests.worker.tasks import init

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30
EVIL = "<img src=x onerror=alert(1)>"
"""A task name that is HTML: the page must show it as text."""


@pytest.fixture
def redis_url(redis_server) -> Iterator[str]:
    url = isolated_url(redis_server.url)
    yield url
    get_broker(url).discard_pending_tasks()
    get_broker(url, "work").discard_pending_tasks()
    delete_prefix(url)


@pytest.fixture
def dashboard() -> Iterator[Callable[..., DashboardServer]]:
    """``dashboard(url, **kw)`` → a DashboardServer on a free loopback port,
    serving on a thread, shut down at teardown."""
    servers: list[tuple[DashboardServer, threading.Thread]] = []

    def start(url: str, reader: StatusReader | None = None, **kw: Any) -> DashboardServer:
        kw.setdefault("interval", 0.2)
        server = DashboardServer(reader or StatusReader(url), ("127.0.0.1", 0), **kw)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def get(server: DashboardServer, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=WAIT)
    try:
        conn.request(method, path, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def api(server: DashboardServer, query: str = "") -> dict[str, Any]:
    code, _, body = get(server, "/api/status" + query)
    assert code == 200, body
    return json.loads(body)


@pytest.fixture
def two_pools(redis_url, start_pool):
    """Two process WorkerPools (alpha: 2 workers, beta: 1) on queue ``work``
    of the session's Redis, publishing their status every 0.1 s; two tasks
    wait in the unconsumed ``default`` queue, one of them named like HTML."""
    work = get_broker(redis_url, "work")
    start_pool(work, init, name="alpha", workers=2, status_interval=0.1)
    start_pool(get_broker(redis_url, "work"), init, name="beta", workers=1, status_interval=0.1)
    idle = get_broker(redis_url)
    idle.queue("wt.add")([1, 2])
    idle.queue(EVIL)(1)
    return work


def run_tasks(work, count: int) -> None:
    results = [work.queue("wt.add")([i, 1]) for i in range(count)]
    assert all(res.wait(WAIT) for res in results)
    assert [res.value for res in results] == [i + 1 for i in range(count)]


def wait_api(server: DashboardServer, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return wait_until(lambda: (lambda data: data if check(data) else None)(api(server)), WAIT)  # type: ignore[return-value]


@pytest.mark.redis
def test_api_status_shows_pools_queues_and_throughput(redis_url, two_pools, dashboard):
    server = dashboard(redis_url)
    data = wait_api(server, lambda d: len(d["status"]["pools"]) == 2)
    status = data["status"]
    pools = {p["name"]: p for p in status["pools"]}
    assert sorted(pools) == ["alpha", "beta"]
    assert len(pools["alpha"]["workers"]) == 2 and len(pools["beta"]["workers"]) == 1
    assert all(p["queue"] == "work" and p["pid"] == os.getpid() for p in pools.values())
    assert set(status["queues"]) == {"default", "work"}
    default = status["queues"]["default"]
    assert default["waiting"] == 2
    assert [task["name"] for task in default["tasks"]] == ["wt.add", EVIL]
    assert data["throughput"]["last_minute"]["done"] == 0
    run_tasks(two_pools, 20)
    data = wait_api(server, lambda d: d["throughput"]["last_minute"]["done"] >= 20)
    assert sum(p["tasks_done"] for p in data["status"]["pools"]) == 20
    assert data["throughput"]["last_minute"]["done"] == 20
    assert sum(b["done"] for b in data["throughput"]["buckets"]) == 20


def test_throughput_counts_what_the_counters_gained():
    meter = Throughput(window=600, bucket=10)
    meter.add(1000.0, [{"id": "a", "tasks_done": 5, "tasks_failed": 1}])
    meter.add(1005.0, [{"id": "a", "tasks_done": 9, "tasks_failed": 1},
                       {"id": "b", "tasks_done": 100, "tasks_failed": 0}])  # b: counted from now on
    meter.add(1012.0, [{"id": "b", "tasks_done": 103, "tasks_failed": 2}])  # a went away
    summary = meter.summary(1012.0)
    assert summary["last_minute"] == {"done": 7, "failed": 2, "seconds": 12.0}
    assert summary["buckets"] == [{"start": 1000.0, "done": 4, "failed": 0},
                                  {"start": 1010.0, "done": 3, "failed": 2}]
    later = meter.summary(1100.0)
    assert later["last_minute"]["done"] == 0 and later["last_5_minutes"]["done"] == 7


def test_the_token_is_required_on_every_request(dashboard, url):
    server = dashboard(url, token="s3cret")
    for path in ("/", "/api/status", "/nowhere"):
        code, headers, _ = get(server, path)
        assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert get(server, path + "?token=wrong")[0] == 401
        assert get(server, path, headers={"Authorization": "Bearer nope"})[0] == 401
    assert get(server, "/?token=s3cret")[0] == 200
    assert api(server, "?token=s3cret")["status"]["url"] == url
    assert get(server, "/api/status", headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert get(server, "/nowhere?token=s3cret")[0] == 404


def test_without_a_token_the_page_is_open(dashboard, url):
    server = dashboard(url)
    code, headers, body = get(server, "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b"poolx dashboard" in body
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    code, _, body = get(server, "/api/status", method="HEAD")
    assert code == 200 and body == b""


def test_its_log_never_shows_the_token(dashboard, url, caplog):
    server = dashboard(url, token="s3cret")
    with caplog.at_level("DEBUG", logger="poolx.dashboard"):
        assert get(server, "/api/status?token=s3cret")[0] == 200
        assert get(server, "/?token=s3cret&x")[0] == 200
    assert "GET /api/status 200" in caplog.text and "s3cret" not in caplog.text


def test_it_is_read_only(dashboard, url):
    server = dashboard(url)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        code, headers, _ = get(server, "/api/status", method=method)
        assert code == 405 and headers["Allow"] == "GET, HEAD"


def test_on_loopback_it_answers_to_loopback_host_names_only(dashboard, url):
    server = dashboard(url)
    port = server.server_address[1]
    assert get(server, "/", headers={"Host": f"attacker.example:{port}"})[0] == 403
    for host in ("localhost", "127.0.0.1", "[::1]"):
        assert get(server, "/", headers={"Host": f"{host}:{port}"})[0] == 200


def test_it_can_listen_on_ipv6_loopback(url):
    try:
        server = DashboardServer(StatusReader(url), ("::1", 0))
    except OSError as err:
        pytest.skip(f"no IPv6 loopback here: {err}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        assert server.url.startswith("http://[::1]:") and server.loopback_only
        conn = http.client.HTTPConnection("::1", server.server_address[1], timeout=WAIT)
        conn.request("GET", "/api/status")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def test_no_redis_password_is_shown(dashboard):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0?retry_timeout=0"
    server = dashboard(url)
    code, _, body = get(server, "/api/status")
    assert code == 503
    error = json.loads(body)["error"]
    assert error.startswith("cannot reach redis://:***@127.0.0.1:")
    assert b"hunter2" not in body and b"hunter2" not in get(server, "/")[2]


@pytest.mark.redis
def test_when_redis_goes_away_the_api_says_so(dashboard, tmp_path):
    server_proc = RedisServer(require_redis_server(), tmp_path).start()
    try:
        server = dashboard(server_proc.url + "?retry_timeout=1")
        assert api(server)["status"]["queues"]["default"]["waiting"] == 0
        server_proc.kill()
        code, _, body = wait_until(lambda: (lambda r: r if r[0] != 200 else None)(get(server, "/api/status")), WAIT)
        assert code == 503 and json.loads(body)["error"].startswith(f"cannot reach {server_proc.url}")
    finally:
        server_proc.cleanup()


def test_user_data_is_never_html_in_the_page(dashboard, url):
    """The page is static (the task name is nowhere in it); the data comes as
    JSON, which the browser test shows is rendered as text."""
    get_broker(url).queue(EVIL)(1)
    server = dashboard(url)
    assert [t["name"] for t in api(server)["status"]["queues"]["default"]["tasks"]] == [EVIL]
    page = get(server, "/")[2].decode()
    assert "onerror" not in page and ".innerHTML" not in page and "insertAdjacentHTML" not in page


# -- the command ---------------------------------------------------------------


def test_it_binds_loopback_by_default(monkeypatch):
    monkeypatch.delenv("POOLX_DASHBOARD_TOKEN", raising=False)
    args = build_parser().parse_args(["dashboard", "redis://127.0.0.1:6379/0"])
    assert DEFAULT_BIND == "127.0.0.1" and args.bind == DEFAULT_BIND
    assert args.port == 8155 and args.token is None


def test_the_token_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("POOLX_DASHBOARD_TOKEN", "from-env")
    assert build_parser().parse_args(["dashboard", "memory://"]).token == "from-env"


@pytest.mark.redis
def test_the_command_serves_until_ctrl_c(redis_url):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("POOLX_DASHBOARD_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "poolx", "dashboard", redis_url, "--port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r" on http://127\.0\.0\.1:(\d+)/ \(no token\)", line)
        assert found, (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=WAIT)
        conn.request("GET", "/api/status")
        reply = conn.getresponse()
        assert reply.status == 200 and "default" in json.loads(reply.read())["status"]["queues"]
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 0


def test_the_command_prints_its_address_without_the_password():
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "poolx", "dashboard", url, "--port", "0", "--token", "t"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=default_sigint)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert re.fullmatch(r"poolx dashboard of redis://:\*\*\*@127\.0\.0\.1:\d+/0 on "
                            r"http://127\.0\.0\.1:\d+/ \(token required\); CTRL\+C stops\n", line), line
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 0


def test_serving_other_machines_without_a_token_is_warned_about(redis_url):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("POOLX_DASHBOARD_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "poolx", "dashboard", redis_url, "--port", "0",
                             "--bind", "0.0.0.0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert "(no token)" in proc.stdout.readline()
        warning = proc.stderr.readline()
        assert warning.startswith("poolx dashboard: warning: ") and "--token" in warning, warning
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 0


@pytest.mark.redis
def test_the_reader_merges_the_failures_of_two_pools(redis_url, start_pool, dashboard):
    """Two pools on one Redis (each on its own queue, so that which pool
    fails which task is known): the reader lists their failures newest
    first, with the pool, host and worker of each, and so does the API."""
    first, second = get_broker(redis_url, "qa"), get_broker(redis_url, "qb")
    start_pool(first, init, name="pa", workers=1, status_interval=0.1)
    start_pool(get_broker(redis_url, "qb"), init, name="pb", workers=1, status_interval=0.1)
    failing = []
    for broker, message in ((first, "one"), (second, "two"), (first, "three")):
        failing.append(broker.queue("wt.fail")(message))
        assert failing[-1].wait(WAIT)  # one after the other: their order is known
    with StatusReader(redis_url) as reader:
        status = wait_until(lambda: (lambda s: s if len(s["failed"]) == 3 else None)(reader.read(failed=10)),
                            WAIT)
        assert [(f["id"], f["pool"], f["queue"], f["error"]) for f in status["failed"]] == [
            (failing[2].id, "pa", "qa", "ValueError: three"), (failing[1].id, "pb", "qb", "ValueError: two"),
            (failing[0].id, "pa", "qa", "ValueError: one")]
        pools = {p["name"]: p for p in status["pools"]}
        for failure in status["failed"]:
            assert failure["task"] == "wt.fail" and failure["host"] == pools[failure["pool"]]["host"]
            assert failure["worker"] in [w["pid"] for w in pools[failure["pool"]]["workers"]]
        assert [f["id"] for f in reader.read(failed=2)["failed"]] == [failing[2].id, failing[1].id]
        assert [f["id"] for f in reader.read(pools=["pb"], failed=10)["failed"]] == [failing[1].id]
        assert reader.read()["failed"] == []  # none asked for
    server = dashboard(redis_url)
    assert [f["id"] for f in api(server)["status"]["failed"]] == [task.id for task in reversed(failing)]


def test_the_status_reader_reuses_its_brokers(url):
    with StatusReader(url) as reader:
        assert reader.broker("q") is reader.broker("q") and reader.broker("q") is not reader.broker()
        assert reader.read(tasks=1)["queues"] == {"default": {"waiting": 0, "scheduled": 0, "in_flight": 0,
                                                              "tasks": [], "periodic": []}}
    with pytest.raises(ValueError, match="unknown scheme"):
        StatusReader("nope://x")


def test_the_reader_forgets_the_brokers_of_queues_nobody_consumes(redis_url):
    """A long-running reader keeps a broker (a connection) per queue it
    shows, not per queue it ever showed (50 short-lived pools left 50)."""
    taskqueue = get_broker(redis_url).taskqueue
    taskqueue.register_pool("short", json.dumps({"name": "short", "queue": "job-1"}), 60)
    with StatusReader(redis_url) as reader:
        assert "job-1" in reader.read()["queues"]
        first = reader.broker("job-1")
        assert reader.broker("job-1") is first  # kept while a pool consumes it
        taskqueue.unregister_pool("short")
        assert "job-1" not in reader.read()["queues"]
        assert reader.broker("job-1") is not first  # closed and forgotten: made afresh


def test_a_pool_record_naming_an_impossible_queue_is_skipped(redis_url):
    """A record whose queue Redis cannot have (an empty hash tag): the read
    goes on without that queue (it raised, and the dashboard's request
    thread died with no answer); asked for by name, it is the caller's
    ValueError."""
    taskqueue = get_broker(redis_url).taskqueue
    taskqueue.register_pool("odd", json.dumps({"name": "odd", "queue": ""}), 60)
    try:
        with StatusReader(redis_url) as reader:
            status = reader.read()
            assert [p["name"] for p in status["pools"]] == ["odd"]
            assert list(status["queues"]) == ["default"]
            with pytest.raises(ValueError, match="queue name"):
                reader.read(queues=[""])
    finally:
        taskqueue.unregister_pool("odd")


# -- a real browser ------------------------------------------------------------------


def chromium_or_skip() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        reason = "no chromium on PATH (apt-get install chromium) for the headless browser test"
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{reason}; POOLX_REQUIRE_REDIS=1 (CI) requires it", pytrace=False)
        pytest.skip(reason)
    return binary


def render(chromium: str, url: str, tmp_path: Path) -> str:
    """The page's DOM after its script ran (virtual time lets the polls run)."""
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=3000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def cells(dom: str, tbody: str) -> list[list[str]]:
    """The text of each cell of each row of ``<tbody id=tbody>`` (tags dropped)."""
    body = re.search(rf'<tbody id="{tbody}">(.*?)</tbody>', dom, re.S)
    assert body, dom[-3000:]
    return [[re.sub(r"<[^>]+>", " ", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S)]


class TasksRunBetweenPolls(StatusReader):
    """A reader that, armed, runs ``count`` tasks before its next read: the
    page's next poll must show them."""

    def __init__(self, url: str, work: Any) -> None:
        super().__init__(url)
        self.work = work
        self.armed = 0
        self.reads = 0

    def read(self, *args: Any, **kw: Any) -> dict[str, Any]:
        self.reads += 1
        if self.reads == 2 and self.armed:
            before = sum(p["tasks_done"] for p in self.live_pools())
            run_tasks(self.work, self.armed)
            wait_until(lambda: sum(p["tasks_done"] for p in self.live_pools()) == before + self.armed, WAIT)
        return super().read(*args, **kw)


@pytest.mark.redis
def test_the_page_in_headless_chromium(redis_url, two_pools, dashboard, tmp_path):
    chromium = chromium_or_skip()
    reader = TasksRunBetweenPolls(redis_url, two_pools)
    # A status read is reused for half an interval: the page's polls come
    # milliseconds apart in real time (virtual time skips the waits), so a
    # tiny interval makes each poll read (the page still polls every 0.5 s).
    server = dashboard(redis_url, reader=reader, token="tok", interval=0.002)
    wait_until(lambda: len(server.reader.live_pools()) == 2, WAIT)
    run_tasks(two_pools, 3)
    # Two failed tasks: one whose error text is HTML, one whose name is.
    failing = []
    for name, args in (("wt.fail", (EVIL,)), (EVIL, ())):
        failing.append(two_pools.queue(name)(*args))
        assert failing[-1].wait(WAIT)  # one after the other: their order is known
    wait_until(lambda: sum(p["tasks_done"] for p in server.reader.live_pools()) == 3
               and sum(len(p["failed"]) for p in server.reader.live_pools()) == 2, WAIT)

    dom = render(chromium, server.url + "?token=tok", tmp_path)
    pools = cells(dom, "pools")
    assert sorted(row[0] for row in pools) == ["alpha", "beta"], pools
    assert all(row[3] == "work" and row[4] == "running" for row in pools)
    assert sorted(row[5] for row in pools) == ["1", "2"]  # workers
    queues = {row[0]: row for row in cells(dom, "queues")}
    assert set(queues) == {"default", "work"}
    assert queues["default"][1] == "2"  # waiting
    # The HTML task name is text: escaped in the serialized DOM, no <img> element.
    assert "&lt;img src=x onerror=alert(1)&gt;" in queues["default"][4]
    assert "<img" not in dom
    assert re.search(r"^(\d+s|\d+m\d\ds)$", queues["default"][3])  # the oldest task's age
    assert re.search(r'<span id="total-done">3</span>', dom)
    assert re.search(r'<span id="total-failed">2</span>', dom)
    assert 'class="shown"' not in dom  # no error banner
    # The failed tasks, newest first: when, name, id, queue, pool, worker, error.
    failed = cells(dom, "failed")
    assert [row[2] for row in failed] == [failing[1].id, failing[0].id], failed
    assert [row[1] for row in failed] == ["&lt;img src=x onerror=alert(1)&gt;", "wt.fail"]
    assert failed[1][6] == "ValueError: &lt;img src=x onerror=alert(1)&gt;"
    assert failed[0][6] == "no such task"
    assert all(row[3] == "work" and re.match(r"^(alpha|beta) on ", row[4]) and row[5].isdigit()
               and re.match(r"^\d+s ago$", row[0]) for row in failed)

    # A running task shows on its pool's row.
    held = two_pools.queue("wt.touch_and_wait")(str(tmp_path), "x")
    wait_until(lambda: (tmp_path / "x.started").exists(), WAIT)
    wait_until(lambda: any(p["running"] for p in server.reader.live_pools()), WAIT)
    dom = render(chromium, server.url + "?token=tok", tmp_path)
    assert [row[0] for row in cells(dom, "pools") if f"wt.touch_and_wait [work:{held.id}]" in row[11]]
    (tmp_path / "x.unlock").touch()
    assert held.wait(WAIT)
    wait_until(lambda: sum(p["tasks_done"] for p in server.reader.live_pools()) == 4, WAIT)

    # One page load: its first poll sees 4 tasks done, then 4 more run, and
    # its next polls show 8 (the page refreshes by itself).
    reader.reads, reader.armed = 0, 4
    dom = render(chromium, server.url + "?token=tok", tmp_path)
    assert reader.reads >= 2
    assert re.search(r'<span id="total-done">8</span>', dom)


@pytest.mark.redis
def test_the_page_refuses_a_browser_without_the_token(redis_url, dashboard, tmp_path):
    chromium = chromium_or_skip()
    server = dashboard(redis_url, token="tok")
    dom = render(chromium, server.url, tmp_path)
    assert "a valid token is required" in dom and 'id="pools"' not in dom
