"""Driver-side record of a run: `metrics.csv` (one row per report), per-epoch progress lines with images/s and
ETA, and the workers' placement. A Ray Train `UserCallback`, so it runs in the controller process and sees the
reports of every rank (rank 0's metrics are the run's; every rank contributes its placement)."""

from __future__ import annotations

import csv
import json
import math
import sys
import threading
from pathlib import Path
from typing import Any

from ray.train import UserCallback

PROGRESS_FILE = "progress.log"
PLACEMENT_KEYS = ("worker/rank", "worker/node_id", "worker/node_ip", "worker/hostname")
FIRST_COLUMNS = ("epoch", "step", "loss")
PROGRESS_KEYS = ("loss", "knn/top1", "knn/superclass", "probe/online_top1", "hex/epsilon", "lr")


class CsvMetricsWriter:
    """Append rows to a CSV whose columns are the union of every key seen; a new key rewrites the file once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():  # a resumed run appends to its earlier rows
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or [])
                self.rows = list(reader)

    def write(self, row: dict[str, Any]) -> None:
        row = {k: v for k, v in row.items() if isinstance(v, (int, float, str)) and not k.startswith("worker/")}
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if new or not self.path.is_file():
            first = [c for c in FIRST_COLUMNS if c in self.columns or c in row]
            self.columns = first + sorted(c for c in {*self.columns, *row} if c not in first)
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(self.rows)
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)


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
    if isinstance(metrics.get("images_per_s"), (int, float)):
        parts.append(f"{metrics['images_per_s']:.0f} img/s")
    mean = sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else float("nan")
    last = epoch_seconds[-1] if epoch_seconds else float("nan")
    parts.append(f"epoch {format_duration(last)} ETA {format_duration(mean * (total_epochs - epoch))}")
    return " | ".join(parts)


class RunRecorder(UserCallback):
    """Writes `metrics.csv` and `placement.json` (per-rank node id/ip/hostname, for summary.json) into the run
    directory and appends a progress line per epoch to `progress.log`. Runs in Ray Train's controller process."""

    def __init__(self, run_dir: str, total_epochs: int) -> None:
        self.run_dir = run_dir
        self.total_epochs = total_epochs
        self._writer: CsvMetricsWriter | None = None
        self._epoch_seconds: list[float] = []

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if not metrics:
            return
        if self._writer is None:
            self._writer = CsvMetricsWriter(Path(self.run_dir) / "metrics.csv")
        main = metrics[0]
        self._writer.write(main)
        placement = [{k.split("/", 1)[1]: m[k] for k in PLACEMENT_KEYS if k in m} for m in metrics]
        if all(placement):
            (Path(self.run_dir) / "placement.json").write_text(json.dumps(placement, indent=1))
        if main.get("epoch_end"):
            if isinstance(main.get("time/epoch_s"), (int, float)):
                self._epoch_seconds.append(float(main["time/epoch_s"]))
            line = progress_line(main, self.total_epochs, self._epoch_seconds)
            with (Path(self.run_dir) / PROGRESS_FILE).open("a") as f:
                f.write(line + "\n")


class ProgressTail(threading.Thread):
    """Driver-side: prints the lines the recorder appends to `progress.log` while `trainer.fit()` blocks (the
    recorder runs in Ray's controller process, whose stdout does not reach the user without log_to_driver)."""

    def __init__(self, run_dir: str, interval: float = 1.0, stream: Any = None) -> None:
        super().__init__(daemon=True)
        self.path = Path(run_dir) / PROGRESS_FILE
        self.interval, self.stream = interval, stream or sys.stdout
        self._stop_event = threading.Event()
        self._offset = self.path.stat().st_size if self.path.is_file() else 0

    def poll(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open() as f:
            f.seek(self._offset)
            text = f.read()
        complete = text[: text.rfind("\n") + 1]
        self._offset += len(complete.encode())
        if complete:
            self.stream.write(complete)
            self.stream.flush()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.poll()
