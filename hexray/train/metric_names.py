"""Which metrics a training run reports at each epoch's end: the names a sweep's `metric` may optimise.

Pure PyTorch (no Ray): `hexray sweep --check` asks this before anything starts. The loss terms come from one
forward pass of the configured method on a few random images, so a new method's terms are known without a list
to keep in step; the loop's own keys are `EPOCH_KEYS` (tests compare both against a real run's metrics.csv).
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

EPOCH_KEYS = ("epoch", "step", "epoch_end", "loss", "lr", "images_per_s", "time/data_wait_frac",
              "time/first_batch_s", "time/epoch_s", "nan_skips", "data/corrupt", "data/order_digest")
KNN_KEYS = ("knn/top1", "knn/superclass")
ONLINE_PROBE_KEYS = ("probe/online_top1", "probe/online_superclass")


def epoch_metric_names(cfg: Any) -> set[str]:
    """Every key of an epoch-end report of a run of `cfg` (a TrainConfig) on a dataset with superclasses."""
    names = {*EPOCH_KEYS, *loss_term_names(cfg)}
    if cfg.probe.knn_every_epochs > 0:
        names.update(KNN_KEYS)
        if cfg.probe.online:
            names.update(ONLINE_PROBE_KEYS)
    return names


def measured_every(cfg: Any, metric: str) -> int:
    """Every how many epochs `metric` is measured: the kNN monitor and the online probe run every
    `probe.knn_every_epochs` epochs and after the last (the epochs between repeat the last measurement, and the
    reports before the first lack it); everything else, every epoch."""
    return cfg.probe.knn_every_epochs if metric in (*KNN_KEYS, *ONLINE_PROBE_KEYS) else 1


def monitor_runs_at(epoch: int, every: int, total_epochs: int) -> bool:
    """Whether the kNN monitor and the online probe are measured at the end of `epoch` (1-based): every `every`
    epochs and after the last; `every` 0 never."""
    return every > 0 and (epoch % every == 0 or epoch == total_epochs)


def loss_term_names(cfg: Any) -> set[str]:
    """The `out.terms` keys of the configured method, before and after HEX's warm-up (on a tiny convnet: the
    backbone changes no term)."""
    import json

    from hexray.config import config_to_dict

    d = config_to_dict(cfg)
    key = json.dumps({k: d[k] for k in ("method", "hex", "sem")} | {"epochs": cfg.run.epochs},
                     sort_keys=True, default=str)
    return set(_terms(key))


@lru_cache(maxsize=32)
def _terms(key: str) -> frozenset[str]:
    import json

    import torch

    from hexray.config import load_config
    from hexray.methods.registry import build_method, method_view_spec

    raw = json.loads(key)
    epochs = raw.pop("epochs")
    sets = {f"{section}.{k}": v for section, values in raw.items() for k, v in values.items()}
    sets.update({"backbone.name": "convnet", "backbone.width": 4, "backbone.in_channels": 1})  # terms ignore it
    with warnings.catch_warnings():  # e.g. "HEX never switches on": the run's own config load already said so
        warnings.simplefilter("ignore")
        cfg = load_config(None, {**sets, "run.epochs": epochs})
    generator = torch.Generator().manual_seed(0)
    method = build_method(cfg.method, cfg.backbone, cfg.hex, cfg.sem, max_epochs=epochs)
    size, batch = 16, 8
    crops = method_view_spec(cfg.method)  # the views the method declares: two global crops and any local ones
    sides = [size, size] + [crops.local_size(size)] * crops.local_crops
    views = [torch.rand(batch, cfg.backbone.in_channels, s, s, generator=generator) for s in sides]
    superclass = torch.arange(batch) % 2
    names: set[str] = set()
    with torch.no_grad():
        for epoch in sorted({0, epochs - 1}):
            names.update(method(*views, epoch=epoch, superclass=superclass, label=torch.arange(batch)).terms)
    return frozenset(names)


def unknown_metric_message(metric: str, names: set[str], where: str) -> str | None:
    """None if `metric` is reported; else one line with a did-you-mean and the reported names."""
    if metric in names:
        return None
    from hexray.config.binding import closest

    close = closest(metric, sorted(names))
    hint = f"; did you mean {close!r}?" if close else ""
    return f"{where}: {metric!r} is not a metric these runs report{hint} (they report: {', '.join(sorted(names))})"
