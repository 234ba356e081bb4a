"""The package's import graph, read from the source (every `import` statement, including the
ones inside functions): the core (`serm/`) never imports the orchestrators (`pipelines/`) or
the CLI, and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGES = ("serm", "monitoring", "pipelines")


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t in modules and t != name)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read_from_the_source():
    g = _graph()
    assert "serm.round" in g and "serm.stages" in g["serm.round"] and "serm.schema" in g["serm.stages"]
    assert "pipelines.runtime" in g["pipelines.evolution"]


def test_the_core_never_imports_the_orchestrators_or_the_cli():
    bad = {m: sorted(d for d in deps if d.startswith("pipelines") or d == "serm.cli")
           for m, deps in _graph().items() if m.startswith("serm") and m != "serm.cli"}
    assert {m: d for m, d in bad.items() if d} == {}


def test_there_is_no_import_cycle():
    g = _graph()
    # A package's __init__ importing its own submodules (the agent registries) is not a cycle
    # between modules of different jobs: drop package -> own-submodule edges.
    pruned = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in g.items()}
    assert _cycles(pruned) == []
