#!/usr/bin/env python3
"""Developer entry point: the README's two commands, and CI's helpers.

    python3 dev.py demo     run the demo (embedded memory:// broker, no server)
    python3 dev.py test     run the whole test suite (extra args go to pytest;
                            the fast suite: python3 dev.py test -m "not soak")
    python3 dev.py docs     build the Sphinx docs, warnings as errors
    python3 dev.py lint     ruff, mypy and the layering contracts (import-linter);
                            extra args go to ruff
    python3 dev.py bench    run the benchmarks in benchmarks/ (or the .py files
                            given; other args go to each script)

Every command uses one virtual environment in ``.venv`` with poolx installed
in editable mode and *all* the development extras (test, docs, bench,
progress, metrics): it is built once, and rebuilt only when pyproject.toml changes,
so switching between commands never reinstalls anything.  The only thing a
fresh machine needs is Python 3.10+.
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
# One superset for every command: the key of the installed state is
# pyproject.toml's hash alone, so `test` after `docs` after `bench` is free.
EXTRAS = "test,docs,bench,progress,metrics"


def _run(*cmd: object, **kw: object) -> int:
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)  # type: ignore[call-overload]


def _install_key() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()


def ensure_venv() -> None:
    """Create .venv and install ``poolx[EXTRAS]`` unless already up to date."""
    want = _install_key()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print(f"dev.py: creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"dev.py: installing poolx[{EXTRAS}] into {VENV} (once per pyproject.toml change)",
          flush=True)
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if _run(*pip, "--upgrade", "pip") != 0 or _run(*pip, "-e", f".[{EXTRAS}]") != 0:
        sys.exit("dev.py: installing dependencies failed")
    STAMP.write_text(want)


def lint(ruff_args: list[str]) -> int:
    """ruff, then mypy, then the layering contracts; all run, any failure fails."""
    checks = {
        "ruff": [BIN / "ruff", "check", "poolx", "tests", "examples", "benchmarks", "dev.py",
                 *ruff_args],
        # [tool.mypy] in pyproject.toml: strict on the public API modules.
        "mypy": [PY, "-m", "mypy"],
        # [tool.importlinter] in pyproject.toml; tests/test_layers.py adds the
        # imports a static graph cannot see (lazy re-exports, importlib).
        "layers": [BIN / "lint-imports", "--no-cache"],
    }
    failed = []
    for name, command in checks.items():
        print(f"dev.py lint: {name}", flush=True)
        if _run(*command) != 0:
            failed.append(name)
    if failed:
        print(f"dev.py lint: FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in {"demo", "test", "docs", "lint", "bench"}:
        print(f"dev.py: unknown command {command!r}\n{__doc__}", file=sys.stderr)
        return 2
    ensure_venv()
    if command == "demo":
        return _run(PY, "examples/demo.py", *rest)
    if command == "test":
        return _run(PY, "-m", "pytest", *rest)
    if command == "docs":
        return _run(PY, "-m", "sphinx", "-W", "--keep-going", "-E", "-b", "html",
                    "docs", "docs/_build/html", *rest)
    if command == "lint":
        return lint(rest)
    # bench: unbuffered, so every row shows as soon as it is measured.
    # Arguments naming .py files choose the scripts; the others go to each script.
    status = 0
    scripts = [a for a in rest if a.endswith(".py")]
    script_args = [a for a in rest if not a.endswith(".py")]
    if not scripts:
        scripts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("bench_*.py"))
    for script in scripts:
        print(f"dev.py bench: {script}", flush=True)
        status |= _run(PY, "-u", script, *script_args, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
