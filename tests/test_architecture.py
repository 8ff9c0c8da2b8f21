"""docs/architecture.md stays the truth: its diagram names every module, and module-level
imports only go to earlier layers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "crosslab"
DOC = ROOT / "docs" / "architecture.md"
# Node ids of the diagram that stand for a package or several modules.
ALIASES = {"data_pkg": "data", "commands": "commands"}


def _layers() -> dict[str, int]:
    """Module -> layer index from the first Mermaid block (foundations: -1)."""
    block = DOC.read_text(encoding="utf-8").split("```mermaid", 1)[1].split("```", 1)[0]
    layers: dict[str, int] = {}
    current, index = None, -1
    order: list[str] = []
    for line in block.splitlines():
        line = line.strip()
        m = re.match(r"subgraph (\w+)", line)
        if m:
            current = m.group(1)
            order.append(current)
            continue
        if line == "end":
            current = None
            continue
        m = re.match(r'(\w+)\["', line)
        if m and current:
            index = -1 if current == "base" else [o for o in order if o != "base"].index(current)
            layers[ALIASES.get(m.group(1), m.group(1))] = index
    return layers


def _modules() -> list[str]:
    """Top-level modules and subpackages of crosslab (``__main__`` counts as ``commands``)."""
    out = {p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")}
    out |= {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return sorted(out)


def _top_level_imports(path: Path) -> set[str]:
    """crosslab modules imported at module level (not inside functions) by ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg_depth = len(path.relative_to(PKG).parts) - 1  # 0 for crosslab/x.py, 1 for crosslab/data/x.py
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = (node.module or "").split(".")
            if node.level - 1 < pkg_depth:  # relative inside a subpackage: the subpackage itself
                found.add(path.relative_to(PKG).parts[0])
                continue
            if parts[0]:
                found.add(parts[0])
            else:
                found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crosslab."):
            found.add(node.module.split(".")[1])
    return found


def test_diagram_names_every_module_and_nothing_else():
    layers = _layers()
    assert set(layers) == set(_modules()), (
        f"docs/architecture.md and crosslab/ disagree: only in the doc {sorted(set(layers) - set(_modules()))}, "
        f"only in the code {sorted(set(_modules()) - set(layers))}"
    )


def test_module_level_imports_go_to_earlier_layers_only():
    layers = _layers()
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(PKG)
        mod = "commands" if rel.parts[0] == "__main__.py" else rel.parts[0].removesuffix(".py")
        if mod == "__init__":
            continue
        for imp in _top_level_imports(path):
            if imp in layers and imp != mod and layers[imp] > layers[mod]:
                bad.append(f"{rel} imports {imp} (layer {layers[imp]} > {layers[mod]})")
    assert not bad, "\n".join(bad)


def test_layers_are_in_the_documented_order():
    layers = _layers()
    assert layers["data"] < layers["text"] < layers["joint"] < layers["pipeline"] < layers["evaluation"] \
        < layers["widgets"]
    assert layers["similarity"] == layers["cache"] == -1
