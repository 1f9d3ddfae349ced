"""Import direction (DESIGN.md section 1): no import circles inside molvae, nothing imports the
CLI, model.py imports only torch and config, and generation never loads the training code.

The graph is read from the source with ``ast``, so it covers every module as it is on disk
(new ones included) and every import in it: at module level, inside functions, under ``if``
or ``try``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "molvae"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. "molvae.cli"
    target: str  # imported molvae module, e.g. "molvae.config"; "molvae" is the package
    where: str  # "molvae/cli.py:17"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.where})"


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its __init__.py)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _edges(modules: dict[str, Path]) -> list[Edge]:
    """Imports of molvae modules by molvae modules; every submodule's implicit import of its
    parent package is left out (it is not a choice the module makes)."""
    edges = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    # `from . import x` names a submodule when there is one, else an attribute
                    # of base (and then base itself is what gets imported)
                    targets.append(sub if sub in modules else base)
            where = f"{path.relative_to(ROOT.parent)}:{getattr(node, 'lineno', 0)}"
            for target in targets:
                # `import molvae.a.b` imports molvae.a.b; keep the longest known module name
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.append(Edge(name, target, where))
    return edges


def _cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component that has one (Tarjan)."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, []).append(e)
        graph.setdefault(e.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in graph[v]:
            if e.target not in index:
                connect(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in on_stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for comp in components:
        # a shortest way back to the start, by breadth-first search inside the component
        start = min(comp)
        paths: dict[str, list[Edge]] = {start: []}
        queue = [start]
        found: list[Edge] | None = None
        while queue and found is None:
            v = queue.pop(0)
            for e in graph[v]:
                if e.target == start:
                    found = [*paths[v], e]
                    break
                if e.target in comp and e.target not in paths:
                    paths[e.target] = [*paths[v], e]
                    queue.append(e.target)
        assert found is not None
        cycles.append(found)
    return cycles


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Edge]]:
    modules = _modules()
    return modules, _edges(modules)


def test_the_graph_reader_sees_the_imports(graph):
    """A guard for the reader itself: known edges of each kind are found."""
    modules, edges = graph
    assert {"molvae", "molvae.cli", "molvae.config", "molvae.model", "molvae.pretrained"} <= set(
        modules)
    pairs = {(e.source, e.target) for e in edges}
    assert ("molvae.model", "molvae.config") in pairs  # from .config import ModelConfig
    assert ("molvae.cli", "molvae.cli_generate") in pairs  # from . import cli_generate, in a def
    assert ("molvae.pretrained", "molvae.checkpoint") in pairs  # from ..checkpoint import ...
    assert ("molvae", "molvae.generate") in pairs


def test_no_import_circles(graph):
    _, edges = graph
    cycles = _cycles(edges)
    assert not cycles, "import circles:\n" + "\n".join(
        "  " + "  =>  ".join(map(str, cycle)) for cycle in cycles)


def test_nothing_imports_the_cli(graph):
    _, edges = graph
    bad = [e for e in edges if e.target == "molvae.cli" and e.source != "molvae.__main__"]
    assert not bad, "\n".join(map(str, bad))


def test_model_imports_only_torch_and_config():
    tree = ast.parse((ROOT / "model.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    assert found <= {"torch", "__future__", ".config"}, sorted(found)


def test_usage_error_lives_in_config_and_the_cli_re_exports_it():
    from molvae import cli, config
    assert cli.UsageError is config.UsageError


def _fresh_python(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_import_and_sample_command_leave_the_training_code_unloaded(tmp_path):
    """`import molvae` and `molvae sample` do not import molvae.train; `molvae.train` and
    `molvae.TrainingError` still work, also once the submodule is loaded."""
    out = tmp_path / "s.smi"
    code = f"""
import sys
import molvae
assert "molvae.train" not in sys.modules, "import molvae"
from molvae import cli_generate
from molvae.cli import main
assert main(["-q", "sample", "-n", "3", "--seed", "0", "-o", {str(out)!r}]) == 0
assert "molvae.train" not in sys.modules, "molvae sample"
assert issubclass(molvae.TrainingError, RuntimeError)
import molvae.train
from molvae.train import TrainResult
assert callable(molvae.train) and molvae.train.__module__ == "molvae.train", molvae.train
assert "train" in molvae.__all__ and "TrainingError" in molvae.__all__
print("ok")
"""
    assert _fresh_python(code).strip() == "ok"
    assert out.exists()
