"""Weighted kNN classification on frozen features (InstDisc / DINO recipe).

Each query votes with its k nearest training samples by cosine similarity s, weighted by exp(s / T)
(Wu et al. 2018, eq. 9; DINO `eval_knn.py`). Queries are processed in chunks so a 10k × 60k similarity matrix
never sits in memory at once, and one top-k_max per chunk serves every requested k (k = 20 and 200 together
cost one matrix product and one top-k).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_CHUNK_SIZE = 512


def _check_features(train_features: Tensor, train_labels: Tensor, query_features: Tensor) -> None:
    if train_features.ndim != 2:
        raise ValueError(f"train_features must be 2-D (N, d), got shape {tuple(train_features.shape)}")
    if query_features.ndim != 2:
        raise ValueError(f"query_features must be 2-D (M, d), got shape {tuple(query_features.shape)}")
    if query_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"query_features has dim {query_features.shape[1]} but train_features has dim {train_features.shape[1]}"
        )
    if train_labels.ndim != 1 or train_labels.shape[0] != train_features.shape[0]:
        raise ValueError(
            f"train_labels must have shape ({train_features.shape[0]},), got {tuple(train_labels.shape)}"
        )
    if train_features.shape[0] == 0:
        raise ValueError("train_features is empty")


def _validate(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    ks: Sequence[int],
    temperature: float,
    num_classes: int,
    chunk_size: int,
) -> tuple[tuple[int, ...], Tensor]:
    _check_features(train_features, train_labels, query_features)
    ks = tuple(int(k) for k in ks)
    if not ks:
        raise ValueError("ks must name at least one k")
    if min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {min(ks)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    labels = train_labels.to(train_features.device, torch.long)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"train_labels must lie in [0, num_classes={num_classes})")
    return ks, labels


def knn_predict_multi(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    *,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    num_classes: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[int, Tensor]:
    """Predicted labels of every query for each k in `ks`, from a single top-max(ks) search.

    Features are L2-normalised here (cosine similarity). Votes per class c: Σ_{j ∈ N_k(q), y_j = c} exp(s_qj / T);
    the row maximum is subtracted inside the exponent (same argmax, no overflow for small T).
    Returns {k: LongTensor (M,)} on the device of `train_features`.
    """
    ks, labels = _validate(train_features, train_labels, query_features, ks, temperature, num_classes, chunk_size)
    return _vote(train_features, [(labels, num_classes)], query_features, ks, temperature, chunk_size)[0]


def _vote(
    train_features: Tensor,
    label_sets: list[tuple[Tensor, int]],
    query_features: Tensor,
    ks: tuple[int, ...],
    temperature: float,
    chunk_size: int,
) -> list[dict[int, Tensor]]:
    """One chunked top-k search; weighted votes for every (labels, num_classes) set and every k."""
    train = F.normalize(train_features.float(), dim=1)
    queries = F.normalize(query_features.float().to(train.device), dim=1)
    k_max = min(max(ks), train.shape[0])
    out: list[dict[int, list[Tensor]]] = [{k: [] for k in ks} for _ in label_sets]
    for start in range(0, queries.shape[0], chunk_size):
        sims, idx = (queries[start : start + chunk_size] @ train.T).topk(k_max, dim=1)  # sorted, descending
        weights = ((sims - sims[:, :1]) / temperature).exp()
        for (labels, num_classes), preds in zip(label_sets, out, strict=True):
            neighbour_labels = labels.to(train.device)[idx]
            for k in ks:
                kk = min(k, k_max)
                votes = torch.zeros(idx.shape[0], num_classes, device=train.device)
                votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
                preds[k].append(votes.argmax(dim=1))
    empty = torch.empty(0, dtype=torch.long, device=train.device)
    return [{k: torch.cat(parts) if parts else empty for k, parts in preds.items()} for preds in out]


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Predicted labels (M,) of a temperature-weighted kNN vote with one k. See `knn_predict_multi`."""
    return knn_predict_multi(
        train_features, train_labels, query_features,
        ks=(k,), temperature=temperature, num_classes=num_classes, chunk_size=chunk_size,
    )[k]


def _accuracy(pred: Tensor, target: Tensor) -> float:
    if pred.numel() == 0:
        raise ValueError("query set is empty")
    return (pred.cpu() == target.cpu().long()).float().mean().item()


def _check_query_labels(query_features: Tensor, query_labels: Tensor) -> None:
    if query_labels.ndim != 1 or query_labels.shape[0] != query_features.shape[0]:
        raise ValueError(
            f"query_labels must have shape ({query_features.shape[0]},), got {tuple(query_labels.shape)}"
        )


def knn_accuracies(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    *,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    num_classes: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[int, float]:
    """Top-1 kNN accuracy for each k in `ks` (one shared top-k search)."""
    _check_query_labels(query_features, query_labels)
    preds = knn_predict_multi(
        train_features, train_labels, query_features,
        ks=ks, temperature=temperature, num_classes=num_classes, chunk_size=chunk_size,
    )
    return {k: _accuracy(p, query_labels) for k, p in preds.items()}


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Top-1 accuracy of `knn_predict` against `query_labels`."""
    return knn_accuracies(
        train_features, train_labels, query_features, query_labels,
        ks=(k,), temperature=temperature, num_classes=num_classes, chunk_size=chunk_size,
    )[k]


def as_superclass_map(class_to_superclass: Sequence[int] | Tensor, num_classes: int) -> Tensor:
    """Validated class → superclass lookup table (LongTensor of length `num_classes`, entries >= 0)."""
    table = torch.as_tensor(class_to_superclass, dtype=torch.long).flatten()
    if table.numel() != num_classes:
        raise ValueError(f"class_to_superclass must have {num_classes} entries (one per class), got {table.numel()}")
    if table.numel() and table.min() < 0:
        raise ValueError("class_to_superclass must map every class to a superclass >= 0")
    return table


def superclass_knn_accuracies(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    class_to_superclass: Sequence[int] | Tensor,
    *,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    num_classes: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, dict[int, float]]:
    """Superclass accuracy of kNN, computed two ways (both reported, never mixed):

    - `fine_then_map`: predict the fine class by kNN, map prediction and truth through `class_to_superclass`
      (what a fine-grained classifier gets right at the coarse level);
    - `direct`: vote on the training samples' superclass labels (how well neighbourhoods follow the hierarchy).
    Both share one top-k search, which also yields the fine accuracy.
    Returns {"fine": {k: acc}, "fine_then_map": {k: acc}, "direct": {k: acc}}.
    """
    _check_query_labels(query_features, query_labels)
    table = as_superclass_map(class_to_superclass, num_classes)
    num_super = int(table.max().item()) + 1
    ks, labels = _validate(train_features, train_labels, query_features, ks, temperature, num_classes, chunk_size)
    query_super = table[query_labels.cpu().long()]
    fine, direct = _vote(
        train_features, [(labels, num_classes), (table.to(labels.device)[labels], num_super)],
        query_features, ks, temperature, chunk_size,
    )
    return {
        "fine": {k: _accuracy(p, query_labels) for k, p in fine.items()},
        "fine_then_map": {k: _accuracy(table[p.cpu()], query_super) for k, p in fine.items()},
        "direct": {k: _accuracy(p, query_super) for k, p in direct.items()},
    }
