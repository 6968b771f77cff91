"""The plain WorQ API on Redis (``q.f(x)`` one by one, ``d.wait()`` one by
one): enqueue is one durable round trip per task, and waiting prefetches the
client's other finished results (issue 11); read results are deleted
(issue 18)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from poolx import get_broker
from tests.taskqueue.helpers import WAIT

ROOT = Path(__file__).resolve().parents[2]

PRODUCER = """
import sys
from poolx import get_queue
q = get_queue(sys.argv[1])
ids = [q.rt.square(i).id for i in range(int(sys.argv[2]))]
sys.stdout.write(" ".join(ids) + "\\n")
sys.stdout.flush()
sys.stdin.read()  # killed here: nothing after the calls returned may be needed
"""


def test_a_producer_killed_right_after_its_enqueue_calls_loses_nothing(url):
    """Enqueue is durable when the call returns: no buffer, no thread that
    would send the tasks later."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, url, "300"], cwd=ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path},
    )
    try:
        assert proc.stdout is not None
        ids = proc.stdout.readline().split()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(WAIT)
    assert proc.returncode == -signal.SIGKILL
    assert len(ids) == 300
    queue = get_broker(url).taskqueue
    assert queue.size() == 300
    assert {queue.get_status(task_id.decode()) for task_id in ids} == {"enqueued"}
