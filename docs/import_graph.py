"""hexray's import graph between its parts, read from the source (every `import`, also those inside functions),
and the layer order it must respect. Writes the graph into docs/architecture.md; tests/test_layers.py checks it.

    python docs/import_graph.py            # print the graph (Mermaid)
    python docs/import_graph.py --write    # refresh it in docs/architecture.md

A part is a subpackage (`hexray/train/`) or a top-level module (`hexray/storage.py`). An arrow A --> B means code
in A imports B. Every arrow must point to a lower layer (or stay in the same one): nothing imports upwards.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hexray"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- import graph: begin (docs/import_graph.py --write) -->", "<!-- import graph: end -->"

# Lowest first. A part may import parts of its own layer or below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "storage", "distributed"),  # no hexray imports of their own
    ("losses", "models"),                   # pure torch
    ("methods",),                           # pure torch: backbone + heads + loss
    ("config",),                            # the typed run config, composed of the core's settings
    ("checkpoint", "data", "run_files"),    # run files; shards and Ray Data
    ("eval",),                              # features, kNN, probes, reading runs
    ("train",),                             # Ray Train: the loop and its orchestration
    ("tune",),                              # Ray Tune: sweeps of train
    ("commands",),                          # one module per CLI subcommand
    ("cli", "__init__"),                    # the entry point
)
CORE = ("losses", "models", "methods")       # never import Ray, pyarrow or the storage layer
EXTERNAL = {"ray": "Ray", "pyarrow": "pyarrow"}


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (`from hexray import storage` → hexray.storage)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "hexray":  # submodules by name; other names (__version__) are the package's own
                found.update(f"hexray.{alias.name}" for alias in node.names
                             if (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").is_file())
    return found


def import_graph() -> dict[str, set[str]]:
    """part → the hexray parts and external engines (Ray, pyarrow) it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        src = part_of(path)
        targets = graph.setdefault(src, set())
        for module in imported_modules(path):
            top, _, rest = module.partition(".")
            if top == "hexray" and rest:
                dst = rest.split(".")[0]
                if dst != src:
                    targets.add(dst)
            elif top in EXTERNAL:
                targets.add(EXTERNAL[top])
    return graph


def layer_of(part: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if part in layer:
            return rank
    raise KeyError(f"hexray part {part!r} is in no layer: add it to LAYERS in docs/import_graph.py")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every arrow that points to a higher layer, as 'a --> b' (empty when the layering holds)."""
    return [f"{src} --> {dst}" for src, dsts in sorted(graph.items()) for dst in sorted(dsts)
            if dst not in EXTERNAL.values() and layer_of(dst) > layer_of(src)]


def core_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of Ray, pyarrow or the storage layer from the pure-PyTorch core."""
    banned = {*EXTERNAL.values(), "storage", "data", "checkpoint"}
    return [f"{src} --> {dst}" for src in CORE for dst in sorted(graph.get(src, set()) & banned)]


def mermaid(graph: dict[str, set[str]]) -> str:
    """The graph as a Mermaid flowchart, one subgraph per layer, top layer first."""
    lines = ["```mermaid", "flowchart TD"]
    for rank in reversed(range(len(LAYERS))):
        members = [p for p in LAYERS[rank] if p in graph and p != "__init__"]
        if members:
            lines.append(f"  subgraph L{rank}[\"layer {rank}\"]")
            lines.extend(f"    {p}" for p in members)
            lines.append("  end")
    for src, dsts in sorted(graph.items()):
        if src == "__init__":
            continue
        for dst in sorted(dsts):
            lines.append(f"  {src} --> {dst}")
    lines.append("```")
    return "\n".join(lines)


def refreshed_doc(text: str, graph: dict[str, set[str]]) -> str:
    """`text` with the block between the markers replaced by the current graph."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"{DOC} lacks the markers {BEGIN!r} … {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{mermaid(graph)}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"refresh the graph in {DOC.relative_to(ROOT)}")
    args = parser.parse_args()
    graph = import_graph()
    problems = upward_imports(graph) + core_violations(graph)
    if args.write:
        DOC.write_text(refreshed_doc(DOC.read_text(), graph))
    else:
        print(mermaid(graph))
    for problem in problems:
        print(f"layering violated: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
