"""HEX: InfoNCE with the denominator split into a local hierarchical set H(i) and a global set G(i).

    released (default, the reference code):  L_i = −ℓ_ip + log Σ_{n∈G(i)} e^{ℓ_in}
    decomposed:  L_i = −ℓ_ip + log( [e^{ℓ_ip}] + w_g Σ_{G(i)} e^{ℓ_in} + w_h Σ_{H(i)} q_ih e^{ℓ_ih} ),
    q_ih = |H(i)|·softmax_{H(i)}(β ℓ_ih),   ℓ = s/τ,   G(i) = all j ∉ {i, p(i)} ∪ H(i)     (design/HEX.md, "Loss")

[e^{ℓ_ip}] is there unless `positive_in_denominator: false`. H(i) = {j ∉ {i, p(i)} : s_ij > ε} with ε from
`hexray.losses.thresholds` (adaptive: mean over rows of the full row's nearest q-quantile).

One similarity matmul feeds both the threshold and the loss; the loss itself runs row chunk by row chunk in
float32 (hexray.losses._engine), so it is stable in bf16 autocast and has no host sync on the hot path.
`hex/local_denominator` and `hex/global_denominator` are the mean over rows of the *fractions* of D_i contributed
by H(i) and G(i) (the positive holds the rest).
"""

from __future__ import annotations

import torch
from torch import nn

from hexray.losses._checks import (
    check_contrastive_shapes,
    check_contrastive_values,
    check_labels,
    check_view_pair,
    pair_indices,
)
from hexray.losses._engine import Spec, contrastive_rows
from hexray.losses._sparse_hex import fused_adaptive_hex, fused_applies
from hexray.losses.base import LossOutput
from hexray.losses.infonce import info_nce
from hexray.losses.settings import HexConfig
from hexray.losses.thresholds import AdaptiveQuantileThreshold, build_threshold

KERNELS = ("auto", "dense", "sparse")
_STAT_TERMS = ("hex/epsilon", "hex/h_size", "hex/local_denominator", "hex/global_denominator")


class HEXLoss(nn.Module):
    """HEX loss for the general anchors×candidates layout (queues included) and the NT-Xent pair layout.

    `max_epochs` feeds the cosine schedules. Every call returns the same term keys: `loss/hex` (the loss returned),
    `hex/epsilon`, `hex/h_size`, `hex/local_denominator`, `hex/global_denominator`, `hex/active` (0 during
    warm-up, when the loss is plain InfoNCE and the statistics are 0), and `hex/purity` when labels are given.

    `kernel`: `dense` (row-chunked masks; no host sync, the GPU choice), `sparse` (adaptive threshold only: H(i)
    as a sparse list, hexray.losses._sparse_hex; CPU), or `auto` (sparse on CPU when the quantile's top is a small
    part of a row, dense otherwise). Both give the same values.
    """

    def __init__(self, cfg: HexConfig, max_epochs: int, *, chunk_rows: int | None = None, kernel: str = "auto") -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        for name in ("local_weight", "global_weight", "beta"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"hex.{name} must be >= 0, got {getattr(cfg, name)!r}")
        if cfg.temperature <= 0:
            raise ValueError(f"hex.temperature must be > 0, got {cfg.temperature!r}")
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs!r}")
        self.cfg = cfg
        self.threshold = build_threshold(cfg, max_epochs)
        if kernel == "sparse" and not isinstance(self.threshold, AdaptiveQuantileThreshold):
            raise ValueError(f"kernel='sparse' needs hex.threshold='adaptive', got {cfg.threshold!r}")
        self.kernel = kernel
        self.spec = Spec(
            temperature=cfg.temperature,
            global_weight=cfg.global_weight,
            local_weight=cfg.local_weight,
            beta=cfg.beta,
            local=cfg.variant == "decomposed",
            positive_in=cfg.positive_in,
            chunk_rows=chunk_rows,
        )

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
        validate: bool = True,
    ) -> LossOutput:
        """Row i of `anchors` against all `candidates`; `candidates[positive_index[i]]` is its positive and
        `candidates[self_index[i]]` (if given) the anchor itself. Labels (int64, −1 unknown) feed `hex/purity`
        and the `superclass` oracle. `validate=False` skips the value checks that cost a host sync."""
        check_contrastive_shapes(anchors, candidates, positive_index, self_index)
        check_labels("labels_anchor", labels_anchor, anchors.shape[0])
        check_labels("labels_candidates", labels_candidates, candidates.shape[0])
        if validate:
            check_contrastive_values(anchors, candidates, positive_index, self_index)
        with_purity = labels_anchor is not None and labels_candidates is not None
        if self.cfg.in_warmup(epoch):
            out = info_nce(anchors, candidates, positive_index, self_index, self.cfg.temperature, validate=False)
            zero = torch.zeros((), device=anchors.device)
            terms = {"loss/hex": out.loss.detach().float(), **{k: zero for k in _STAT_TERMS}, "hex/active": zero}
            if with_purity:
                terms["hex/purity"] = zero
            return LossOutput(loss=out.loss, terms=terms)
        sim = anchors @ candidates.T  # the one matmul; the threshold reads it detached
        lab_a, lab_c = (labels_anchor, labels_candidates) if with_purity else (None, None)
        if self._sparse(sim):
            known = (self.threshold.epsilon(sim.detach(), positive_index, self_index)
                     if self.threshold.over == "full_row" else None)
            rows, st = fused_adaptive_hex(sim, positive_index, self_index, self.spec, self.cfg.quantile, lab_a, lab_c,
                                          factors=(anchors, candidates), epsilon=known)
            eps = st["epsilon"]
        else:
            eps, mask_fn = self.threshold.prepare(
                sim.detach(), positive_index, self_index, epoch, labels_anchor, labels_candidates
            )
            rows, st = contrastive_rows(sim, positive_index, self_index, self.spec, mask_fn, lab_a, lab_c)
        loss = rows.mean()
        terms = {
            "loss/hex": loss.detach().float(),
            "hex/epsilon": eps.detach().float(),
            "hex/h_size": st["h_size"].float().mean(),
            "hex/local_denominator": st["frac_h"].float().mean(),
            "hex/global_denominator": st["frac_g"].float().mean(),
            "hex/active": torch.ones((), device=anchors.device),
        }
        if with_purity:
            terms["hex/purity"] = st["purity"].float()
        return LossOutput(loss=loss, terms=terms)

    def _sparse(self, sim: torch.Tensor) -> bool:
        if self.kernel != "auto":
            return self.kernel == "sparse"
        return (isinstance(self.threshold, AdaptiveQuantileThreshold) and sim.device.type == "cpu"
                and fused_applies(sim.shape[1], self.cfg.quantile))

    def pairs(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        *,
        epoch: int,
        labels: torch.Tensor | None = None,
        validate: bool = True,
    ) -> LossOutput:
        """NT-Xent layout: anchors = candidates = cat(z1, z2); `labels` are per image (repeated for both views)."""
        check_view_pair(z1, z2)
        check_labels("labels", labels, z1.shape[0])
        z = torch.cat([z1, z2])
        pos, self_idx = pair_indices(z1.shape[0], z.device)
        lab = None if labels is None else torch.cat([labels, labels])
        return self(z, z, pos, self_idx, epoch=epoch, labels_anchor=lab, labels_candidates=lab, validate=validate)
