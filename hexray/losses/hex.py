"""HEX: InfoNCE with the denominator split into a local hierarchical set H(i) and a global set G(i).

    L_i = −ℓ_ip + log( e^{ℓ_ip} + w_g Σ_{G(i)} e^{ℓ_in} + w_h Σ_{H(i)} q_ih e^{ℓ_ih} ),
    q_ih = |H(i)|·softmax_{H(i)}(β ℓ_ih),   ℓ = s/τ           (design/HEX.md, "Loss")

All three parts are computed as masked log-sum-exps in float32 from one similarity matmul, so the loss is
stable and exact in bf16 autocast. `hex/local_denominator` and `hex/global_denominator` are the mean over rows of
the *fractions* of the denominator contributed by H(i) and G(i) (the positive holds the rest).
"""

from __future__ import annotations

import torch
from torch import nn

from hexray.losses._checks import at_least_f32 as _at_least_f32
from hexray.losses._checks import check_contrastive_inputs, check_embeddings, negatives_mask, pair_indices
from hexray.losses.base import LossOutput
from hexray.losses.infonce import info_nce
from hexray.losses.settings import HexConfig
from hexray.losses.thresholds import build_threshold

_FILL = -1e30  # finite "minus infinity": keeps empty-set log-sum-exps (and their gradients) NaN-free


def _masked_lse(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x.masked_fill(~mask, _FILL), dim=1)


class HEXLoss(nn.Module):
    """HEX loss for the general anchors×candidates layout (queues included) and the NT-Xent pair layout."""

    def __init__(self, cfg: HexConfig, max_epochs: int) -> None:
        super().__init__()
        for name in ("local_weight", "global_weight", "beta"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"hex.{name} must be >= 0, got {getattr(cfg, name)!r}")
        if cfg.temperature <= 0:
            raise ValueError(f"hex.temperature must be > 0, got {cfg.temperature!r}")
        self.cfg = cfg
        self.threshold = build_threshold(cfg, max_epochs)

    def forward(
        self,
        anchors: torch.Tensor,
        candidates: torch.Tensor,
        positive_index: torch.Tensor,
        self_index: torch.Tensor | None = None,
        *,
        epoch: int,
        labels_anchor: torch.Tensor | None = None,
        labels_candidates: torch.Tensor | None = None,
    ) -> LossOutput:
        cfg = self.cfg
        check_contrastive_inputs(anchors, candidates, positive_index, self_index)
        dev = anchors.device
        zero = torch.zeros((), device=dev)
        if epoch < cfg.warmup_epochs:
            out = info_nce(anchors, candidates, positive_index, self_index, cfg.temperature, validate=False)
            for k in ("epsilon", "h_size", "local_denominator", "global_denominator", "active"):
                out.terms[f"hex/{k}"] = zero
            return out
        n, m = anchors.shape[0], candidates.shape[0]
        sim = _at_least_f32(anchors @ candidates.T)  # the one matmul; reused for threshold and loss
        neg = negatives_mask(n, m, positive_index, self_index, dev)
        thr = self.threshold(sim, neg, epoch, labels_anchor, labels_candidates)
        h = thr.mask
        g = neg & ~h
        rows = torch.arange(n, device=dev)
        logits = sim / cfg.temperature
        valid = neg.clone()
        valid[rows, positive_index] = True
        logits = logits - logits.masked_fill(~valid, _FILL).amax(1, keepdim=True).detach()  # row-max shift
        lp = logits[rows, positive_index]
        h_size = h.sum(1)
        w_g = torch.tensor(cfg.global_weight, device=dev).log()
        log_g = w_g + _masked_lse(logits, g)
        if cfg.variant == "released":
            log_h = torch.full_like(lp, float("-inf"))
        else:
            # log Σ_H q e^ℓ = log w_h + log|H| + lse_H((1+β)ℓ) − lse_H(βℓ)
            lse_1b = _masked_lse((1.0 + cfg.beta) * logits, h)
            lse_b = _masked_lse(cfg.beta * logits, h)
            log_h = torch.tensor(cfg.local_weight, device=dev).log() + h_size.to(logits.dtype).log() + lse_1b - lse_b
        parts = torch.stack([lp, log_g, log_h], dim=1)
        log_den = torch.logsumexp(parts, dim=1)
        loss = (log_den - lp).mean()
        frac = (parts.detach() - log_den.detach().unsqueeze(1)).exp().mean(0).float()
        terms = {
            "loss/hex": loss.detach().float(),
            "hex/epsilon": thr.epsilon.detach().float(),
            "hex/h_size": h_size.float().mean(),
            "hex/global_denominator": frac[1],
            "hex/local_denominator": frac[2],
            "hex/active": torch.ones((), device=dev),
        }
        if labels_anchor is not None and labels_candidates is not None:
            la, lc = labels_anchor.unsqueeze(1), labels_candidates.unsqueeze(0)
            known = h & (la >= 0) & (lc >= 0)
            terms["hex/purity"] = (known & (la == lc)).sum().float() / known.sum().clamp(min=1).float()
        return LossOutput(loss=loss, terms=terms)

    def pairs(
        self, z1: torch.Tensor, z2: torch.Tensor, *, epoch: int, labels: torch.Tensor | None = None
    ) -> LossOutput:
        """NT-Xent layout: anchors = candidates = cat(z1, z2); `labels` are per image (repeated for both views)."""
        check_embeddings("z1", z1)
        check_embeddings("z2", z2)
        if z1.shape != z2.shape:
            raise ValueError(f"z2 must have the shape of z1 {tuple(z1.shape)}, got {tuple(z2.shape)}")
        z = torch.cat([z1, z2])
        pos, self_idx = pair_indices(z1.shape[0], z.device)
        lab = None if labels is None else torch.cat([labels, labels])
        return self(z, z, pos, self_idx, epoch=epoch, labels_anchor=lab, labels_candidates=lab)
