"""Reading run directories (docs/interfaces.md, train layer): find them, their checkpoints, config and metrics.

A run directory holds `config.yaml`, `metrics.csv`, `summary.json` and Ray's `checkpoint_*` dirs with `state.pt`.
Everything here reads files only (no Ray, no model code), so `hexray report` works on a laptop without the
training stack, and a sweep's experiment dir is just a tree to search for run dirs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
EVAL_FILE = "eval.json"
STATE_FILE = "state.pt"


def is_run_dir(path: Path) -> bool:
    """A run dir has its config plus metrics, a summary or a checkpoint (a bare config file is not a run)."""
    if not (path / CONFIG_FILE).is_file():
        return False
    return (path / METRICS_FILE).is_file() or (path / SUMMARY_FILE).is_file() or any(path.glob("checkpoint_*"))


def require_run_dir(path: str | os.PathLike) -> Path:
    """The run dir as a Path, or FileNotFoundError/ValueError naming what is missing."""
    run = Path(path)
    if not run.exists():
        raise FileNotFoundError(f"run directory {str(run)!r} does not exist")
    if not run.is_dir():
        raise ValueError(f"{str(run)!r} is not a directory (expected a run directory)")
    if not is_run_dir(run):
        raise ValueError(
            f"{str(run)!r} is not a run directory: expected {CONFIG_FILE} and one of {METRICS_FILE}, "
            f"{SUMMARY_FILE} or checkpoint_* inside"
        )
    return run


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run dirs named by `paths`: each path is a run dir itself or a tree (a sweep's experiment dir) searched for
    run dirs. Sorted, without duplicates; an empty result or a missing path is an error naming the path."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{str(path)!r} does not exist")
        if is_run_dir(path):
            found.append(path)
            continue
        inside = []
        for root, dirs, _files in os.walk(path):
            here = Path(root)
            if is_run_dir(here):
                inside.append(here)
                dirs[:] = []  # a run dir's checkpoints are not runs
            else:
                dirs.sort()
        if not inside:
            raise ValueError(f"no run directories (with {CONFIG_FILE} and {METRICS_FILE}) found under {str(path)!r}")
        found.extend(inside)
    unique = sorted({p.resolve(): p for p in found}.items())
    return [p for _, p in unique]


def _checkpoint_epoch(ckpt: Path) -> float:
    try:
        import torch

        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        return float(state.get("epoch", math.inf))
    except Exception:  # an unreadable checkpoint sorts last; loading it later names the file
        return math.inf


def find_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint dirs of a run, oldest epoch first (the train layer's `find_checkpoints` when installed)."""
    run = Path(run_dir)
    try:
        from hexray.train.checkpoint import find_checkpoints as train_find_checkpoints
    except ImportError:
        found = [p for p in run.glob("checkpoint_*") if (p / STATE_FILE).is_file()]
        return sorted(found, key=lambda p: (_checkpoint_epoch(p), p.name))
    return [Path(p) for p in train_find_checkpoints(str(run))]


def require_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """`find_checkpoints`, or ValueError naming the run dir when it has none."""
    ckpts = find_checkpoints(run_dir)
    if not ckpts:
        raise ValueError(
            f"run directory {str(run_dir)!r} has no checkpoints (checkpoint_*/{STATE_FILE}); "
            "train with checkpointing enabled or pass --checkpoint"
        )
    return ckpts


def read_config_dict(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's `config.yaml` as a plain dict (for labels and grouping only; typed access goes via the config)."""
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when the file does not exist."""
    p = Path(path)
    if not p.is_file():
        return None
    with open(p) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{str(p)!r} is not valid JSON: {err}") from err


def read_metrics(run_dir: str | os.PathLike):  # -> pandas.DataFrame
    """`metrics.csv` as a DataFrame (numeric columns), empty when the run wrote no metrics."""
    import pandas as pd

    path = Path(run_dir) / METRICS_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    frame = pd.read_csv(path)
    return frame.apply(pd.to_numeric, errors="coerce")


def per_epoch(frame, column: str) -> tuple[list[float], list[float]]:
    """(epochs, last reported value of `column` in each epoch), skipping NaNs: metrics.csv has rows every
    N steps and every epoch, and the epoch's last row is its end-of-epoch value."""
    if frame is None or frame.empty or column not in frame or "epoch" not in frame:
        return [], []
    sub = frame[["epoch", column]].dropna()
    if sub.empty:
        return [], []
    last = sub.groupby("epoch", sort=True)[column].last()
    return [float(e) for e in last.index], [float(v) for v in last.values]


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
