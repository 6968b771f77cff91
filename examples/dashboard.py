"""The dashboard from Python: a DashboardServer on a free loopback port,
read through its JSON endpoint (what the page polls) with a token."""

import json
import threading
import urllib.error
import urllib.request

from poolx.core import get_broker
from poolx.dashboard import DashboardServer
from poolx.status import StatusReader

url = "memory://dashboard-example"
get_broker(url).queue("reports.build")(2026)  # a task waiting in queue "default"

print(StatusReader(url).read(tasks=5)["queues"]["default"]["waiting"], "task waiting")

server = DashboardServer(StatusReader(url), ("127.0.0.1", 0), token="s3cret")
threading.Thread(target=server.serve_forever, daemon=True).start()
with urllib.request.urlopen(server.url + "api/status?token=s3cret") as reply:
    status = json.load(reply)["status"]
print([task["name"] for task in status["queues"]["default"]["tasks"]])
try:
    urllib.request.urlopen(server.url + "api/status")
except urllib.error.HTTPError as err:
    print("without the token:", err.code)
server.shutdown()
server.server_close()
