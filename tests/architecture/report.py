"""The shape of the ``edge`` package: which layer imports which, and the largest classes and functions.

Run ``python -m tests.architecture.report`` from the repository root (add ``--root DIR`` to
read another checkout, e.g. an older commit in a ``git worktree``). It reads the source with
``ast`` and imports nothing, so it works on any revision.

Layers, lowest first; a module may import only from its own layer or lower ones, and the
two members of a layer joined by ``|`` not from each other. ``pyproject.toml`` states the
same order as an import-linter contract, which ``tests/architecture/test_layers.py`` enforces.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

LAYERS: list[tuple[tuple[str, ...], bool]] = [
    (("edge.config", "edge.codecs", "edge._lru", "edge"), False),
    (("edge.http",), False),
    (("edge.cache",), False),
    (("edge.upstream",), False),
    (("edge.core",), False),
    (("edge.fronts", "edge.admin", "edge.serve"), True),  # edge.serve: the old home of fronts and wiring
    (("edge.wiring",), False),
    (("edge.cli", "edge.demo"), False),
]
"""Lowest first, each with whether its groups must not import each other. ``edge.serve`` only
exists in checkouts from before the split; ``edge`` is the package's own ``__init__``."""


def layer_of(module: str) -> tuple[int, str]:
    """(rank, group) of a module: the group is the top-level part of ``edge`` it belongs to."""
    for rank, (groups, _) in enumerate(LAYERS):
        for group in groups:
            if module == group or (group != "edge" and module.startswith(group + ".")):
                return rank, group
    return -1, module


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted((root / "edge").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Modules of ``edge`` imported by one module, ``TYPE_CHECKING`` blocks included."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in out if m == "edge" or m.startswith("edge.")}


def graph(root: Path) -> Counter[tuple[str, str]]:
    """Import edges between groups (module pairs counted once each)."""
    mods = modules(root)
    edges: Counter[tuple[str, str]] = Counter()
    for name, path in mods.items():
        src = layer_of(name)[1]
        targets = {layer_of(t)[1] for t in imports_of(name, path) if t in mods}
        for dst in targets - {src}:
            edges[src, dst] += 1
    return edges


def sizes(root: Path, top: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The ``top`` largest classes and functions in lines (a class counts its methods' lines)."""
    classes, functions = [], []
    for name, path in modules(root).items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes.append((_lines(node), f"{name}.{node.name}"))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((_lines(node), f"{name}:{node.name}"))
    return sorted(classes, reverse=True)[:top], sorted(functions, reverse=True)[:top]


def _lines(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return (node.end_lineno or node.lineno) - node.lineno + 1


def inherited_size(root: Path, class_name: str) -> int:
    """Lines of a class plus every class it inherits from inside ``edge`` (a mixin chain is one class)."""
    defs: dict[str, tuple[int, list[str]]] = {}
    for path in modules(root).values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                defs[node.name] = (_lines(node), bases)
    total, todo, seen = 0, [class_name], set()
    while todo:
        current = todo.pop()
        if current in seen or current not in defs:
            continue
        seen.add(current)
        lines, bases = defs[current]
        total += lines
        todo.extend(bases)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path.cwd(), help="checkout to read (default: .)")
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    edges = graph(args.root)
    print("imports between layers (importer -> imported: modules), lowest layer first")
    upward = 0
    for (src, dst), count in sorted(edges.items(), key=lambda e: (layer_of(e[0][0])[0], e[0])):
        rank_src, rank_dst = layer_of(src)[0], layer_of(dst)[0]
        verdict = ""
        if rank_dst > rank_src:
            verdict, upward = "  UPWARD", upward + count
        elif rank_dst == rank_src and LAYERS[rank_src][1]:
            verdict, upward = "  SIBLING", upward + count
        print(f"  {src:14s} -> {dst:14s} {count:3d}{verdict}")
    print(f"modules importing upward or sideways: {upward}")
    classes, functions = sizes(args.root, args.top)
    print("largest classes (lines):")
    for length, name in classes:
        print(f"  {length:5d}  {name}")
    print(f"  EdgeCore with the classes it inherits from: {inherited_size(args.root, 'EdgeCore')} lines")
    print("largest functions (lines):")
    for length, name in functions:
        print(f"  {length:5d}  {name}")


if __name__ == "__main__":
    main()
