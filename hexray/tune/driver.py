"""The Tune trainable: a driver function that runs one trial's Ray Train job and forwards its reports to Tune.

Train V2 inside Tune: the trial's driver builds the trial's TrainConfig (base config + the trial's dotted keys),
builds the same TorchTrainer `hexray train` uses and `fit()`s it, with a callback that hands every
`ray.train.report` to Tune, so ASHA can stop and PBT can exploit after each epoch.

PBT needs Tune checkpoints (it clones a strong trial's checkpoint into a weak one). `TuneReportCallback` forwards
metrics only, so with `forward_checkpoints` the driver runs `fit()` in a thread and re-reports each
(metrics, checkpoint) pair through `tune.report`. A trial restarted from a Tune checkpoint (PBT exploit, resumed
sweep) starts its trainer from it through the config key `init_key`, under a fresh run name (a run with the old
name would restore its own latest checkpoint instead).
"""

from __future__ import annotations

import importlib
import math
import os
import queue as std_queue
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ray.train.v2.api.callback import UserCallback  # what ray.train.UserCallback is under Train V2
from ray.tune.integration.ray_train import TuneReportCallback

from hexray import storage
from hexray.errors import InputError
from hexray.tune.space import flatten_trial_config

DEFAULT_BUILDER = "hexray.train.launch:build_trainer"
INIT_CHECKPOINT_KEY = "checkpoint.init_from"
CHECKPOINT_PATH_KEY = "checkpoint_path"  # the key TuneReportCallback uses for the trainer's checkpoint path


@dataclass
class TrialSetup:
    """What every trial's driver needs, shipped once to the cluster with `tune.with_parameters`.

    base: the base config mapping with the sweep's fixed overrides applied.
    experiment_dir: trials write their trainer runs under `{experiment_dir}/{trial dir name}/`.
    builder: `"module:function"` or a callable with `build_trainer`'s signature (tests pass a small fake).
    """

    base: dict[str, Any]
    experiment_dir: str
    forward_checkpoints: bool = False
    builder: str | Callable[..., Any] = DEFAULT_BUILDER
    init_key: str = INIT_CHECKPOINT_KEY
    run_name: str = "train"
    final_eval: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_builder(builder: str | Callable[..., Any]) -> Callable[..., Any]:
    """`"pkg.module:function"` → the function (imported on the trial's node), callables unchanged."""
    if callable(builder):
        return builder
    module_name, _, attr = builder.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def trial_config(config: Mapping[str, Any], setup: TrialSetup, init_from: str | None = None) -> Any:
    """The TrainConfig of a trial: base + the trial's searched keys (+ the checkpoint to start from)."""
    from hexray.config import apply_overrides, config_from_dict

    overrides = flatten_trial_config(config)
    if init_from is not None:
        overrides[setup.init_key] = init_from
    return config_from_dict(apply_overrides(setup.base, overrides))


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune trainable (function API): one trial = one Ray Train `fit()`. Raises if training fails."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    init_from = _checkpoint_location(checkpoint) if checkpoint is not None else None
    cfg = trial_config(config, setup, init_from)
    trial_name = os.path.basename(os.path.normpath(tune.get_context().get_trial_dir()))
    storage_path = storage.join(setup.experiment_dir, trial_name)
    run_name = setup.run_name if init_from is None else f"{setup.run_name}-from-{uuid.uuid4().hex[:8]}"
    build = resolve_builder(setup.builder)
    if not setup.forward_checkpoints:
        extra = {"final_eval": True} if setup.final_eval else {}  # the end-of-run table, in the trial's run dir
        build(cfg, run_name=run_name, storage_path=storage_path, callbacks=[EpochEndReportCallback()], **extra).fit()
        return
    _fit_forwarding_checkpoints(build, cfg, run_name, storage_path)


_URI_SCHEMES = {"s3": "s3", "gcs": "gs", "hdfs": "hdfs", "abfs": "abfs"}


def _checkpoint_location(checkpoint: Any) -> str:
    """Where the Tune checkpoint lives, as a location any node can read: its local path, or the URI of its
    object on the sweep's storage (never a download into this node's disk: the trial's training workers may run
    on other nodes). Built from the checkpoint's filesystem type and its path inside that filesystem."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return checkpoint.path
    kind = checkpoint.filesystem.type_name
    if kind not in _URI_SCHEMES:
        raise InputError(f"PBT checkpoint on a {kind!r} filesystem: no URI scheme known ({sorted(_URI_SCHEMES)})")
    return f"{_URI_SCHEMES[kind]}://{checkpoint.path.lstrip('/')}"


def _fit_forwarding_checkpoints(build: Callable[..., Any], cfg: Any, run_name: str, storage_path: str) -> None:
    """Run `fit()` in a thread; this (the Tune session's) thread re-reports each result with its checkpoint."""
    from ray import tune
    from ray.util.queue import Empty, Queue

    reports: Queue = Queue(actor_options={"num_cpus": 0})
    trainer = build(cfg, run_name=run_name, storage_path=storage_path, callbacks=[CheckpointForwardCallback(reports)])
    errors: std_queue.Queue = std_queue.Queue()

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # re-raised in the session thread, so Tune records the trial as failed
            errors.put(err)

    thread = threading.Thread(target=fit, name="hexray-trial-fit", daemon=True)
    thread.start()
    while True:
        try:
            metrics, ckpt = reports.get(timeout=0.5)
        except Empty:
            if thread.is_alive():
                continue
            if reports.empty():
                break
            continue
        tune.report(metrics, checkpoint=ckpt)
    thread.join()
    if not errors.empty():
        raise errors.get()


def is_epoch_end(metrics: list[dict[str, Any]]) -> bool:
    """hexray's loop also reports every `run.log_every_steps` steps (`epoch_end: 0`, no probe metrics) and, with
    `trial.final_eval`, the end-of-run table after the last epoch (`final_eval: 1`); Tune sees only epoch ends,
    so one Tune iteration = one epoch for ASHA/PBT and the sweep metric is in every result."""
    return bool(metrics) and metrics[0].get("epoch_end", 1) != 0 and not metrics[0].get("final_eval")


def tune_result(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A report as Tune gets it: without infinite values. Tune's TensorBoard logger warns "NaN or Inf found in
    input tensor" on each one, and the only one hexray reports is HEX's ε = +∞ of an empty H(i) (base, DCL),
    which has no point on a plot; the run's own metrics.csv keeps it. NaN stays: it means something broke."""
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isinf(v))}


class EpochEndReportCallback(TuneReportCallback):
    """Ray's Train→Tune forwarding callback, restricted to epoch-end reports."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if is_epoch_end(metrics):
            super().after_report(run_context, [tune_result(metrics[0]), *metrics[1:]], checkpoint)


class CheckpointForwardCallback(UserCallback):
    """Train callback (runs in the Train controller): puts each epoch-end report's rank-0 metrics and checkpoint on
    a queue that the trial's driver re-reports to Tune."""

    def __init__(self, reports: Any):
        self.reports = reports

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if not is_epoch_end(metrics):
            return
        result = tune_result(metrics[0])
        if checkpoint is not None:
            result[CHECKPOINT_PATH_KEY] = checkpoint.path
        self.reports.put((result, checkpoint))
