"""The import graph of the m3vit packages: the layer rule, the cycle check and the architecture figure.

Every ``import`` of an ``m3vit`` module counts, at module level or inside a function: a function-level
import may defer loading a heavy dependency (PyTorch) but never hides a cycle. The layers, lowest first::

    m3vit (root: build paths)  ←  codegen  ←  sim  ←  train, explore, host  ←  m3vit.cli, m3vit.demo

A package imports from its own layer's package and from the layers below, never from a sibling of its
layer or from above. ``python -m m3vit.imports`` prints the package graph and any violation;
``--figure PATH`` draws it (docs/architecture.png is made this way: ``make architecture``).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = "m3vit"
TOP_MODULES = ("m3vit.cli", "m3vit.demo", "m3vit.imports")
"""Modules of the top layer that live in the root folder; its other modules (e.g. the error types) are layer 0."""
ALLOWED: dict[str, frozenset[str]] = {
    "m3vit": frozenset({"m3vit"}),
    "codegen": frozenset({"m3vit", "codegen"}),
    "sim": frozenset({"m3vit", "codegen", "sim"}),
    "train": frozenset({"m3vit", "codegen", "sim", "train"}),
    "explore": frozenset({"m3vit", "codegen", "sim", "explore"}),
    "host": frozenset({"m3vit", "codegen", "sim", "host"}),
    "top": frozenset({"m3vit", "codegen", "sim", "train", "explore", "host", "top"}),
}
"""Package → the packages it may import ("m3vit" is the root module, "top" the CLI and the demo)."""
CODE_PACKAGES = ("codegen", "sim", "train", "explore", "host")
LAYER_ROW = {"m3vit": 0, "codegen": 1, "sim": 2, "train": 3, "explore": 3, "host": 3, "top": 4}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (module names) at ``line`` of the source file."""

    source: str
    target: str
    line: int


def package_of(module: str) -> str:
    """The layer package of an ``m3vit`` module name: ``m3vit.sim.rtl.runner`` → ``sim``."""
    if module in TOP_MODULES:
        return "top"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in CODE_PACKAGES else "m3vit"


def module_files() -> dict[str, Path]:
    """Module name → source file of every Python module of the code packages, the root and the top."""
    files: dict[str, Path] = {}
    root_dir = Path(importlib.util.find_spec(ROOT).origin).parent
    for path in sorted(root_dir.glob("*.py")):
        files[ROOT if path.stem == "__init__" else f"{ROOT}.{path.stem}"] = path
    for pkg in CODE_PACKAGES:
        spec = importlib.util.find_spec(f"{ROOT}.{pkg}")
        base = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            files[".".join([ROOT, pkg, *parts])] = path
    return files


def _imports(module: str, path: Path, known: set[str]) -> Iterator[Edge]:
    """Every m3vit module that ``module`` imports (``from m3vit.x import y`` counts ``m3vit.x.y`` when y
    is a module, else ``m3vit.x``)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            if name == ROOT or name.startswith(ROOT + "."):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name != module:
                    yield Edge(module, name, node.lineno)


def import_edges() -> list[Edge]:
    """All module-to-module import edges inside m3vit."""
    files = module_files()
    known = set(files)
    return [e for mod, path in files.items() for e in _imports(mod, path, known)]


def layer_violations(edges: list[Edge]) -> list[str]:
    """One line per import that goes sideways or up the layers."""
    out = []
    for e in edges:
        src, dst = package_of(e.source), package_of(e.target)
        if dst not in ALLOWED[src]:
            out.append(f"{e.source}:{e.line} imports {e.target}: {src} may import only {sorted(ALLOWED[src])}")
    return out


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(edges: list[Edge]) -> dict[tuple[str, str], int]:
    """(importing package, imported package) → number of module-level edges between them."""
    counts: dict[tuple[str, str], int] = {}
    for e in edges:
        key = (package_of(e.source), package_of(e.target))
        if key[0] != key[1]:
            counts[key] = counts.get(key, 0) + 1
    return counts


def draw(edges: list[Edge], path: str | Path) -> Path:
    """Draw the packages as boxes in their layers and the imports between them as arrows (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "m3vit": "m3vit\n(build paths)",
        "codegen": "m3vit.codegen\nconfig · numerics · layout\nhls · rtl · vivado · perf",
        "sim": "m3vit.sim\nfixed point · golden · reference\nC-sim · RTL sim",
        "train": "m3vit.train\ndata · train · metrics",
        "explore": "m3vit.explore\nDSE · schedules · reports",
        "host": "m3vit.host\nweights · driver · twin",
        "top": "m3vit.cli · m3vit.demo",
    }
    columns = {"m3vit": 1.0, "codegen": 1.0, "sim": 1.0, "train": 0.0, "explore": 1.0, "host": 2.0, "top": 1.0}
    pos = {p: (columns[p] * 3.2, LAYER_ROW[p] * 1.6) for p in labels}
    fig, ax = plt.subplots(figsize=(9, 7))
    for (src, dst), count in sorted(package_graph(edges).items()):
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        ax.annotate("", xy=(x1, y1 + 0.35), xytext=(x0, y0 - 0.35),
                    arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 0.6 + 0.15 * min(count, 12),
                                "connectionstyle": "arc3,rad=0.08"})
    for pkg, (x, y) in pos.items():
        ax.text(x, y, labels[pkg], ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.4", "fc": "#e8f0fe" if pkg != "top" else "#fde8e8", "ec": "0.3"})
    ax.set_xlim(-1.8, 8.2)
    ax.set_ylim(-0.8, 7.2)
    ax.invert_yaxis()
    ax.axis("off")
    ax.set_title("m3vit packages: an arrow points from the importer to the imported package "
                 "(width ~ module imports)", fontsize=9)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m m3vit.imports [--figure PATH]``: check the layers and cycles; optionally draw the graph."""
    ap = argparse.ArgumentParser(prog="python -m m3vit.imports", description=main.__doc__)
    ap.add_argument("--figure", help="write the package graph to this image (png/svg)")
    args = ap.parse_args(argv)
    edges = import_edges()
    for (src, dst), count in sorted(package_graph(edges).items()):
        print(f"{src:>8} -> {dst:<8} {count} imports")
    problems = layer_violations(edges) + [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    for line in problems:
        print(line, file=sys.stderr)
    if args.figure:
        print(f"wrote {draw(edges, args.figure)}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
