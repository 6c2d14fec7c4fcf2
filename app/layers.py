"""The house's dependency rule, read from the code: which package may import which.

``python -m app.layers`` prints every package's imports (top-level and inside functions alike)
and each edge that breaks the rule below or closes a circle between two modules; it exits 1 if
there is one. ``tests/test_layers.py`` runs the same check. Standard library only.

A package is a sub-package of ``app`` (``app/engine/``) or a top-level module (``app/harness.py``).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

__all__ = ["ALLOWED", "module_imports", "package_edges", "violations", "cycles", "main"]

#: Each package and the packages it may import, bottom of the house first. ``app`` itself
#: (``app/__init__.py``: the version) may be imported by anyone.
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "router": {"model"},
    "engine": {"model", "router"},
    "compiler": {"engine", "router", "model"},
    "measure": {"engine", "router", "model"},
    "serving": {"measure", "engine", "model"},
    "harness": {"router", "model"},
    "harness_real": {"harness", "router", "model"},
    "widgets": {"serving", "measure", "router", "model"},  # the first two only in server mode
    "web": set(),
    "main": {"widgets"},
    "paper": {"widgets"},
    "embed": {"widgets"},
    "layers": set(),
    "cli": {
        "compiler",
        "engine",
        "harness",
        "harness_real",
        "measure",
        "model",
        "router",
        "serving",
        "widgets",
    },  # fmt: skip
    "backend": {"cli"},  # only ``python -m app.backend``
}
ROOT = Path(__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ("app", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: {imported app modules}}`` for every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        mod = _module_name(path)
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import x`
        out[mod] = {m for m in found if m == "app" or m.startswith("app.")}
    known = set(out)
    return {m: {t for t in ts if t in known and t != m} for m, ts in out.items()}


def _package(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "app"


def package_edges(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """``{package: {packages it imports}}``, ``app`` itself left out."""
    edges = defaultdict(set)
    for mod, targets in imports.items():
        for t in targets:
            src, dst = _package(mod), _package(t)
            if src != dst and dst != "app":
                edges[src].add(dst)
    return dict(edges)


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Edges the rule does not allow (a package missing from ``ALLOWED`` allows nothing)."""
    return [f"{src} -> {dst}" for src in sorted(edges) for dst in sorted(edges[src])
            if dst not in ALLOWED.get(src, set())]  # fmt: skip


def cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """Circles between modules (Tarjan's strongly connected components of size > 1)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in imports.get(v, ()):
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

    for v in sorted(imports):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    imports = module_imports()
    edges = package_edges(imports)
    for src in sorted(edges):
        print(f"{src:13} -> {', '.join(sorted(edges[src]))}")
    bad, circles = violations(edges), cycles(imports)
    for edge in bad:
        print(f"not allowed: {edge}")
    for circle in circles:
        print(f"circle: {' <-> '.join(circle)}")
    print("ok: no upward import, no circle" if not (bad or circles) else "FAILED")
    return 1 if bad or circles else 0


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    sys.exit(main())
