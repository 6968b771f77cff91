"""examples/worq/pool.py and mem.py run as a user runs them: a fresh
interpreter, from the repository root or from the example's directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "worq"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.mark.parametrize("cwd, script", [(ROOT, "examples/worq/mem.py"), (EXAMPLE, "mem.py")])
def test_mem_example(cwd, script):
    proc = subprocess.run([sys.executable, script], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "0 + 1 + ... + 9 = 45\n", proc.stderr
    assert "WorkerPool" in proc.stderr and "stopped" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_pool_example_runs_until_signalled(tmp_path, sig):
    log = tmp_path / "stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "examples/worq/pool.py", "memory://"], cwd=ROOT,
                                env=ENV, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(lambda: "Press CTRL+C or send SIGTERM to stop" in log.read_text(), 30)
        proc.send_signal(sig)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert text.count("worker") >= 2 and "stopped" in text
    assert "Traceback" not in text
