"""Simplicial Embeddings (Lavoie et al., ICLR 2023): L softmax simplices of V dims.

    z = BN(W h),  W: d → L·V (no bias);   z̄_l = softmax(z_l / τ) for l = 1..L;   ẑ = concat(z̄_1, …, z̄_L)

τ is `tau_online` on the online branch and `tau_target` on the target branch of momentum methods (and on SimCLR's
second view). Placement (SEM paper): backbone → SEMHead → projector; probes read the SEM embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from hexray.models.settings import SEMConfig

BRANCHES = ("online", "target")


class SEMHead(nn.Module):
    """BatchNorm'd linear map to L·V logits, softmax within each simplex; output (B, L·V), each simplex sums to 1."""

    def __init__(self, in_dim: int, cfg: SEMConfig) -> None:
        super().__init__()
        if not isinstance(in_dim, int) or in_dim < 1:
            raise ValueError(f"SEMHead in_dim must be an integer >= 1, got {in_dim!r}")
        self.cfg = cfg
        self.num_simplices, self.simplex_dim = cfg.num_simplices, cfg.simplex_dim
        self.output_dim = cfg.output_dim
        self.linear = nn.Linear(in_dim, self.output_dim, bias=False)
        self.bn = nn.BatchNorm1d(self.output_dim)

    def forward(self, x: torch.Tensor, branch: str = "online") -> torch.Tensor:
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
        tau = self.cfg.tau_online if branch == "online" else self.cfg.tau_target
        z = self.bn(self.linear(x)).view(x.shape[0], self.num_simplices, self.simplex_dim)
        wide = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z  # softmax at ≥ float32 under autocast
        return torch.softmax(wide / tau, dim=-1).to(z.dtype).flatten(1)
