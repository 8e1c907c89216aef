"""`hexray eval RUN_DIR`: offline probes of the chosen checkpoint, the hierarchy trajectory over all checkpoints,
plots, and `RUN_DIR/eval.json` — one function so the CLI stays a thin parser.

`restore` and `load_data` are parameters so that tests (and other data sources) can swap the model and images;
the defaults read the run's checkpoints through the train layer and its images from the run's shards.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hexray.eval.offline import EvalData, OfflineSettings, evaluate_offline
from hexray.eval.runs import (
    EVAL_FILE,
    find_checkpoints,
    read_config_dict,
    read_metrics,
    require_checkpoints,
    require_run_dir,
)
from hexray.storage import StoragePath

PLOTS_DIR = "plots"


@dataclass
class EvalOptions:
    """Caps keep `hexray eval` fast on CPU; raise them on a GPU for paper-grade numbers."""

    max_train: int | None = 5000
    max_test: int | None = 2000
    trajectory: bool = True
    trajectory_max_train: int = 2000
    trajectory_max_test: int = 1000
    max_trajectory_checkpoints: int = 20
    device: str = "cpu"
    plots: bool = True


def _subset(data: EvalData, max_train: int, max_test: int, seed: int) -> EvalData:
    gen = torch.Generator().manual_seed(seed)
    tr = torch.randperm(data.train_labels.numel(), generator=gen)[:max_train].sort().values
    te = torch.randperm(data.test_labels.numel(), generator=gen)[:max_test].sort().values
    return EvalData(
        train_images=data.train_images[tr], train_labels=data.train_labels[tr], test_images=data.test_images[te],
        test_labels=data.test_labels[te], num_classes=data.num_classes, class_to_superclass=data.class_to_superclass,
        class_names=data.class_names, superclass_names=data.superclass_names,
    )


def _spread(items: list[Any], limit: int) -> list[Any]:
    if len(items) <= limit:
        return items
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The fields a report groups and labels by, read from the run's config.yaml."""
    def get(section: str, key: str, default: Any = None) -> Any:
        value = config.get(section)
        return value.get(key, default) if isinstance(value, dict) else default

    return {
        "method": get("method", "name"),
        "hex": bool(get("hex", "enabled", False)),
        "hex_threshold": get("hex", "threshold"),
        "sem": bool(get("sem", "enabled", False)),
        "dataset": get("data", "dataset"),
        "seed": get("run", "seed"),
        "epochs": get("run", "epochs"),
    }


def _default_restore(run_dir: StoragePath, checkpoint: str | None) -> Any:
    from hexray.eval.restore import restore_run

    return restore_run(run_dir, checkpoint)


def _default_load_data(cfg: Any, options: EvalOptions, seed: int) -> EvalData:
    from hexray.eval.datasource import load_run_eval_data

    return load_run_eval_data(cfg, max_train=options.max_train, max_test=options.max_test, seed=seed)


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    checkpoint: str | None = None,
    settings: OfflineSettings | None = None,
    options: EvalOptions | None = None,
    restore: Callable[[StoragePath, str | None], Any] | None = None,
    load_data: Callable[[Any, EvalOptions, int], EvalData] | None = None,
    log: Callable[[str], None] = lambda msg: None,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Evaluate one run; writes eval.json and plots/*.png into `out` (default: the run dir) and returns the
    eval.json content. Why `out`: an eval.json in a sweep trial's run dir becomes the number `hexray report` scores
    it by (in place of its end-of-run table), and a run on someone else's bucket may be read-only."""
    from hexray.eval.restore import build_run_threshold, eval_model, iter_checkpoint_backbones, projection_fn
    from hexray.eval.trajectory import compute_trajectory

    s = settings or OfflineSettings()
    o = options or EvalOptions()
    start = time.perf_counter()
    run = require_run_dir(run_dir)
    if checkpoint is None:
        require_checkpoints(run)
    restored = (restore or _default_restore)(run, checkpoint)
    cfg = restored.config
    log(f"restored {restored.checkpoint} (epoch {restored.epoch})")
    data = (load_data or _default_load_data)(cfg, o, s.seed)
    log(f"eval images: {data.train_labels.numel()} train, {data.test_labels.numel()} test")
    offline = evaluate_offline(eval_model(restored), data, s, device=o.device)
    log("offline probes done")
    loss_space = _loss_space(projection_fn(restored.method.to(o.device)), cfg, data, o.device, s.seed)

    trajectory: list[dict[str, Any]] = []
    threshold_kind = getattr(getattr(cfg, "hex", None), "threshold", None)
    if o.trajectory:
        ckpts = _spread(find_checkpoints(run), o.max_trajectory_checkpoints)
        if ckpts:
            small = _subset(data, o.trajectory_max_train, o.trajectory_max_test, s.seed)
            trajectory = compute_trajectory(
                iter_checkpoint_backbones(restored.method, ckpts), small, threshold=build_run_threshold(cfg),
                device=o.device, temperature=s.temperature, seed=s.seed,
            )
            log(f"trajectory over {len(trajectory)} checkpoints done")

    metrics_frame = read_metrics(run)
    dest = run if out is None else StoragePath(out)  # storage.write_bytes creates its folders
    plots: dict[str, str] = {}
    if o.plots:
        from hexray.eval import plots as P

        folder = dest / PLOTS_DIR
        made = {
            "similarity": P.plot_similarity_evolution(trajectory, folder / "similarity_evolution.png",
                                                      mark_epsilon=threshold_kind == "adaptive"),
            "collapse": P.plot_collapse(trajectory, folder / "collapse.png"),
            "training": P.plot_training_curves(metrics_frame, folder / "training_curves.png"),
            "accuracy": P.plot_accuracy(metrics_frame, trajectory, folder / "accuracy.png", offline["metrics"]),
        }
        plots = {name: path.relative_to(dest) for name, path in made.items() if path is not None}

    result = {
        "run_dir": str(run),
        "out_dir": str(dest),
        "checkpoint": str(restored.checkpoint),
        "epoch": restored.epoch,
        "run": run_identity(read_config_dict(run)),
        "settings": {**asdict(s), **asdict(o)},
        "num_train": offline["num_train"],
        "num_test": offline["num_test"],
        "feature_dim": offline["feature_dim"],
        "metrics": offline["metrics"],
        "sem": offline["sem"],
        "loss_space": loss_space,
        "trajectory": trajectory,
        "plots": plots,
        "wall_s": round(time.perf_counter() - start, 2),
    }
    (dest / EVAL_FILE).write_text(json.dumps(result, indent=1, default=_jsonable))
    return result


def _loss_space(project: Callable[[torch.Tensor], torch.Tensor] | None, cfg: Any, data: EvalData, device: str,
                seed: int) -> dict[str, float] | None:
    """Where the negatives' denominator mass sits in the projector space, at the loss's τ
    (`hierarchy.negative_mass_shares`): whether removing or re-weighting a part of the label hierarchy can move
    the gradient at all. None without a projector or a class hierarchy."""
    if project is None or data.class_to_superclass is None:
        return None
    from hexray.eval.hierarchy import negative_mass_shares
    from hexray.eval.offline import embed

    tau = float(cfg.hex.temperature)
    z = embed(project, data.test_images, device=device)
    out = negative_mass_shares(z, data.test_labels, data.superclasses(data.test_labels), temperature=tau, seed=seed)
    return {"temperature": tau, **out}


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, Path | StoragePath):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to {EVAL_FILE}")
