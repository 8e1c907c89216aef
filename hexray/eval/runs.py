"""Reading run directories (docs/interfaces.md, train layer): find them, their checkpoints, config and metrics.

A run directory holds `config.yaml`, `metrics.csv`, `summary.json` and Ray's `checkpoint_*` dirs with `state.pt`.
Everything here reads files only (no Ray, no model code), so `hexray report` works on a laptop without the
training stack, and a sweep's experiment dir is just a tree to search for run dirs. Locations are
`StoragePath`s: a run directory may be local or on object storage (s3://, gs://), read through pyarrow.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from hexray.checkpoint import STATE_FILE
from hexray.errors import DataError
from hexray.run_files import FINAL_EVAL_FILE, final_table_from_metrics
from hexray.storage import StoragePath

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
EVAL_FILE = "eval.json"
def read_final_table(run: StoragePath) -> dict[str, dict[str, float]]:
    """The run's end-of-run table from final_eval.json ({} when it has none)."""
    return final_table_from_metrics(read_json(run / FINAL_EVAL_FILE) or {})


def _entries(path: StoragePath) -> dict[str, bool]:
    from hexray.storage import list_dir

    return dict(list_dir(path.location))


def is_run_dir(path: StoragePath | str | os.PathLike, entries: dict[str, bool] | None = None) -> bool:
    """A run dir has its config plus metrics, a summary or a checkpoint (a bare config file is not a run)."""
    names = _entries(StoragePath(path)) if entries is None else entries
    if names.get(CONFIG_FILE, True):  # missing, or a directory
        return False
    return METRICS_FILE in names or SUMMARY_FILE in names or any(n.startswith("checkpoint_") for n in names)


def require_run_dir(path: str | os.PathLike | StoragePath) -> StoragePath:
    """The run dir (local or a URI), or FileNotFoundError/ValueError naming what is missing."""
    run = StoragePath(path)
    if not run.exists():
        raise FileNotFoundError(f"run directory {str(run)!r} does not exist")
    if not run.is_dir():
        raise DataError(f"{str(run)!r} is not a directory (expected a run directory)")
    if not is_run_dir(run):
        raise DataError(
            f"{str(run)!r} is not a run directory: expected {CONFIG_FILE} and one of {METRICS_FILE}, "
            f"{SUMMARY_FILE} or checkpoint_* inside"
        )
    return run


def _walk_run_dirs(path: StoragePath) -> list[StoragePath]:
    entries = _entries(path)
    if is_run_dir(path, entries):
        return [path]  # a run dir's checkpoints are not runs
    return [run for name, is_dir in sorted(entries.items()) if is_dir for run in _walk_run_dirs(path / name)]


def find_run_dirs(paths: Iterable[str | os.PathLike | StoragePath]) -> list[StoragePath]:
    """Run dirs named by `paths`: each path is a run dir itself or a tree (a sweep's experiment dir) searched for
    run dirs. Sorted, without duplicates; an empty result or a missing path is an error naming the path."""
    found: list[StoragePath] = []
    for raw in paths:
        path = StoragePath(raw)
        if not path.exists():
            raise FileNotFoundError(f"{str(path)!r} does not exist")
        inside = _walk_run_dirs(path)
        if not inside:
            raise DataError(f"no run directories (with {CONFIG_FILE} and {METRICS_FILE}) found under {str(path)!r}")
        found.extend(inside)
    return sorted(set(found))


def find_checkpoints(run_dir: str | os.PathLike | StoragePath) -> list[StoragePath]:
    """Checkpoint dirs of a run, oldest epoch first (`hexray.checkpoint`, shared with the train layer)."""
    from hexray.checkpoint import find_checkpoints as checkpoint_dirs

    return [StoragePath(p) for p in checkpoint_dirs(str(StoragePath(run_dir)))]


def require_checkpoints(run_dir: str | os.PathLike | StoragePath) -> list[StoragePath]:
    """`find_checkpoints`, or ValueError naming the run dir when it has none."""
    ckpts = find_checkpoints(run_dir)
    if not ckpts:
        raise DataError(
            f"run directory {str(run_dir)!r} has no checkpoints (checkpoint_*/{STATE_FILE}); "
            "train with checkpointing enabled or pass --checkpoint"
        )
    return ckpts


def read_config_dict(run_dir: str | os.PathLike | StoragePath) -> dict[str, Any]:
    """The run's `config.yaml` as a plain dict (for labels and grouping only; typed access goes via the config)."""
    from hexray.config.yaml_io import read_yaml_mapping

    path = StoragePath(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    return read_yaml_mapping(str(path))


def read_json(path: str | os.PathLike | StoragePath) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when the file does not exist."""
    p = StoragePath(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{str(p)!r} is not valid JSON: {err}") from err


def read_metrics(run_dir: str | os.PathLike | StoragePath):  # -> pandas.DataFrame
    """`metrics.csv` as a DataFrame (numeric columns), empty when the run wrote no metrics."""
    import pandas as pd

    path = StoragePath(run_dir) / METRICS_FILE
    if not path.is_file():
        return pd.DataFrame()
    data = path.read_bytes()
    if not data:
        return pd.DataFrame()
    frame = pd.read_csv(io.BytesIO(data))
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
