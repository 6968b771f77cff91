"""poolx's type hints reach its users: mypy flags a misuse of the public API.

The scripts below are what a user writes.  mypy checks them against poolx
with the user's defaults (an empty configuration), following imports into
poolx silently, as it treats an installed package that ships ``py.typed``.
A correct script must pass, so a failure on the misuse is the misuse's and
not a broken setup's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
    from poolx import Pool
    from poolx.pool import Pool as PoolToo


    def square(x: int) -> int:
        return x * x


    if __name__ == "__main__":
        with Pool(2) as pool:
            squares: list[int] = pool.map(square, range(4))
            print(sum(squares), pool.apply(square, (3,)))
        with PoolToo(1, timeout=5.0, soft_timeout=4.0, memory_limit="1GB") as other:
            print(other.starmap(pow, [(2, 3)]))
"""

MISUSE = """
    from poolx import Pool
    from poolx.pool import Pool as PoolToo


    def square(x: int) -> int:
        return x * x


    if __name__ == "__main__":
        with Pool(2) as pool:
            total: int = pool.map(square, range(4))  # MISUSE: map returns a list
            doubled = pool.map(square, range(4)) + 1  # MISUSE: list + int
        with PoolToo(1) as other:
            late: int = other.starmap(pow, [(2, 3)])  # MISUSE: starmap returns a list
        Pool(processes="2")  # MISUSE: processes is an int
"""


def _mypy(tmp_path: Path, **scripts: str) -> tuple[int, str]:
    for name, source in scripts.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")  # the user's defaults, not poolx's own strictness
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--follow-imports=silent",
         "--cache-dir", str(tmp_path / ".mypy_cache"), "--no-error-summary",
         *(f"{name}.py" for name in scripts)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    return out.returncode, out.stdout + out.stderr


def _misuse_lines(source: str) -> set[int]:
    lines = textwrap.dedent(source).splitlines()
    return {number for number, line in enumerate(lines, 1) if "# MISUSE" in line}


def test_pool_results_are_typed_for_users(tmp_path):
    status, output = _mypy(tmp_path, good=GOOD, misuse=MISUSE)
    errors = [line for line in output.splitlines() if ": error:" in line]
    assert not [e for e in errors if e.startswith("good.py")], output
    flagged = {int(m.group(1)) for e in errors if (m := re.match(r"misuse\.py:(\d+):", e))}
    assert flagged == _misuse_lines(MISUSE), output
    assert status == 1, output
    assert 'expression has type "list[Any]", variable has type "int"' in output, output


def test_py_typed_marker_ships_with_the_package():
    assert (ROOT / "poolx" / "py.typed").is_file()
