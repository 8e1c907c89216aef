"""Hierarchy diagnostics over training: one point per checkpoint (design/HEX.md — local vs global collapse).

For each checkpoint's frozen backbone, on the same capped test images: effective rank globally and within each
superclass and class, kNN accuracy, the pairwise cosine-similarity histogram (same vs different class), and the
configured HEX threshold applied to that embedding (ε, mean |H(i)|, H(i)'s class/superclass purity). A healthy
HEX run shows the histogram splitting into a same-class bump above ε while the global rank stays high.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from hexray.errors import DataError
from hexray.eval.hierarchy import (
    cosine_similarity_histogram,
    effective_rank,
    hierarchy_set_statistics,
    local_global_rank,
)
from hexray.eval.knn import knn_accuracies, superclass_knn_accuracies
from hexray.eval.offline import EvalData, embed


def group_ranks(features: Tensor, groups: Tensor, names: list[str] | None = None,
                min_size: int = 2) -> dict[str, float]:
    """Effective rank within each group (label >= 0 with at least `min_size` members), keyed by group name."""
    out = {}
    for g in sorted(groups.unique().tolist()):
        members = groups == g
        if g < 0 or int(members.sum()) < min_size:
            continue
        name = names[g] if names and g < len(names) else str(g)
        out[name] = effective_rank(features[members])
    return out


def checkpoint_point(
    backbone: nn.Module,
    data: EvalData,
    *,
    epoch: int,
    threshold: Any | None = None,
    k: int = 20,
    temperature: float = 0.07,
    bins: int = 50,
    max_pairs_samples: int = 1000,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Diagnostics of one checkpoint (see module docstring); JSON-serialisable."""
    backbone = backbone.to(device)
    train_h = embed(backbone, data.train_images, batch_size=batch_size, device=device)
    test_h = embed(backbone, data.test_images, batch_size=batch_size, device=device)
    y = data.test_labels.long()
    sup = data.superclasses(y)
    has_super = data.class_to_superclass is not None
    point: dict[str, Any] = {"epoch": int(epoch)}
    point.update(local_global_rank(test_h, y, sup if has_super else None))
    point["rank/per_class"] = group_ranks(test_h, y, data.class_names)
    if has_super:
        point["rank/per_superclass"] = group_ranks(test_h, sup, data.superclass_names)
        knn = superclass_knn_accuracies(train_h, data.train_labels, test_h, y, data.class_to_superclass, ks=(k,),
                                        temperature=temperature, num_classes=data.num_classes)
        point[f"knn/top1@{k}"] = knn["fine"][k]
        point[f"knn/superclass@{k}"] = knn["fine_then_map"][k]
    else:
        point[f"knn/top1@{k}"] = knn_accuracies(train_h, data.train_labels, test_h, y, ks=(k,),
                                                temperature=temperature, num_classes=data.num_classes)[k]
    hist = cosine_similarity_histogram(test_h, labels=y, bins=bins, max_samples=max_pairs_samples, seed=seed)
    point["histogram"] = {
        "edges": hist.edges.tolist(),
        "counts": hist.counts.tolist(),
        "same_label": hist.same_label.tolist(),
        "different_label": hist.different_label.tolist(),
    }
    if threshold is not None:
        stats = hierarchy_set_statistics(test_h, threshold, epoch=epoch, labels=y, superclasses=sup if has_super
                                         else None, max_samples=max_pairs_samples, seed=seed)
        point.update(stats)
    return point


def compute_trajectory(backbones: Iterable[tuple[int, nn.Module]], data: EvalData, *, threshold: Any | None = None,
                       **kwargs: Any) -> list[dict[str, Any]]:
    """`checkpoint_point` for each (epoch, backbone), sorted by epoch. `backbones` may be a lazy generator
    (one checkpoint in memory at a time)."""
    points = [checkpoint_point(net, data, epoch=epoch, threshold=threshold, **kwargs) for epoch, net in backbones]
    if not points:
        raise DataError("no checkpoints to trace")
    return sorted(points, key=lambda p: p["epoch"])
