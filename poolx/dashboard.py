"""``poolx dashboard``: a read-only web page that shows the fleet, live.

Owned here: :class:`DashboardServer` (the HTTP server: one HTML page and
the JSON endpoint ``/api/status`` it polls), :class:`Throughput` (tasks
finished per interval, derived from the counters the pools already publish)
and :func:`serve` (what the command runs).  The data comes from
:class:`poolx.status.StatusReader`, the same reader as ``poolx status``:
there is no second bookkeeping.

::

    browser ── GET / ─────────────▶ the page (static: no data in it)
       └─ every INTERVAL s: GET /api/status ─▶ StatusReader.read()  (Redis)
                                                + Throughput.add()
       ◀─ JSON ── the page's script renders it with textContent only

Why the standard library (:class:`http.server.ThreadingHTTPServer`) and not
a web framework: the dashboard serves two read-only GET routes to a handful
of operators, so a framework would add a dependency (an extra to install,
to keep up to date and to audit) and buy nothing; the page is one static
document whose few lines of script poll the JSON endpoint, so there is no
template engine and no WebSocket to maintain either.  ``http.server`` is not
meant to face the internet: the server binds 127.0.0.1 by default (reach it
through an SSH tunnel), and when bound elsewhere it should get a token.

Security model (see docs/dashboard.rst):

* read-only: GET and HEAD only, other methods get 405; nothing it does
  writes to the broker;
* loopback by default; when bound to a loopback address, requests whose
  ``Host`` is not a loopback name are refused (a DNS-rebinding page cannot
  read the status);
* optional token: when set, every request needs ``?token=TOKEN`` or
  ``Authorization: Bearer TOKEN`` (compared in constant time; the page
  passes its own ``?token=`` on to the API);
* no Redis password is ever shown (URLs go through
  :func:`poolx.queue.urls.redact_url`);
* user data (task, pool and queue names, error texts) reaches the page only
  as JSON and is inserted with ``textContent``, never as HTML; a
  Content-Security-Policy allows only the page's own script and style.

Layer: beside the command line; it uses :mod:`poolx.status` (imported when
it serves: ``poolx --help`` reads this module's defaults and should stay
quick) and the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from poolx import __version__

if TYPE_CHECKING:
    from poolx.status import StatusReader

__all__ = ["DEFAULT_BIND", "DEFAULT_PORT", "DashboardServer", "Throughput", "serve"]

log = logging.getLogger("poolx.dashboard")

DEFAULT_BIND = "127.0.0.1"
"""The address the dashboard listens on unless told otherwise: this machine only."""

DEFAULT_PORT = 8155
"""The dashboard's default TCP port."""


class Throughput:
    """Tasks finished (done and failed) per time bucket, over a sliding window.

    Derived from the cumulative counters every pool publishes in its status
    record (``tasks_done``, ``tasks_failed``, per pool ``id``): each
    :meth:`add` counts what grew since the previous one.  A pool seen for
    the first time counts from then on; a pool that disappeared takes its
    last increase with it.  So the figures cover the time since the
    dashboard started, at the resolution of its polls.

    :param window: Seconds of history kept.
    :param bucket: Seconds per bucket.
    """

    def __init__(self, window: float = 600.0, bucket: float = 10.0) -> None:
        self.window = window
        self.bucket = bucket
        self._lock = threading.Lock()
        self._counters: dict[str, tuple[int, int]] = {}
        self._since: float | None = None
        self._buckets: dict[int, list[int]] = {}

    def add(self, now: float, pools: list[Mapping[str, Any]]) -> None:
        """Count what the pools' counters gained since the previous call."""
        counters = {}
        for pool in pools:
            done, failed = pool.get("tasks_done"), pool.get("tasks_failed")
            if isinstance(pool.get("id"), str) and isinstance(done, int) and isinstance(failed, int):
                counters[pool["id"]] = (done, failed)
        with self._lock:
            if self._since is None:
                self._since = now
            gained_done = gained_failed = 0
            for pool_id, (done, failed) in counters.items():
                before = self._counters.get(pool_id)
                if before is not None:
                    gained_done += max(0, done - before[0])
                    gained_failed += max(0, failed - before[1])
            self._counters = counters
            if gained_done or gained_failed:
                counts = self._buckets.setdefault(int(now // self.bucket), [0, 0])
                counts[0] += gained_done
                counts[1] += gained_failed
            oldest = int((now - self.window) // self.bucket)
            for key in [key for key in self._buckets if key < oldest]:
                del self._buckets[key]

    def summary(self, now: float) -> dict[str, Any]:
        """``{"since", "bucket_seconds", "buckets": [{"start", "done",
        "failed"}...] (oldest first, empty ones included), "last_minute",
        "last_5_minutes": {"done", "failed", "seconds"}}``; ``seconds`` is the
        time the figures cover (less than asked while the dashboard is young)."""
        with self._lock:
            since = self._since
            buckets = dict(self._buckets)
        result: dict[str, Any] = {"since": since, "bucket_seconds": self.bucket, "buckets": []}
        if since is None:
            since = now
        first = int(max(since, now - self.window) // self.bucket)
        last = int(now // self.bucket)
        for key in range(first, last + 1):
            done, failed = buckets.get(key, (0, 0))
            result["buckets"].append({"start": key * self.bucket, "done": done, "failed": failed})
        for name, seconds in (("last_minute", 60.0), ("last_5_minutes", 300.0)):
            start = int((now - seconds) // self.bucket)
            picked = [counts for key, counts in buckets.items() if key > start]
            result[name] = {"done": sum(c[0] for c in picked), "failed": sum(c[1] for c in picked),
                            "seconds": min(seconds, max(0.0, now - since))}
        return result


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DashboardServer(ThreadingHTTPServer):
    """The dashboard's HTTP server (call :meth:`serve_forever`; ``shutdown``
    and ``server_close`` stop it).

    :param reader: Where the status comes from (the server closes it in
        :meth:`server_close`).
    :param address: ``(host, port)`` to listen on; port 0 picks a free one.
    :param token: When set, every request must carry it.
    :param interval: Seconds between two polls of the page.
    :param tasks: How many queued tasks of each queue the page lists.
    :param failed: How many recently failed tasks the page lists.
    """

    daemon_threads = True

    def __init__(self, reader: StatusReader, address: tuple[str, int] = (DEFAULT_BIND, DEFAULT_PORT), *,
                 token: str | None = None, interval: float = 2.0, tasks: int = 10,
                 failed: int = 20) -> None:
        if token is not None and not token:
            raise ValueError("the token must not be empty")
        self.reader = reader
        self.token = token
        self.interval = interval
        self.tasks = tasks
        self.failed = failed
        self.throughput = Throughput()
        self.loopback_only = _is_loopback(address[0])
        self._lock = threading.Lock()
        self._cached: tuple[float, int, bytes] | None = None
        if ":" in address[0]:
            self.address_family = socket.AF_INET6  # e.g. --bind ::1
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """The page's address (without the token)."""
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def status_json(self) -> tuple[int, bytes]:
        """The body of ``/api/status`` and its HTTP status: read at most once
        per half interval, however many pages poll."""
        from poolx.queue.urls import redact_url
        from poolx.status import StatusUnavailable

        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.interval / 2:
                return self._cached[1:]
            body: dict[str, Any]
            try:
                status = self.reader.read(tasks=self.tasks, failed=self.failed)
            except StatusUnavailable as err:
                code, body = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(err)}
            except Exception as err:  # the page shows it; the server goes on
                log.exception("dashboard: reading the status failed")
                code, body = HTTPStatus.INTERNAL_SERVER_ERROR, {
                    "error": f"reading the status failed: {type(err).__name__}: {redact_url(str(err))}"}
            else:
                self.throughput.add(status["time"], status["pools"])
                code, body = HTTPStatus.OK, {
                    "version": __version__, "interval": self.interval, "status": status,
                    "throughput": self.throughput.summary(status["time"]),
                }
            # Stamped when the read ended: requests that queued behind a slow
            # read get its answer instead of each reading again.
            self._cached = (time.monotonic(), int(code), json.dumps(body, default=str).encode())
            return self._cached[1:]

    def allows(self, token: str | None) -> bool:
        """True if a request carrying ``token`` may be served."""
        if self.token is None:
            return True
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    def server_close(self) -> None:
        super().server_close()
        self.reader.close()


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "poolx-dashboard"
    sys_version = ""
    timeout = 30  # an idle connection does not hold a server thread for ever

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only: GET and HEAD only\n", "text/plain",
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def _serve(self, body: bool) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        host = urlsplit("//" + self.headers.get("Host", "")).hostname
        if self.server.loopback_only and host is not None and not _is_loopback(host):
            self._send(HTTPStatus.FORBIDDEN, b"this dashboard answers to loopback host names only\n",
                       "text/plain", body=body)
            return
        token: str | None = query["token"][0] if query.get("token") else None
        authorization = self.headers.get("Authorization", "")
        if token is None and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if not self.server.allows(token):
            self._send(HTTPStatus.UNAUTHORIZED, b"a valid token is required\n", "text/plain", body=body,
                       extra={"WWW-Authenticate": 'Bearer realm="poolx dashboard"'})
            return
        if parts.path == "/":
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8", body=body,
                       extra={"Content-Security-Policy": CSP})
        elif parts.path == "/api/status":
            code, data = self.server.status_json()
            self._send(code, data, "application/json", body=body)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", body=body)

    def _send(self, code: int, data: bytes, content_type: str, body: bool = True,
              extra: Mapping[str, str] | None = None) -> None:
        self.send_response(code)
        headers = {
            "Content-Type": content_type, "Content-Length": str(len(data)),
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", **(extra or {}),
        }
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line may carry the token: log the path only.
        log.debug("%s %s %s %s", self.client_address[0], self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        text = format % args
        if self.server.token:
            text = text.replace(self.server.token, "***")
        log.warning("%s: %s", self.client_address[0], text)


def serve(url: str, port: int = DEFAULT_PORT, bind: str = DEFAULT_BIND, *, token: str | None = None,
          interval: float = 2.0, tasks: int = 10, ready: Any = None) -> None:
    """Serve the dashboard of ``url`` until KeyboardInterrupt.

    :param url: The task queue URL.
    :param port: TCP port (0 picks a free one).
    :param bind: Address to listen on.
    :param token: When set, every request must carry it.
    :param interval: Seconds between two polls of the page.
    :param tasks: How many queued tasks of each queue the page lists.
    :param ready: Called with the server once it listens (e.g. to print its
        address).
    :raises ValueError: a malformed URL.
    :raises OSError: the address cannot be bound.
    """
    from poolx.status import StatusReader

    server = DashboardServer(StatusReader(url), (bind, port), token=token, interval=interval, tasks=tasks)
    try:
        if ready is not None:
            ready(server)
        server.serve_forever()
    finally:
        server.server_close()


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #777; } .bad { color: #b00020; font-weight: bold; } .ok { color: #1b7f3b; }
#error { background: #fde7ea; color: #b00020; padding: .5em; display: none; }
#error.shown { display: block; }
code { font-size: 12px; } svg { background: #fafafa; border: 1px solid #ddd; }
rect.done { fill: #4c8bf5; } rect.failed { fill: #e0475b; }
#failed td:not(:last-child) { white-space: nowrap; }
"""

_SCRIPT = """
"use strict";
const token = new URLSearchParams(location.search).get("token");
const api = "api/status" + (token ? "?token=" + encodeURIComponent(token) : "");
let interval = 2000;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function dur(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "?";
  let s = Math.max(0, seconds);
  if (s < 60) return s.toFixed(0) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
}
function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    if (cell instanceof Node) { const td = el("td"); td.append(cell); tr.append(td); }
    else if (typeof cell === "number") tr.append(el("td", cell, "n"));
    else tr.append(el("td", cell));
  }
  return tr;
}
function list(items) {
  const box = el("div");
  for (const item of items) box.append(el("div", item));
  return box;
}
function pools(status) {
  const now = status.time, body = document.getElementById("pools"), rows = [];
  for (const p of status.pools) {
    const workers = p.workers || [];
    const busy = workers.filter(w => w.state === "busy").length;
    const state = el("span", p.state || "?", p.broken ? "bad" : "ok");
    if (p.broken) state.title = String(p.broken);
    const tr = row([p.name, p.host, p.pid, p.queue, state, workers.length, busy,
      dur(now - p.started), dur(now - p.heartbeat), p.tasks_done, p.tasks_failed,
      list(p.running || [])]);
    tr.dataset.pool = String(p.name);
    rows.push(tr);
  }
  if (!rows.length) rows.push(row([el("span", "no live worker pool", "muted")]));
  body.replaceChildren(...rows);
  document.getElementById("total-done").textContent =
    String(status.pools.reduce((n, p) => n + (p.tasks_done || 0), 0));
  document.getElementById("total-failed").textContent =
    String(status.pools.reduce((n, p) => n + (p.tasks_failed || 0), 0));
}
function queues(status) {
  const body = document.getElementById("queues"), rows = [];
  for (const [name, q] of Object.entries(status.queues)) {
    const tasks = q.tasks || [];
    const ages = tasks.map(t => t.age).filter(a => typeof a === "number");
    const next = el("div");
    for (const t of tasks) {
      const line = el("div");
      line.append(el("code", t.id), " ", el("span", t.name || "?"), " ",
                  el("span", "waiting " + dur(t.age), "muted"));
      next.append(line);
    }
    if (q.tasks === null) next.append(el("span", "this backend cannot list its tasks", "muted"));
    else if (q.waiting > tasks.length) next.append(el("div", "... " + (q.waiting - tasks.length) + " more", "muted"));
    const tr = row([name, q.waiting, q.in_flight, ages.length ? dur(Math.max(...ages)) : "-", next]);
    tr.dataset.queue = name;
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}
function failed(status) {
  const body = document.getElementById("failed"), rows = [];
  for (const f of status.failed || []) {
    const tr = row([dur(f.age) + " ago", f.task, el("code", f.id), f.queue,
      f.pool + " on " + f.host, f.worker === null ? "-" : f.worker, el("code", f.error)]);
    tr.dataset.failed = String(f.id);
    rows.push(tr);
  }
  if (!rows.length) rows.push(row([el("span", "no failed task in the live pools", "muted")]));
  body.replaceChildren(...rows);
}
function throughput(t) {
  const text = (w) => w.done + " done, " + w.failed + " failed in the last " + dur(w.seconds);
  document.getElementById("last-minute").textContent = text(t.last_minute);
  document.getElementById("last-5-minutes").textContent = text(t.last_5_minutes);
  const svg = document.getElementById("chart"), ns = "http://www.w3.org/2000/svg";
  const width = 600, height = 60, buckets = t.buckets, slot = width / 60;
  const top = Math.max(1, ...buckets.map(b => b.done + b.failed));
  const bars = [];
  const shown = buckets.slice(-60), first = 60 - shown.length;  // the newest at the right
  shown.forEach((b, j) => {
    const i = first + j;
    for (const [kind, value, base] of [["done", b.done, 0], ["failed", b.failed, b.done]]) {
      if (!value) continue;
      const r = document.createElementNS(ns, "rect");
      const h = value / top * height, y = height - (base / top * height) - h;
      r.setAttribute("x", String(i * slot)); r.setAttribute("width", String(slot - 1));
      r.setAttribute("y", String(y)); r.setAttribute("height", String(h));
      r.setAttribute("class", kind);
      const tip = document.createElementNS(ns, "title");
      tip.textContent = value + " " + kind;
      r.append(tip);
      bars.push(r);
    }
  });
  svg.replaceChildren(...bars);
}
async function refresh() {
  const banner = document.getElementById("error");
  try {
    const reply = await fetch(api, {cache: "no-store"});
    const data = await reply.json();
    if (!reply.ok) throw new Error(data.error || reply.statusText);
    interval = Math.max(500, data.interval * 1000);
    const s = data.status;
    document.getElementById("url").textContent = s.url;
    document.getElementById("version").textContent = data.version;
    document.getElementById("updated").textContent = new Date(s.time * 1000).toLocaleTimeString();
    pools(s); queues(s); failed(s); throughput(data.throughput);
    banner.className = ""; banner.textContent = "";
  } catch (err) {
    banner.className = "shown";
    banner.textContent = "cannot refresh: " + err.message;
  }
  setTimeout(refresh, interval);
}
refresh();
"""

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>poolx dashboard</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>poolx dashboard <span class="muted">— <span id="url">connecting…</span></span></h1>
<div class="muted">poolx <span id="version">?</span>, updated <span id="updated">never</span>
  (read-only; refreshes by itself)</div>
<div id="error" role="alert"></div>
<h2>Worker pools <span class="muted">(<span id="total-done">0</span> tasks done,
  <span id="total-failed">0</span> failed since they started)</span></h2>
<table>
<thead><tr><th>name</th><th>host</th><th>pid</th><th>queue</th><th>state</th><th>workers</th>
<th>busy</th><th>uptime</th><th>heartbeat</th><th>done</th><th>failed</th><th>running</th></tr></thead>
<tbody id="pools"></tbody>
</table>
<h2>Queues</h2>
<table>
<thead><tr><th>queue</th><th>waiting</th><th>in flight</th><th>oldest task</th><th>next tasks</th></tr></thead>
<tbody id="queues"></tbody>
</table>
<h2>Recently failed tasks <span class="muted">(newest first)</span></h2>
<table>
<thead><tr><th>when</th><th>task</th><th>id</th><th>queue</th><th>pool</th><th>worker</th>
<th>error</th></tr></thead>
<tbody id="failed"></tbody>
</table>
<h2>Throughput <span class="muted">(since this dashboard started)</span></h2>
<div id="last-minute">-</div>
<div id="last-5-minutes">-</div>
<svg id="chart" width="600" height="60" viewBox="0 0 600 60" role="img"
  aria-label="tasks finished per 10 seconds, last 10 minutes"></svg>
<script>{_SCRIPT}</script>
</body>
</html>
"""
"""The page: static, so nothing user-controlled is ever part of its HTML."""

CSP = (f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"""The page's Content-Security-Policy: only its own inline script and style run."""
