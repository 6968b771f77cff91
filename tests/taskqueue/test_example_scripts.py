"""examples/worq runs as a user would run it: a fresh interpreter, from the
repository root and from the example's own directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "worq"


@pytest.mark.parametrize(
    "cwd, script, args",
    [
        (ROOT, "examples/worq/main.py", []),
        (EXAMPLE, "main.py", []),
        (EXAMPLE, "main.py", ["memory://elsewhere"]),
    ],
)
def test_worq_quick_start(cwd, script, args):
    # poolx is installed in the test environment; the path entry only helps
    # when the suite runs from an uninstalled source tree.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, script, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "0 + 1 + ... + 9 = 45\n", proc.stderr
