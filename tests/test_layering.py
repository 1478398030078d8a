"""The package's import graph has no cycles, counting imports made inside functions too (a lazy
import hides a cycle from Python, not from the reader), and its layers import only downwards.

    python tests/test_layering.py        # prints every module's degenbench imports, then any cycle
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "degenbench"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the degenbench modules it imports (anywhere in its body)."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from degenbench.x import y` names module x.y when y is a submodule
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan). A package's
    __init__ re-exporting its submodules is not a cycle: edges from a submodule to its own
    package's __init__ are dropped (importing a.b runs a/__init__ first either way)."""
    edges = {m: {d for d in ds if not m.startswith(d + ".")} for m, ds in graph.items()}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "degenbench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from degenbench.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from degenbench import a\n")
    (pkg / "c.py").write_text("import degenbench.a\n")
    assert cycles(import_graph(pkg)) == [["degenbench.a", "degenbench.b"]]


def test_degenbench_has_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


# The package's layers, lowest first: a module imports its own layer and the ones below, never above.
LAYERS = [
    ("degenbench.config", "degenbench.io", "degenbench.extension", "degenbench.conf"),  # settings, files, _target_
    ("degenbench.documents",),   # pages and truths, from any source
    ("degenbench.metrics",),     # the degeneration rule, CER, the paper's score
    ("degenbench.models",),      # architectures, families, stand-ins, snapshots, reference systems
    ("degenbench.decoding",),    # generation (transformers, vLLM), LoopStop, mitigations
    ("degenbench.tracking",),    # provenance and W&B
    ("degenbench.stages",),      # the stage graph: data -> SFT -> candidates -> pairs -> DPO -> eval
    ("degenbench.analysis",),    # runs -> tables, figures, the report
    ("degenbench.sweep", "degenbench.tools", "degenbench.cli", "degenbench.__main__"),  # commands
]


def layer(module: str) -> int:
    if module == "degenbench":  # the package's face: its version
        return 0
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_layers_import_only_downwards():
    graph = import_graph()
    up = [(m, d) for m, deps in graph.items() if m != "degenbench" for d in deps if layer(d) > layer(m)]
    assert not up, f"imports from a lower layer into a higher one: {up}"


def test_the_checker_finds_an_upward_import():
    assert layer("degenbench.models.families") < layer("degenbench.decoding.generate")
    graph = {"degenbench.models.families": {"degenbench.decoding.vllm"}}
    assert [(m, d) for m, ds in graph.items() for d in ds if layer(d) > layer(m)]


def test_evaluation_is_a_stage():
    graph = import_graph()
    assert "degenbench.stages.evaluate" in graph and "degenbench.evaluate" not in graph


def test_architecture_adapters_are_a_low_layer():
    """degenbench/models/arch/ is asked by the stages, the loaders and the backends: it asks none of them."""
    graph = import_graph()
    arch = {m for m in graph if m == "degenbench.models.arch" or m.startswith("degenbench.models.arch.")}
    assert {"degenbench.models.arch.base", "degenbench.models.arch.qwen2_5_vl", "degenbench.models.arch.gemma3"} <= arch
    assert all(graph[m] <= arch for m in arch), {m: graph[m] - arch for m in arch}


if __name__ == "__main__":
    g = import_graph()
    for m in sorted(g):
        print(f"{m}: {', '.join(sorted(g[m])) or '-'}")
    print("cycles:", cycles(g) or "none")
