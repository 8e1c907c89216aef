"""HEXLoss: the HEX regularizer as a module — warm-up, threshold, kernel choice and the logged statistics.

The equation itself is `hexray.losses.hex` (the readable reference); this module runs it fast. One similarity
matmul feeds both the threshold and the loss; the `dense` kernel (hexray.losses._engine) runs row chunk by row
chunk in float32, so it is stable in bf16 autocast and has no host sync on the hot path; the `sparse` kernel
(hexray.losses._sparse_hex) keeps H(i) as a sparse list on CPU. `hex/local_denominator` and
`hex/global_denominator` are the mean over rows of the *fractions* of D_i contributed by H(i) and G(i) (the
positive holds the rest).
"""

from __future__ import annotations

import math

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
from hexray.losses.hex import (
    adaptive_epsilon,
    hex_rows,
    hierarchical_set,
    keep_global_nonempty,
    negatives_mask,
)
from hexray.losses.hex_diagnostics import hierarchy_diagnostics
from hexray.losses.infonce import info_nce
from hexray.losses.settings import HexConfig
from hexray.losses.thresholds import AdaptiveQuantileThreshold, build_threshold

KERNELS = ("auto", "dense", "sparse", "reference")
DIAGNOSTIC_ROWS = 256
_STAT_TERMS = ("hex/epsilon", "hex/h_size", "hex/local_denominator", "hex/global_denominator")


class HEXLoss(nn.Module):
    """HEX loss for the general anchors×candidates layout (queues included) and the NT-Xent pair layout.

    `max_epochs` feeds the cosine schedules. Every call returns the same term keys: `loss/hex` (the loss returned),
    `hex/epsilon`, `hex/h_size`, `hex/local_denominator`, `hex/global_denominator`, `hex/active` (0 during
    warm-up, when the loss is plain InfoNCE and the statistics are 0), and `hex/purity` when labels are given.

    `kernel`: `dense` (row-chunked masks; no host sync, the GPU choice), `sparse` (adaptive threshold only: H(i)
    as a sparse list, hexray.losses._sparse_hex; CPU), or `auto` (sparse on CPU when the quantile's top is a small
    part of a row, dense otherwise), or `reference` (hexray.losses.hex: whole N×M masks, for reading and
    checking, not speed). All give the same values.
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
        classes: tuple[torch.Tensor, torch.Tensor] | None = None,
        validate: bool = True,
    ) -> LossOutput:
        """Row i of `anchors` against all `candidates`; `candidates[positive_index[i]]` is its positive and
        `candidates[self_index[i]]` (if given) the anchor itself. Labels (int64, −1 unknown; superclasses) feed
        `hex/purity` and the `superclass` oracle. `classes` (anchors', candidates' fine labels) add what H(i)
        holds against chance (hexray.losses.hex_diagnostics); only the `superclass_siblings` oracle's H(i) reads
        them.
        `validate=False` skips the value checks that cost a host sync."""
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
        if self.kernel == "reference":
            rows, st = self._reference(sim, positive_index, self_index, epoch, lab_a, lab_c, classes)
            eps = st["epsilon"]
        elif self._sparse(sim):
            known = (self.threshold.epsilon(sim.detach(), positive_index, self_index)
                     if self.threshold.over == "full_row" else None)
            rows, st = fused_adaptive_hex(sim, positive_index, self_index, self.spec, self.cfg.quantile, lab_a, lab_c,
                                          factors=(anchors, candidates), epsilon=known)
            eps = st["epsilon"]
        else:
            eps, mask_fn = self.threshold.prepare(
                sim.detach(), positive_index, self_index, epoch, labels_anchor, labels_candidates, classes
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
        if classes is not None:
            terms.update(self._diagnostics(sim.detach(), eps, positive_index, self_index, epoch, lab_a, lab_c,
                                           classes))
        return LossOutput(loss=loss, terms=terms)

    def _diagnostics(self, sim, eps, positive_index, self_index, epoch, labels_a, labels_c, classes):
        """H(i) as the loss chose it (same threshold and ε, same guard on G(i)), against class and superclass
        labels, for the first DIAGNOSTIC_ROWS anchors (a random sample of the batch: ~5% of a CPU step at any
        batch size, where all rows cost as much as the loss at 1024 anchors)."""
        r = slice(0, min(sim.shape[0], DIAGNOSTIC_ROWS))
        sim, positive_index = sim[r], positive_index[r]
        self_index = None if self_index is None else self_index[r]
        sup = None if labels_a is None else (labels_a[r], labels_c)
        neg = negatives_mask(positive_index, self_index, sim.shape[1])
        if isinstance(self.threshold, AdaptiveQuantileThreshold):
            h = hierarchical_set(sim, neg, eps)
        else:
            h = self.threshold(sim, neg, epoch, *(sup or (None, None)), (classes[0][r], classes[1])).mask
        h = keep_global_nonempty(h, neg, self.cfg)
        out = hierarchy_diagnostics(h, neg, (classes[0][r], classes[1]), sup)
        out.pop("hex/purity_superclass", None)  # = `hex/purity`, which the kernels compute
        return out

    def _reference(self, sim, positive_index, self_index, epoch, labels_a, labels_c, classes):
        """hexray.losses.hex on whole masks, with the same statistics as the kernels."""
        neg = negatives_mask(positive_index, self_index, sim.shape[1])
        if isinstance(self.threshold, AdaptiveQuantileThreshold):
            eps = adaptive_epsilon(sim, neg, self.cfg.quantile, self.threshold.over)
            h = hierarchical_set(sim, neg, eps)
        else:
            picked = self.threshold(sim, neg, epoch, labels_a, labels_c, classes)
            eps, h = picked.epsilon, picked.mask
        h = keep_global_nonempty(h, neg, self.cfg)
        rows = hex_rows(sim, positive_index, neg, h, self.cfg)
        rows_idx = torch.arange(sim.shape[0], device=sim.device)
        ell = sim.detach() / self.cfg.temperature
        log_d = rows.detach() + ell[rows_idx, positive_index]
        frac_g = self.cfg.global_weight * (torch.logsumexp(ell.masked_fill(~(neg & ~h), -math.inf), 1) - log_d).exp()
        frac_p = (ell[rows_idx, positive_index] - log_d).exp() if self.cfg.positive_in else torch.zeros_like(frac_g)
        frac_h = (1 - frac_g - frac_p) if self.cfg.variant == "decomposed" else torch.zeros_like(frac_g)
        st = {"epsilon": eps, "h_size": h.sum(1), "frac_g": frac_g, "frac_h": frac_h}
        if labels_a is not None:
            known = h & (labels_a >= 0).unsqueeze(1) & (labels_c >= 0).unsqueeze(0)
            same = known & (labels_a.unsqueeze(1) == labels_c.unsqueeze(0))
            st["purity"] = same.sum().to(sim.dtype) / known.sum().clamp(min=1)
        return rows, st

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
        classes: torch.Tensor | None = None,
        validate: bool = True,
    ) -> LossOutput:
        """NT-Xent layout: anchors = candidates = cat(z1, z2); `labels` (superclasses) and `classes` (fine labels)
        are per image (repeated for both views)."""
        check_view_pair(z1, z2)
        check_labels("labels", labels, z1.shape[0])
        check_labels("classes", classes, z1.shape[0])
        z = torch.cat([z1, z2])
        pos, self_idx = pair_indices(z1.shape[0], z.device)
        lab = None if labels is None else torch.cat([labels, labels])
        fine = None if classes is None else torch.cat([classes, classes])
        return self(z, z, pos, self_idx, epoch=epoch, labels_anchor=lab, labels_candidates=lab,
                    classes=None if fine is None else (fine, fine), validate=validate)
