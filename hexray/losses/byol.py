"""BYOL / SimSiam regression loss (Grill et al. 2020, eq. 2): 2 − 2·cos(p, z), mean over the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hexray.losses._checks import check_embeddings


def cosine_regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Returns a scalar tensor (not a LossOutput); `z` is the target and is used as given (detach it yourself)."""
    check_embeddings("p", p)
    check_embeddings("z", z)
    if p.shape != z.shape:
        raise ValueError(f"z must have the shape of p {tuple(p.shape)}, got {tuple(z.shape)}")
    cos = F.cosine_similarity(p.float(), z.float(), dim=1)
    return (2.0 - 2.0 * cos).mean()
