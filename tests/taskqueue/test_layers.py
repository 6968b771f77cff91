"""The layering of DESIGN.md holds: every import in poolx, at module level,
inside a function or under TYPE_CHECKING, goes to the same layer or below,
and only the consumer and the pools (L6+) touch the engine's public API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "poolx"

LAYERS = [  # (layer, module prefixes), lowest first
    (0, ["poolx.exceptions", "poolx.const", "poolx.checks"]),
    (1, ["poolx.engine"]),
    (2, ["poolx.task"]),
    (3, ["poolx.serialization"]),
    (4, ["poolx.queue"]),
    (5, ["poolx.core"]),
    (6, ["poolx.consumer"]),
    (7, ["poolx.pool"]),
    (8, ["poolx.cli", "poolx.__main__", "poolx"]),  # the package facade re-exports both faces
]
ENGINE_PUBLIC = {"poolx.engine.api", "poolx.engine.results", "poolx.engine.pickling"}


def layer_of(module: str) -> int:
    best = (-1, 0)
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), layer))
    assert best[0] >= 0, f"{module} is in no layer"
    return best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    """Every poolx module ``path`` (in ``package``) imports, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # "from pkg import submodule" imports the submodule
                found.append((node.lineno, f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}")
                              else base))
    return [(line, name) for line, name in found if name == "poolx" or name.startswith("poolx.")]


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down(path):
    me = module_name(path)
    mine = layer_of(me)
    wrong = []
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for line, target in imports(path, package):
        theirs = layer_of(target)
        if theirs > mine:
            wrong.append(f"line {line}: {target} (L{theirs}) from L{mine}")
        elif theirs == 1 and mine != 1 and not (mine >= 6 and target in ENGINE_PUBLIC):
            wrong.append(f"line {line}: {target}, the engine's insides, from L{mine}")
    assert not wrong, f"{me} imports upward:\n" + "\n".join(wrong)


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from poolx.core import Broker\n"
        "def f():\n    import poolx.consumer.adapter\n"
    )
    found = [name for _, name in imports(sample, "poolx")]
    assert found == ["poolx.core", "poolx.consumer.adapter"]
