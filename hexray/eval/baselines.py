"""Baselines computed the same way as the pretrained model: raw pixels and a randomly initialised network.

`evaluate_features` is the single scoring function for all three, so the numbers in a report are comparable:
same kNN (k, T), same probe settings, same superclass definitions.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hexray.eval.knn import as_superclass_map, knn_accuracies, superclass_knn_accuracies
from hexray.eval.linear_probe import balanced_subset, train_linear_probe


def raw_pixel_features(train_images: Tensor, test_images: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten images to (N, C·H·W) and centre both splits by the *train* mean (cosine kNN needs centring,
    otherwise every all-positive pixel vector looks alike)."""
    if train_images.ndim < 2 or test_images.ndim < 2:
        raise ValueError("train_images and test_images must have a batch dimension")
    train = train_images.reshape(train_images.shape[0], -1).float()
    test = test_images.reshape(test_images.shape[0], -1).float()
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"test_images have {test.shape[1]} values per image, train_images have {train.shape[1]}")
    mean = train.mean(dim=0, keepdim=True)
    return train - mean, test - mean


def random_init_copy(network: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of `network` with every parameter re-drawn by its module's own `reset_parameters`
    (PyTorch default init; BatchNorm running statistics reset too). The global RNG state is left untouched."""
    clone = copy.deepcopy(network)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone


@dataclass
class EvalSettings:
    """Shared evaluation settings (kNN as InstDisc/DINO; probe as design/HEX.md, shorter by default on CPU)."""

    ks: Sequence[int] = (20, 200)
    temperature: float = 0.07
    knn: bool = True
    probe: bool = True
    probe_epochs: int = 100
    probe_lr: float = 0.3
    probe_schedule: str = "step"
    probe_batch_size: int = 1024
    probe_weight_decay: float = 0.0
    label_fractions: Sequence[float] = (1.0,)
    superclass_probe: bool = False
    seed: int = 0


def evaluate_features(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int,
    class_to_superclass: Sequence[int] | Tensor | None = None,
    settings: EvalSettings | None = None,
) -> dict[str, float]:
    """Fine and superclass accuracies of one (train, test) feature pair, as a flat metrics dict.

    Keys: `knn/top1@{k}`; with a superclass map also `knn/superclass@{k}` (fine prediction mapped to its
    superclass — the number to report) and `knn/superclass_direct@{k}` (vote on superclass labels);
    with the probe `probe/top1` and `probe/superclass` (fine prediction mapped), suffixed `@{pct}pct` for label
    fractions < 1 (e.g. `probe/top1@10pct`). With `superclass_probe` also `probe/superclass_direct` — a probe
    trained on the superclass labels themselves (same label subset).
    """
    s = settings or EvalSettings()
    metrics: dict[str, float] = {}
    knn_kw = dict(ks=s.ks, temperature=s.temperature, num_classes=num_classes)
    table = None if class_to_superclass is None else as_superclass_map(class_to_superclass, num_classes)
    if s.knn and table is None:
        for k, acc in knn_accuracies(train_x, train_y, test_x, test_y, **knn_kw).items():
            metrics[f"knn/top1@{k}"] = acc
    elif s.knn:
        sup = superclass_knn_accuracies(train_x, train_y, test_x, test_y, table, **knn_kw)
        for k in sup["fine"]:
            metrics[f"knn/top1@{k}"] = sup["fine"][k]
            metrics[f"knn/superclass@{k}"] = sup["fine_then_map"][k]
            metrics[f"knn/superclass_direct@{k}"] = sup["direct"][k]
    if not s.probe:
        return metrics
    for fraction in s.label_fractions:
        result = train_linear_probe(
            train_x, train_y, test_x, test_y,
            epochs=s.probe_epochs, lr=s.probe_lr, schedule=s.probe_schedule, label_fraction=fraction,
            batch_size=s.probe_batch_size, weight_decay=s.probe_weight_decay, num_classes=num_classes, seed=s.seed,
        )
        suffix = "" if fraction == 1.0 else f"@{fraction * 100:g}pct"
        metrics[f"probe/top1{suffix}"] = result.accuracy
        if table is not None:
            test_super = table[test_y.cpu().long()]
            metrics[f"probe/superclass{suffix}"] = (table[result.predictions] == test_super).float().mean().item()
            if s.superclass_probe:
                subset = balanced_subset(train_y, fraction, s.seed)  # the fine probe's labelled images
                direct = train_linear_probe(
                    train_x[subset], table[train_y.cpu().long()[subset]], test_x, test_super,
                    epochs=s.probe_epochs, lr=s.probe_lr, schedule=s.probe_schedule, batch_size=s.probe_batch_size,
                    weight_decay=s.probe_weight_decay, num_classes=int(table.max()) + 1, seed=s.seed,
                )
                metrics[f"probe/superclass_direct{suffix}"] = direct.accuracy
    return metrics
