"""Barlow Twins (Zbontar et al. 2021, eq. 1): push the cross-correlation of batch-normalised embeddings to I."""

from __future__ import annotations

import torch

from hexray.losses._checks import check_view_pair
from hexray.losses.base import LossOutput


def _batch_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    # BatchNorm1d(affine=False) in training mode: biased variance.
    return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + eps)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> LossOutput:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij², C = BN(z1)ᵀBN(z2)/N; terms `barlow/on_diag`, `barlow/off_diag`."""
    check_view_pair(z1, z2)
    if z1.shape[0] < 2:
        raise ValueError("z1 needs at least 2 rows for batch normalisation")
    if lambd < 0:
        raise ValueError(f"lambd must be >= 0, got {lambd!r}")
    n = z1.shape[0]
    c = _batch_norm(z1.float(), eps).T @ _batch_norm(z2.float(), eps) / n
    diag = torch.diagonal(c)
    on = (1.0 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    loss = on + lambd * off
    terms = {"loss/barlow": loss.detach(), "barlow/on_diag": on.detach(), "barlow/off_diag": off.detach()}
    return LossOutput(loss=loss, terms=terms)
