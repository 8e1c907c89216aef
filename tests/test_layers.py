"""The layering of docs/architecture.md holds in the code: no part imports a higher layer, the pure-PyTorch core
imports no Ray, pyarrow or storage, and the graph drawn in the doc is the one the code has."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "docs" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_part_imports_a_higher_layer_and_the_core_has_no_ray_or_io():
    g = _graph_module()
    graph = g.import_graph()
    assert {"losses", "methods", "train", "eval", "tune"} <= set(graph)
    assert g.upward_imports(graph) == []
    assert g.core_violations(graph) == []


def test_the_checks_can_fail():
    g = _graph_module()
    graph = {part: set(dsts) for part, dsts in g.import_graph().items()}
    graph["eval"].add("train")
    graph["methods"].add("Ray")
    assert g.upward_imports(graph) == ["eval --> train"]
    assert g.core_violations(graph) == ["methods --> Ray"]


def test_architecture_doc_shows_the_current_graph():
    g = _graph_module()
    text = g.DOC.read_text()
    assert g.refreshed_doc(text, g.import_graph()) == text, "run: python docs/import_graph.py --write"
