"""What a sweep found: a table of every trial, the best trial's config as a `hexray train` YAML, a summary.

Failed trials stay in the table (status `ERROR`, the error's first line) so a sweep's failures are visible next to
its results; they are ranked after every trial that reported the metric.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hexray import storage
from hexray.storage import StoragePath
from hexray.tune.space import flatten_trial_config
from hexray.tune.spec import SweepSpec

TABLE_NAME = "sweep_results"
CURVES_NAME = "sweep_curves.csv"
BEST_CONFIG_NAME = "best_config.yaml"
UNFINISHED = "UNFINISHED"  # the table's status for a trial an interrupted sweep left pending, running or paused
OPEN_STATUSES = frozenset({"PENDING", "RUNNING", "PAUSED"})  # Tune's statuses of a trial that has not ended


@dataclass
class SweepReport:
    """Paths of what was written plus the table itself (sorted best first)."""

    table: pd.DataFrame
    csv: StoragePath
    parquet: StoragePath
    curves: pd.DataFrame
    best_config: str | None

    @property
    def unfinished(self) -> int:
        """Trials neither terminated nor failed: the sweep was interrupted (Ctrl+C, a lost driver)."""
        return int((self.table["status"] == UNFINISHED).sum())


def trial_table(results: Any, spec: SweepSpec, saved: Mapping[str, str] | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per trial, sorted by the best metric; long table of every report: trial_id, iteration, metric).
    `saved` maps trial directory names to the status Tune last saved (`saved_statuses`): a trial it held as
    pending, running or paused is marked UNFINISHED."""
    metric, keys, saved = spec.metric, spec.searched_keys(), saved or {}
    rows, curves = [], []
    for result in results:
        metrics = result.metrics or {}
        history = result.metrics_dataframe
        trial_id = metrics.get("trial_id") or Path(str(result.path)).name
        params = flatten_trial_config(result.config or {})
        values = _metric_series(history, metric)
        unfinished = saved.get(Path(str(result.path)).name) in OPEN_STATUSES
        status = "ERROR" if result.error else UNFINISHED if unfinished else "TERMINATED"
        row: dict[str, Any] = {"trial_id": trial_id, "status": status}
        row.update({key: params.get(key) for key in keys})
        row[f"{metric} (final)"] = values.iloc[-1] if len(values) else float("nan")
        best = (values.max() if spec.mode == "max" else values.min()) if len(values) else float("nan")
        row[f"{metric} (best)"] = best
        row["iterations"] = int(metrics.get("training_iteration", len(values)) or 0)
        row["error"] = _first_line(result.error) if result.error else ""
        row["path"] = str(result.path)
        rows.append(row)
        if history is not None and len(values):
            iterations = history.loc[values.index, "training_iteration"] if "training_iteration" in history else None
            for i, (index, value) in enumerate(values.items()):
                step = int(iterations[index]) if iterations is not None else i + 1
                curves.append({"trial_id": trial_id, "training_iteration": step, metric: float(value)})
    table = pd.DataFrame(rows, columns=["trial_id", "status", *keys, f"{metric} (final)", f"{metric} (best)",
                                        "iterations", "error", "path"])
    # Ties (equal metrics) keep trial-id order, so the table reads the same however Tune lists its trials.
    table = table.sort_values("trial_id", kind="stable").sort_values(
        f"{metric} (best)", ascending=spec.mode == "min", na_position="last", kind="stable")
    return table.reset_index(drop=True), pd.DataFrame(curves, columns=["trial_id", "training_iteration", metric])


def _metric_series(history: pd.DataFrame | None, metric: str) -> pd.Series:
    if history is None or metric not in history:
        return pd.Series(dtype=float)
    return pd.to_numeric(history[metric], errors="coerce").dropna()


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    # Ray wraps the trial's exception; its last line names the original error.
    return f"{type(error).__name__}: {lines[-1] if lines else text}"[:500]


def write_table(table: pd.DataFrame, curves: pd.DataFrame, out_dir: StoragePath) -> tuple[StoragePath, StoragePath]:
    """CSV and Parquet of the trial table (mixed-type parameter columns are stored as strings in Parquet), in the
    experiment directory (local or on object storage)."""
    out_dir.mkdir()
    csv, parquet = out_dir / f"{TABLE_NAME}.csv", out_dir / f"{TABLE_NAME}.parquet"
    csv.write_text(table.to_csv(index=False))
    buf = io.BytesIO()
    _parquet_safe(table).to_parquet(buf, index=False)
    parquet.write_bytes(buf.getvalue())
    (out_dir / CURVES_NAME).write_text(curves.to_csv(index=False))
    return csv, parquet


def _parquet_safe(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for column in out.columns:
        if out[column].dtype == object:
            kinds = {type(v) for v in out[column] if v is not None}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                out[column] = out[column].map(lambda v: None if v is None else str(v))
    return out


def write_best_config(table: pd.DataFrame, results: Any, spec: SweepSpec, base: Mapping[str, Any],
                      out_dir: StoragePath) -> str | None:
    """The best trial's full TrainConfig as YAML (`hexray train best_config.yaml` runs it); None if none succeeded."""
    from hexray.config import apply_overrides, config_from_dict, save_config

    best = table[(table["status"] != "ERROR") & table[f"{spec.metric} (best)"].notna()]
    if best.empty:
        return None
    trial_id = best.iloc[0]["trial_id"]
    result = next(r for r in results if (r.metrics or {}).get("trial_id", Path(str(r.path)).name) == trial_id)
    overrides = flatten_trial_config(result.config or {})
    data = apply_overrides(base, overrides)
    data.setdefault("run", {})["name"] = f"{spec.name}-best"
    return save_config(config_from_dict(data), str(out_dir / BEST_CONFIG_NAME))


def summarize(report: SweepReport, spec: SweepSpec, top: int = 10) -> str:
    """Terminal summary: counts per status (and trials the search never created), the top trials, where the files
    are, and how to continue an interrupted sweep."""
    from hexray.tune.space import trial_count

    table = report.table
    failed = int((table["status"] == "ERROR").sum())
    finished = len(table) - failed - report.unfinished
    not_started = max(0, trial_count(spec) - len(table))  # an interrupted search creates no more trials
    lines = [
        f"sweep {spec.name!r}: {len(table)} trials, {finished} finished, {failed} failed"
        + (f", {report.unfinished} unfinished" if report.unfinished else "")
        + (f", {not_started} not started" if not_started else "")
        + f"; metric {spec.metric} ({spec.mode})",
    ]
    shown = table.drop(columns=["path"]).head(top)
    lines.append(shown.to_string(index=False, max_colwidth=60, float_format=lambda v: f"{v:.4g}"))
    lines.append(f"table: {report.csv} (+ .parquet)")
    if report.unfinished or not_started:
        lines.append(f"the sweep stopped before {report.unfinished + not_started} trial(s) finished (the table lists "
                     f"the started ones with what they reported): continue with: hexray sweep --resume "
                     f"{report.csv.parent}")
    best = report.best_config
    lines.append(f"best config: {best}" if best else "best config: none (no trial reported the metric)")
    return "\n".join(lines)


def report_results(results: Any, spec: SweepSpec, base: Mapping[str, Any], out_dir: StoragePath) -> SweepReport:
    """Write the table, curves and best config of a finished (or partly finished) sweep."""
    table, curves = trial_table(results, spec, saved_statuses(out_dir))
    csv, parquet = write_table(table, curves, out_dir)
    best = write_best_config(table, results, spec, base, out_dir)
    return SweepReport(table=table, csv=csv, parquet=parquet, curves=curves, best_config=best)


def saved_statuses(experiment_dir: StoragePath) -> dict[str, str]:
    """Each trial's status as Tune last saved it in the experiment state, by trial directory name ({} if none).

    Why not the ResultGrid that `fit()` returns: on Ctrl+C Tune saves the experiment state and only then stops its
    trials, marking them TERMINATED in memory, so a half-run trial would read as finished (and the summary would not
    say how to resume). The saved state still holds it as RUNNING, which is what `--resume` acts on."""
    from ray.tune import ExperimentAnalysis

    fs, path = storage.resolve(str(experiment_dir))
    try:
        analysis = ExperimentAnalysis(path, storage_filesystem=fs)
    except (ValueError, FileNotFoundError):  # no experiment state yet: nothing was saved, nothing is open
        return {}
    return {Path(str(trial.path)).name: str(trial.status) for trial in analysis.trials}
