"""Driver-side record of a run: `metrics.csv` (one row per report), per-epoch progress lines with images/s and
ETA, and the workers' placement. A Ray Train `UserCallback`, so it runs in the controller process and sees the
reports of every rank (rank 0's metrics are the run's; every rank contributes its placement)."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from hexray import storage
from hexray.run_files import FINAL_EVAL_FILE  # the workers' end-of-run table (Ray's Result.metrics: last checkpoint's)
from hexray.train.metric_names import KNN_KEYS, ONLINE_PROBE_KEYS, monitor_runs_at

PROGRESS_FILE = "progress.log"
PLACEMENT_KEYS = ("worker/rank", "worker/node_id", "worker/node_ip", "worker/hostname")
FIRST_COLUMNS = ("epoch", "step", "loss")
PROGRESS_KEYS = ("loss", "knn/top1", "knn/superclass", "probe/online_top1", "hex/epsilon", "lr")


class CsvMetricsWriter:
    """Rows into a CSV whose columns are the union of every key seen, at a local path or on object storage.

    Locally rows are appended (a new key rewrites the file once). Object stores have no append, so there the
    whole file is rewritten — at most every `flush_every_s` seconds, and always on `flush()` (each epoch's end).
    """

    def __init__(self, path: str | Path, flush_every_s: float = 30.0) -> None:
        self.path = storage.normalize(str(path))
        self.remote = storage.is_remote(self.path)
        self.flush_every_s = flush_every_s
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self._written = 0  # rows already in the file
        self._last_flush = time.monotonic()
        if storage.is_file(self.path):  # a resumed run appends to its earlier rows
            reader = csv.DictReader(io.StringIO(storage.read_text(self.path), newline=""))
            self.columns = list(reader.fieldnames or [])
            self.rows = list(reader)
            self._written = len(self.rows)

    def write(self, row: dict[str, Any]) -> None:
        row = {k: v for k, v in row.items() if isinstance(v, (int, float, str)) and not k.startswith("worker/")}
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new:
            first = [c for c in FIRST_COLUMNS if c in self.columns or c in row]
            self.columns = first + sorted(c for c in {*self.columns, *row} if c not in first)
            self._written = -1  # the header changed: the file must be rewritten
        if not self.remote or time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if self._written == len(self.rows):
            return
        if self.remote or self._written <= 0:  # > 0: this writer (or the resumed run it read) made the file
            buf = io.StringIO(newline="")
            writer = csv.DictWriter(buf, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
            storage.write_text(self.path, buf.getvalue())
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerows(self.rows[self._written:])
        self._written = len(self.rows)
        self._last_flush = time.monotonic()


def format_duration(seconds: float) -> str:
    """'1h02m', '4m05s' or '12s'."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def progress_line(metrics: dict[str, Any], total_epochs: int, epoch_seconds: list[float]) -> str:
    """One line per epoch: epoch k/N, chosen metrics, images/s, epoch time and ETA (mean epoch time × remaining)."""
    epoch = int(metrics.get("epoch", 0))
    parts = [f"epoch {epoch}/{total_epochs}"]
    parts += [f"{k} {metrics[k]:.4g}" for k in PROGRESS_KEYS if isinstance(metrics.get(k), (int, float))]
    if metrics.get("data/corrupt"):  # images that failed to decode in this run (each one is skipped)
        parts.append(f"{metrics['data/corrupt']:.0f} corrupt")
    if isinstance(metrics.get("images_per_s"), (int, float)):
        parts.append(f"{metrics['images_per_s']:.0f} img/s")
    mean = sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else float("nan")
    last = epoch_seconds[-1] if epoch_seconds else float("nan")
    parts.append(f"epoch {format_duration(last)} ETA {format_duration(mean * (total_epochs - epoch))}")
    return " | ".join(parts)


@dataclass
class LoggerSpec:
    """What the recorder needs to open the metric loggers in its own process (they do not pickle)."""

    names: tuple[str, ...] = ()
    run_name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    mlflow_uri: str | None = None


_MONITOR_KEYS = frozenset((*KNN_KEYS, *ONLINE_PROBE_KEYS))


class RunRecorder(UserCallback):
    """Writes `metrics.csv` and `placement.json` (per-rank node id/ip/hostname, for summary.json) into the run
    directory, appends a progress line per epoch to `progress.log` and feeds the metric loggers (TensorBoard,
    MLflow). Runs in Ray Train's controller process.

    The kNN monitor and the online probe run every `monitor_every` epochs; the epochs between report the last
    measurement again (a sweep's scheduler reads its metric every epoch), which metrics.csv, progress.log and the
    loggers leave out, so that curves and progress lines show measurements only."""

    def __init__(self, run_dir: str, total_epochs: int, *, loggers: LoggerSpec | None = None,
                 final_eval: bool = False, monitor_every: int = 1) -> None:
        self.run_dir = run_dir
        self.total_epochs = total_epochs
        self.monitor_every = monitor_every
        self.logger_spec = loggers or LoggerSpec()
        self.final_eval = final_eval
        self._writer: CsvMetricsWriter | None = None
        self._loggers: list[Any] | None = None
        self._last_step = 0
        self._epoch_seconds: list[float] = []
        self._placement: list[dict[str, Any]] | None = None
        self._progress: str | None = None

    def _open_loggers(self) -> list[Any]:
        if self._loggers is None:
            from hexray.train.loggers import build_loggers

            spec = self.logger_spec
            self._loggers = build_loggers(spec.names, run_dir=self.run_dir, run_name=spec.run_name,
                                          params=spec.params, mlflow_uri=spec.mlflow_uri)
        return self._loggers

    def _log(self, metrics: dict[str, Any], step: int, *, flush: bool = False, close: bool = False) -> None:
        for logger in self._open_loggers():
            logger.log(metrics, step)
            if close:
                logger.close()
            elif flush:
                logger.flush()
        if close:
            self._loggers = None  # a later report (a restarted attempt) opens them again

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if not metrics:
            return
        if self._writer is None:
            self._writer = CsvMetricsWriter(storage.join(self.run_dir, "metrics.csv"))
        main = metrics[0]
        if main.get("final_eval"):  # the end-of-run table, for the driver's summary.json; not a metrics.csv row
            table = {k: v for k, v in main.items() if k.startswith("final/")}
            storage.write_text(storage.join(self.run_dir, FINAL_EVAL_FILE), json.dumps(table, indent=1))
            self._log(table, self._last_step, close=True)
            return
        row = main
        if main.get("epoch_end") and not monitor_runs_at(int(main.get("epoch", 0)), self.monitor_every,
                                                         self.total_epochs):
            row = {k: v for k, v in main.items() if k not in _MONITOR_KEYS}  # a repeat, not a measurement
        self._writer.write(row)
        self._last_step = int(main.get("step", self._last_step))
        last = bool(main.get("epoch_end")) and int(main.get("epoch", 0)) >= self.total_epochs
        self._log(row, self._last_step, flush=bool(main.get("epoch_end")), close=last and not self.final_eval)
        placement = [{k.split("/", 1)[1]: m[k] for k in PLACEMENT_KEYS if k in m} for m in metrics]
        if all(placement) and placement != self._placement:
            storage.write_text(storage.join(self.run_dir, "placement.json"), json.dumps(placement, indent=1))
            self._placement = placement
        if main.get("epoch_end"):
            self._writer.flush()
            if isinstance(main.get("time/epoch_s"), (int, float)):
                self._epoch_seconds.append(float(main["time/epoch_s"]))
            self._append_progress(progress_line(row, self.total_epochs, self._epoch_seconds) + "\n")

    def _append_progress(self, line: str) -> None:
        """progress.log gains one line (rewritten whole: object stores cannot append; it is one line per epoch)."""
        path = storage.join(self.run_dir, PROGRESS_FILE)
        if self._progress is None:
            self._progress = storage.read_text(path) if storage.is_file(path) else ""
        self._progress += line
        storage.write_text(path, self._progress)
