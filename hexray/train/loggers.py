"""Metric sinks people already use: TensorBoard event files in the run directory (always on by default) and MLflow
(`run.loggers: [tensorboard, mlflow]`, the `mlflow` extra). The run recorder feeds them every report in Ray
Train's controller process; rank 0's metrics are the run's, keyed by the optimizer step.

TensorBoard writes through `torch.utils.tensorboard`. A run directory on object storage gets its event file from
a local staging folder, uploaded whole at each epoch's end (object stores cannot append), like metrics.csv.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any, Protocol

from hexray import storage
from hexray.errors import InputError

TENSORBOARD_DIR = "tensorboard"
_BOOKKEEPING = ("epoch_end", "data/order_digest", "step", "final_eval")


class MetricLogger(Protocol):
    def log(self, metrics: Mapping[str, Any], step: int) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers worth a curve: no placement, no bookkeeping, no strings, nothing non-finite (the DCL arm's ε is
    +∞ by design; TensorBoard would print "NaN or Inf found in input tensor" at every report)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _BOOKKEEPING
            and not k.startswith(("worker/", "restored")) and math.isfinite(v)}


class TensorBoardLogger:
    """Scalars into `<run_dir>/tensorboard/events.out.tfevents.*` (`tensorboard --logdir <run_dir or its parent>`)."""

    def __init__(self, run_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.target = storage.join(run_dir, TENSORBOARD_DIR)
        self.remote = storage.is_remote(run_dir)
        local = tempfile.mkdtemp(prefix="hexray-tb-") if self.remote else self.target
        self.writer = SummaryWriter(log_dir=local, flush_secs=30)
        self.local = local

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for key, value in scalars(metrics).items():
            self.writer.add_scalar(key, value, global_step=step)

    def flush(self) -> None:
        self.writer.flush()
        if self.remote:  # mirror the staged event file(s) to the run directory on object storage
            for name in os.listdir(self.local):
                with open(os.path.join(self.local, name), "rb") as f:
                    storage.write_bytes(storage.join(self.target, name), f.read())

    def close(self) -> None:
        self.flush()
        self.writer.close()


class MlflowLogger:
    """One MLflow run per hexray run (name = run.name, params = the flattened config), metrics at each report.

    `tracking_uri` is the driver's (MLFLOW_TRACKING_URI or MLflow's default there): the controller process that
    logs may run on another node, where the driver's environment is not set."""

    def __init__(self, run_name: str, params: Mapping[str, Any], tracking_uri: str | None,
                 experiment: str = "hexray") -> None:
        import mlflow

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
        self.mlflow = mlflow
        found = mlflow.search_runs(filter_string=f"attributes.run_name = '{run_name}'", output_format="list")
        self.run = mlflow.start_run(run_id=found[0].info.run_id) if found else mlflow.start_run(run_name=run_name)
        if not found:  # a resumed run keeps its MLflow run (and its params)
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        values = {k.replace("@", "_at_"): v for k, v in scalars(metrics).items()}  # MLflow rejects '@' in keys
        if values:
            self.mlflow.log_metrics(values, step=step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.mlflow.end_run()


def check_loggers(names: tuple[str, ...] | list[str]) -> None:
    """Fail before Ray starts when a logger's package is missing."""
    import importlib.util

    if "mlflow" in names and importlib.util.find_spec("mlflow") is None:
        raise InputError("run.loggers: 'mlflow' needs the mlflow package: pip install 'hexray[mlflow]' "
                         "(and MLFLOW_TRACKING_URI pointing at your tracking server)")


def mlflow_tracking_uri(names: tuple[str, ...] | list[str]) -> str | None:
    """The driver's MLflow tracking URI, handed to the logging process (None when MLflow is not asked for)."""
    if "mlflow" not in names:
        return None
    import mlflow

    return mlflow.get_tracking_uri()


def build_loggers(names: tuple[str, ...] | list[str], *, run_dir: str, run_name: str, params: Mapping[str, Any],
                  mlflow_uri: str | None) -> list[MetricLogger]:
    loggers: list[MetricLogger] = []
    for name in names:
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir))
        elif name == "mlflow":
            loggers.append(MlflowLogger(run_name, params, mlflow_uri))
    return loggers
