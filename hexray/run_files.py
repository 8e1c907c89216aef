"""The end-of-run table's file in a run directory and its flat key form, shared by the code that writes it (the train
layer) and the code that reads it (`hexray report`). Plain Python: the Train controller imports this, and it must
not pay for torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FINAL_EVAL_FILE = "final_eval.json"  # the workers' end-of-run table, `final/<row>/<metric>` keys (also in sweeps)
FINAL_PREFIX = "final/"
FINAL_ROWS = ("pretrained", "random_init", "raw_pixels")


def final_table_from_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{row: {metric: value}} from flat `final/<row>/<metric>` keys (what rank 0 reports, final_eval.json)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(FINAL_PREFIX):
            row, name = key[len(FINAL_PREFIX):].split("/", 1)
            out.setdefault(row, {})[name] = float(value)
    return {row: out[row] for row in FINAL_ROWS if row in out}
