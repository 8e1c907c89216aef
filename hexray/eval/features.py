"""Frozen-feature extraction: run a backbone over eval batches (`image`, `label`, `superclass`, `id` dicts,
docs/interfaces.md) and collect features for kNN / linear probes / hierarchy metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn


def extract_features(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    device: str | torch.device = "cpu",
    key: str = "image",
    label_key: str = "label",
    superclass_key: str = "superclass",
) -> tuple[Tensor, Tensor, Tensor]:
    """(features float32 (N, d), labels int64 (N,), superclasses int64 (N,)), all on CPU.

    The model runs in eval mode under no_grad (BatchNorm uses running statistics, no dropout); its previous
    train/eval mode is restored afterwards. Batch values may be tensors or arrays (e.g. Ray Data numpy batches).
    A batch without `superclass_key` yields −1 superclasses (unknown), as in the data contract.
    """
    was_training = model.training
    model.eval()
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    supers: list[Tensor] = []
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                for name in (key, label_key):
                    if name not in batch:
                        raise ValueError(f"batch {i} has no key {name!r} (keys: {sorted(batch)})")
                images = torch.as_tensor(batch[key]).to(device, torch.float32)
                out = model(images)
                if out.ndim != 2:
                    raise ValueError(f"model output must be (B, d), got shape {tuple(out.shape)}")
                feats.append(out.float().cpu())
                y = torch.as_tensor(batch[label_key]).long().cpu().flatten()
                labels.append(y)
                if superclass_key in batch:
                    supers.append(torch.as_tensor(batch[superclass_key]).long().cpu().flatten())
                else:
                    supers.append(torch.full_like(y, -1))
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("batches is empty: nothing to extract")
    return torch.cat(feats), torch.cat(labels), torch.cat(supers)
