"""The layering contracts hold, counting the imports a static graph cannot see.

``python3 dev.py lint`` runs import-linter on the contracts in pyproject.toml
(``[tool.importlinter]``: one folder per layer, imports only downward; the
task layer never imports the engine; outside the engine only its public
modules).  import-linter reads ``import`` statements, so two ways of reaching
a module escape it:

* the package roots' lazy re-exports (PEP 562): ``from poolx import Pool`` in
  a module is, to the graph, an import of ``poolx``; at run time it loads
  ``poolx.engine.api``.  ``poolx.pool`` does the same for the engine's names;
* ``importlib.import_module("poolx.x")`` and ``pkgutil.resolve_name("poolx.x:y")``
  with a literal name.

This test builds the same graph (grimp, as import-linter does), adds those
hidden imports to it, and checks every contract of pyproject.toml on it with
import-linter's own contract classes, so the rules live in one place.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grimp
import pytest
from importlinter.api import read_configuration
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.independence import IndependenceContract
from importlinter.contracts.layers import LayersContract
from importlinter.contracts.private_modules import PrivateModulesContract
from importlinter.contracts.protected import ProtectedContract

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_TYPES = {
    "layers": LayersContract,
    "forbidden": ForbiddenContract,
    "protected": ProtectedContract,
    "independence": IndependenceContract,
    "private_modules": PrivateModulesContract,
    "acyclic_siblings": AcyclicSiblingsContract,
}
DYNAMIC_IMPORTERS = {"import_module", "__import__", "resolve_name"}


@dataclass(frozen=True)
class HiddenImport:
    importer: str
    imported: str
    line_number: int
    line_contents: str


# ------------------------------------------------------------------ finding hidden imports


def _modules(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def _lazy_exports(tree: ast.Module) -> dict[str, str]:
    """A package's PEP 562 table: exported name -> module, if it has ``__getattr__``.

    The table is a module-level dict literal of string constants (``_LAZY``).
    """
    if not any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
               for node in tree.body):
        return {}
    table: dict[str, str] = {}
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if not isinstance(value, ast.Dict):
            continue
        pairs = [(k.value, v.value) for k, v in zip(value.keys, value.values, strict=True)
                 if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)]
        if pairs and len(pairs) == len(value.keys) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in pairs):
            table.update(pairs)
    return table


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def find_hidden_imports(package_dir: Path, package: str) -> Iterator[HiddenImport]:
    """Imports through lazy re-exports and literal dynamic imports, per module."""
    modules = _modules(package_dir, package)
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    lazy = {name: table for name, tree in trees.items() if (table := _lazy_exports(tree))}
    for name, table in lazy.items():  # the package itself depends on what it re-exports
        for target in set(table.values()):
            if target.split(".")[0] == package:
                yield HiddenImport(name, target, 1, f"{name}.__getattr__ re-exports {target}")
    for name, tree in trees.items():
        is_package = modules[name].name == "__init__.py"
        lines = modules[name].read_text().splitlines()
        aliases: dict[str, str] = {}  # local name -> module, for `import poolx` and the like
        hidden: list[tuple[str, ast.AST]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        head = alias.name.split(".")[0]
                        aliases[head] = head
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(name, is_package, node)
                for alias in node.names:
                    if source in lazy and alias.name in lazy[source]:
                        hidden.append((lazy[source][alias.name], node))
                    elif f"{source}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Call) and node.args:
                func = _dotted(node.func) or ""
                arg = node.args[0]
                if func.rsplit(".", 1)[-1] in DYNAMIC_IMPORTERS and isinstance(arg, ast.Constant) \
                        and isinstance(arg.value, str):
                    target = arg.value.split(":")[0]
                    if target.split(".")[0] == package:
                        hidden.append((target, node))
        for node in ast.walk(tree):  # poolx.Pool, poolx.pool.Pool, after `import poolx`
            if isinstance(node, ast.Attribute) and (dotted := _dotted(node)):
                head, _, rest = dotted.partition(".")
                if head not in aliases or not rest:
                    continue
                full = f"{aliases[head]}.{rest}"
                owner, _, attr = full.rpartition(".")
                if owner in lazy and attr in lazy[owner]:
                    hidden.append((lazy[owner][attr], node))
        seen = set()
        for target, node in hidden:
            line = getattr(node, "lineno", 1)
            if target != name and (target, line) not in seen:
                seen.add((target, line))
                yield HiddenImport(name, target, line, lines[line - 1].strip())


# ------------------------------------------------------------------ checking the contracts


def broken_contracts(package: str, config: Path, hidden: list[HiddenImport]) -> list[str]:
    """Check every contract of ``config`` on the static graph plus ``hidden``."""
    configuration = read_configuration(config_filename=str(config))
    session = configuration["session_options"]
    graph = grimp.build_graph(
        package, include_external_packages=str(session.get("include_external_packages")) == "True",
        cache_dir=None)
    for edge in hidden:
        graph.add_import(importer=edge.importer, imported=edge.imported,
                         line_number=edge.line_number, line_contents=edge.line_contents)
    broken = []
    for options in configuration["contracts_options"]:
        options = dict(options)
        contract_type, name = options.pop("type"), options.pop("name")
        options.pop("id", None)
        contract = CONTRACT_TYPES[contract_type](name, session, options)
        check = contract.check(graph, verbose=False)
        if not check.kept:
            contract.render_broken_contract(check)  # printed: pytest shows it on failure
            broken.append(name)
    return broken


def test_poolx_keeps_its_layers_counting_lazy_and_dynamic_imports(capsys):
    hidden = list(find_hidden_imports(ROOT / "poolx", "poolx"))
    # The finder sees the roots' re-exports (so it is looking at the real tables).
    assert HiddenImport("poolx", "poolx.engine.api", 1,
                        "poolx.__getattr__ re-exports poolx.engine.api") in hidden
    assert any(h.importer == "poolx.pool" and h.imported == "poolx.engine.results"
               for h in hidden)
    broken = broken_contracts("poolx", ROOT / "pyproject.toml", hidden)
    report = capsys.readouterr().out
    uses = "\n".join(f"  {h.importer} -> {h.imported} (l.{h.line_number}: {h.line_contents})"
                     for h in hidden)
    assert not broken, f"broken: {broken}\n{report}\nimports through lazy re-exports:\n{uses}"


# ------------------------------------------------------------------ the checker can fail

SAMPLE_CONFIG = """
[tool.importlinter]
root_package = "samplepkg"

[[tool.importlinter.contracts]]
name = "layers"
type = "layers"
layers = ["samplepkg.high", "samplepkg.low"]
"""

SAMPLE_ROOT = '''
"""A root that re-exports lazily, as poolx does."""
from typing import Any

_LAZY = {"Thing": "samplepkg.high", "Base": "samplepkg.low"}


def __getattr__(name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
'''


@pytest.fixture
def sample(tmp_path, monkeypatch):
    """A package ``samplepkg`` with layers high > low; each test writes low."""
    package = tmp_path / "samplepkg"
    package.mkdir()
    (package / "__init__.py").write_text(SAMPLE_ROOT)
    (package / "high.py").write_text("from samplepkg.low import Base\n\nclass Thing(Base):\n    pass\n")
    (tmp_path / "pyproject.toml").write_text(SAMPLE_CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path))

    def check(low_source: str) -> tuple[list[HiddenImport], list[str]]:
        (package / "low.py").write_text(textwrap.dedent(low_source))
        for module in [m for m in sys.modules if m.split(".")[0] == "samplepkg"]:
            del sys.modules[module]
        hidden = list(find_hidden_imports(package, "samplepkg"))
        return hidden, broken_contracts("samplepkg", tmp_path / "pyproject.toml", hidden)

    return check


def test_a_clean_sample_keeps_its_layers(sample):
    hidden, broken = sample("class Base:\n    pass\n")
    assert broken == []
    assert {(h.importer, h.imported) for h in hidden} == {
        ("samplepkg", "samplepkg.high"), ("samplepkg", "samplepkg.low")}


@pytest.mark.parametrize("source", [
    # through the root's lazy re-export, in a function (a static graph sees `samplepkg`)
    """
    class Base:
        def make(self):
            from samplepkg import Thing
            return Thing()
    """,
    # the same, as an attribute of the imported root
    """
    import samplepkg

    class Base:
        def make(self):
            return samplepkg.Thing()
    """,
    # a literal dynamic import, in a function
    """
    import importlib

    class Base:
        def make(self):
            return importlib.import_module("samplepkg.high").Thing()
    """,
    # pkgutil's module:attribute form
    """
    import pkgutil

    class Base:
        def make(self):
            return pkgutil.resolve_name("samplepkg.high:Thing")()
    """,
    # and a plain function-level import (import-linter's own ground)
    """
    class Base:
        def make(self):
            from samplepkg.high import Thing
            return Thing()
    """,
])
def test_an_upward_import_breaks_the_layers(sample, source):
    _, broken = sample(source)
    assert broken == ["layers"]
