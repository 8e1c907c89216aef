"""VICReg (Bardes et al. 2022, eqs. 1–6): invariance (MSE) + variance (hinge on std) + covariance (off-diagonal)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hexray.losses._checks import check_view_pair
from hexray.losses.base import LossOutput


def _variance(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.relu(1.0 - torch.sqrt(x.var(dim=0) + eps)).mean()


def _covariance(x: torch.Tensor) -> torch.Tensor:
    n, d = x.shape
    xc = x - x.mean(0)
    cov = xc.T @ xc / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    var_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> LossOutput:
    """λ·s(z1,z2) + μ·[v(z1)+v(z2)]/2 + ν·[c(z1)+c(z2)]; terms `vicreg/invariance|variance|covariance` (unweighted)."""
    check_view_pair(z1, z2)
    if z1.shape[0] < 2:
        raise ValueError("z1 needs at least 2 rows for variance/covariance")
    z1, z2 = z1.float(), z2.float()
    inv = F.mse_loss(z1, z2)
    var = (_variance(z1, eps) + _variance(z2, eps)) / 2
    cov = _covariance(z1) + _covariance(z2)
    loss = sim_coeff * inv + var_coeff * var + cov_coeff * cov
    terms = {"loss/vicreg": loss.detach(), "vicreg/invariance": inv.detach(), "vicreg/variance": var.detach(),
             "vicreg/covariance": cov.detach()}
    return LossOutput(loss=loss, terms=terms)
