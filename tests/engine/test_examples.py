"""The pool examples run as a user would run them, and say what they should."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_example(path: str) -> str:
    out = subprocess.run([sys.executable, path], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize(
    "path, expected",
    [
        ("examples/pool/timeouts.py", ["slow job: stopped early", "hard limit: TimeLimitExceeded",
                                       "map: ['done', 'stopped early, partial results saved', 'done']"]),
        ("examples/pool/memory_limits.py", ["stopped: worker", "the pool goes on: 6",
                                            "workers used for 4 leaky tasks: 2"]),
        ("examples/pool/lifecycle.py", ["jobs ran in 1 worker(s)", "processes: 1 completed: 4",
                                        "exited with code 0"]),
        ("examples/futures/asyncio_app.py", ["fib(20..24): [6765, 10946, 17711, 28657, 46368]",
                                             "only its call failed: WorkerLostError",
                                             "the executor goes on: 55",
                                             "hard time limit: the call was stopped",
                                             "request timed out: its call was terminated too",
                                             "the next call: 610",
                                             "calls still running in the workers: 0"]),
        ("examples/demo.py", ["a worker died mid-job; only its job failed",
                              "...and the pool goes on: 144",
                              "0 + 1 + ... + 9 = 45",
                              "failed, clearly: demo.kill_worker", "WorkerLostError",
                              "failed, clearly: demo.forever", "TimeLimitExceeded",
                              "the workers go on: yes"]),
    ],
)
def test_example(path, expected):
    output = run_example(path)
    for text in expected:
        assert text in output, output
