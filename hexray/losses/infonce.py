"""InfoNCE (van den Oord et al. 2018) in a general anchors×candidates layout, SimCLR's NT-Xent, and DCL (Yeh et al.
2022: the positive out of the denominator)."""

from __future__ import annotations

import math

import torch

from hexray.losses._checks import check_contrastive_shapes, check_contrastive_values, check_view_pair, pair_indices
from hexray.losses._engine import Spec, contrastive_rows
from hexray.losses.base import LossOutput
from hexray.losses.hex import negatives_mask


def info_nce_rows(sim: torch.Tensor, positive_index: torch.Tensor, self_index: torch.Tensor | None,
                  temperature: float, decoupled: bool = False) -> torch.Tensor:
    """InfoNCE as its equation, L_i = −ℓ_ip + log Σ_{j≠i} e^{ℓ_ij}; DCL (`decoupled`) also leaves p(i) out of
    the sum. The readable reference that `info_nce`'s kernel is tested equal to."""
    rows = torch.arange(sim.shape[0], device=sim.device)
    ell = sim / temperature
    in_d = negatives_mask(positive_index, self_index, sim.shape[1])
    if not decoupled:
        in_d[rows, positive_index] = True
    return torch.logsumexp(ell.masked_fill(~in_d, -math.inf), dim=1) - ell[rows, positive_index]


def info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor | None = None,
    temperature: float = 0.1,
    *,
    validate: bool = True,
    decoupled: bool = False,
) -> LossOutput:
    """L_i = −ℓ_i,p(i) + log Σ_{j≠self(i)} e^{ℓ_ij}, ℓ = s/τ; mean over rows (HEX.md, w_h = w_g = 1).

    `decoupled=True` is DCL: the sum also skips j = p(i), L_i = −ℓ_i,p(i) + log Σ_{j∉{i,p(i)}} e^{ℓ_ij}
    (term `loss/dcl`); HEX `released` with H(i) empty.

    Similarities are computed in the input dtype (bf16 under autocast), the log-sum-exp in float32, row chunk by
    row chunk (hexray.losses._engine). `validate=False` skips the value checks (norms, index ranges), which cost a
    host sync; shape checks always run.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    check_contrastive_shapes(anchors, candidates, positive_index, self_index)
    if validate:
        check_contrastive_values(anchors, candidates, positive_index, self_index)
    spec = Spec(temperature, positive_in=not decoupled)
    rows, _ = contrastive_rows(anchors @ candidates.T, positive_index, self_index, spec)
    loss = rows.mean()
    return LossOutput(loss=loss, terms={"loss/dcl" if decoupled else "loss/infonce": loss.detach()})


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, *, validate: bool = True) -> LossOutput:
    """NT-Xent (SimCLR): anchors = candidates = cat(z1, z2), positive = the other view, self excluded."""
    check_view_pair(z1, z2)
    z = torch.cat([z1, z2])
    pos, self_idx = pair_indices(z1.shape[0], z.device)
    return info_nce(z, z, pos, self_idx, temperature, validate=validate)


def dcl(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, *, validate: bool = True) -> LossOutput:
    """Decoupled contrastive loss in the NT-Xent layout: the positive is not in the denominator."""
    check_view_pair(z1, z2)
    z = torch.cat([z1, z2])
    pos, self_idx = pair_indices(z1.shape[0], z.device)
    return info_nce(z, z, pos, self_idx, temperature, validate=validate, decoupled=True)
