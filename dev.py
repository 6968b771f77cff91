#!/usr/bin/env python3
"""Developer entry point: the README's two commands, and CI's helpers.

    python3 dev.py demo     run the demo (embedded memory:// broker, no server)
    python3 dev.py test     run the whole test suite (extra args go to pytest)
    python3 dev.py docs     build the Sphinx docs, warnings as errors
    python3 dev.py lint     ruff
    python3 dev.py bench    run the benchmarks in benchmarks/

Every command creates (or refreshes, when pyproject.toml changed) a virtual
environment in ``.venv`` and installs poolx into it in editable mode, so the
only thing a fresh machine needs is Python 3.10+.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
PY = BIN / "python"
STAMP = VENV / ".poolx-installed"


def _run(*cmd: object, **kw) -> int:
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


def ensure_venv(extras: str) -> None:
    """Create .venv and install ``poolx[extras]`` unless already up to date."""
    want = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + extras.encode()
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print(f"dev.py: creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"dev.py: installing poolx[{extras}] into {VENV}", flush=True)
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if _run(*pip, "--upgrade", "pip") != 0 or _run(*pip, "-e", f".[{extras}]") != 0:
        sys.exit("dev.py: installing dependencies failed")
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "demo":
        ensure_venv("test")
        return _run(PY, "examples/demo.py", *rest)
    if command == "test":
        ensure_venv("test")
        return _run(PY, "-m", "pytest", *rest)
    if command == "docs":
        ensure_venv("test,docs")
        return _run(PY, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
                    "docs", "docs/_build/html", *rest)
    if command == "lint":
        ensure_venv("test")
        return _run(BIN / "ruff", "check", "poolx", "tests", "examples",
                    "benchmarks", "dev.py", *rest)
    if command == "bench":
        ensure_venv("test,bench,progress")
        status = 0
        scripts = rest or sorted(str(p) for p in (ROOT / "benchmarks").glob("bench_*.py"))
        for script in scripts:
            status |= _run(PY, script, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return status
    print(f"dev.py: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
