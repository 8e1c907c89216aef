"""How HEX picks the local hierarchical set H(i) among an anchor's negatives (design/HEX.md, "Threshold ε").

Every kind implements `threshold(sim, negatives, epoch, labels_anchor=None, labels_candidates=None)` and returns
the N×M bool mask of H(i) (always a subset of `negatives`, so never the anchor nor its positive) plus ε, the
scalar threshold actually used (for logging). HEXLoss uses the equivalent row-chunked form
`prepare(sim, positive_index, self_index, epoch, labels_anchor, labels_candidates) -> (ε, mask_fn)`, which never
builds N×M masks at once; `mask_fn(sim_chunk, rows)` may include the anchor and its positive (the loss drops them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from hexray.losses._checks import at_least_f32 as _at_least_f32
from hexray.losses._engine import MaskFn
from hexray.losses._rowselect import row_topk
from hexray.losses.settings import HexConfig


@dataclass
class ThresholdResult:
    """mask: N×M bool, True where candidate j is in H(i). epsilon: detached 0-dim float32 tensor."""

    mask: torch.Tensor
    epsilon: torch.Tensor


class Threshold(Protocol):
    def prepare(
        self,
        sim: torch.Tensor,
        positive_index: torch.Tensor,
        self_index: torch.Tensor | None,
        epoch: int,
        labels_anchor: torch.Tensor | None = None,
        labels_candidates: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, MaskFn]: ...

    def __call__(
        self,
        sim: torch.Tensor,
        negatives: torch.Tensor,
        epoch: int,
        labels_anchor: torch.Tensor | None = None,
        labels_candidates: torch.Tensor | None = None,
    ) -> ThresholdResult: ...


def _nearest_desc_rank(n_neg: torch.Tensor, q: float, dtype: torch.dtype) -> torch.Tensor:
    """Descending rank of torch.quantile's `nearest` pick among n_neg values: round(q·(n−1)), half to even."""
    qt = torch.tensor(q, dtype=dtype if dtype == torch.float64 else torch.float32, device=n_neg.device)
    asc = torch.round(qt * (n_neg - 1).clamp(min=0).to(qt.dtype)).long()
    return (n_neg - 1 - asc).clamp(min=0)


def row_quantile_nearest(sim: torch.Tensor, negatives: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row q-quantile over the row's negatives, `nearest` interpolation like torch.quantile.

    A top-k of the few largest values (q is close to 1), not a sort: ascending rank r_i = round(q·(n_i−1)) is
    descending rank n_i−1−r_i, and k = ⌊(1−q)(M−1)⌋+2 exceeds it in every row.
    """
    s = sim.detach().masked_fill(~negatives, float("-inf"))
    desc = _nearest_desc_rank(negatives.sum(1), q, sim.dtype)
    k = min(int(math.floor((1 - q) * (sim.shape[1] - 1))) + 2, sim.shape[1])
    top = row_topk(s, k)[0]
    return top.gather(1, desc.clamp(max=k - 1).unsqueeze(1)).squeeze(1)


def row_quantile_nearest_layout(
    sim: torch.Tensor, positive_index: torch.Tensor, self_index: torch.Tensor | None, q: float
) -> torch.Tensor:
    """`row_quantile_nearest` for negatives = all but the positive (and self): no N×M mask, one top-k.

    Every row has the same number of negatives, so one rank serves all; the top-k over the raw row takes
    `excluded` extra values and the positive/self columns are skipped by index afterwards.
    """
    n, m = sim.shape
    excluded = 1 + (self_index is not None)
    n_neg = m - excluded
    desc = int(_nearest_desc_rank(torch.tensor(n_neg), q, sim.dtype))  # CPU scalar: no device sync
    vals, cols = row_topk(sim.detach(), min(m, desc + 1 + excluded))
    valid = cols != positive_index.unsqueeze(1)
    if self_index is not None:
        valid &= cols != self_index.unsqueeze(1)
    pick = valid & (valid.cumsum(1) == desc + 1)  # exactly one per row
    return vals.masked_fill(~pick, 0).sum(1)


def _minmax_rows(sim: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """ŝ_ij = (s_ij − min)/(max − min) with min/max over the row's negatives only."""
    s = sim.detach()
    lo = s.masked_fill(~negatives, float("inf")).amin(1, keepdim=True)
    hi = s.masked_fill(~negatives, float("-inf")).amax(1, keepdim=True)
    return (s - lo) / (hi - lo).clamp(min=1e-12)


class AdaptiveQuantileThreshold:
    """ε = mean_i quantile_q({s_ij : j ∈ negatives(i)}); H(i) = {j ∈ negatives(i) : s_ij > ε} (paper's main)."""

    def __init__(self, quantile: float = 0.99) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        self.quantile = quantile

    def __call__(self, sim, negatives, epoch, labels_anchor=None, labels_candidates=None) -> ThresholdResult:
        eps = _at_least_f32(row_quantile_nearest(sim, negatives, self.quantile)).mean()
        return ThresholdResult(mask=negatives & (sim.detach() > eps), epsilon=eps)

    def prepare(self, sim, positive_index, self_index, epoch, labels_anchor=None, labels_candidates=None
                ) -> tuple[torch.Tensor, MaskFn]:
        eps = _at_least_f32(row_quantile_nearest_layout(sim, positive_index, self_index, self.quantile)).mean()
        return eps, lambda s, rows: s > eps


class _ScheduledMinMax:
    """H(i) = {j ∈ negatives(i) : ŝ_ij > δ(epoch)} with ŝ min–max normalised over the row's negatives."""

    def delta(self, epoch: int) -> float:
        raise NotImplementedError

    def __call__(self, sim, negatives, epoch, labels_anchor=None, labels_candidates=None) -> ThresholdResult:
        d = self.delta(epoch)
        mask = negatives & (_minmax_rows(sim, negatives) > d)
        return ThresholdResult(mask=mask, epsilon=torch.full((), d, dtype=torch.float32, device=sim.device))

    def prepare(self, sim, positive_index, self_index, epoch, labels_anchor=None, labels_candidates=None
                ) -> tuple[torch.Tensor, MaskFn]:
        d = self.delta(epoch)

        def mask(s: torch.Tensor, rows: slice) -> torch.Tensor:
            idx = positive_index[rows].unsqueeze(1)
            if self_index is not None:
                idx = torch.cat([idx, self_index[rows].unsqueeze(1)], dim=1)
            lo = s.scatter(1, idx, float("inf")).amin(1, keepdim=True)
            hi = s.scatter(1, idx, float("-inf")).amax(1, keepdim=True)
            return (s - lo) / (hi - lo).clamp(min=1e-12) > d

        return torch.full((), d, dtype=torch.float32, device=sim.device), mask


class StepThreshold(_ScheduledMinMax):
    """δ = max(0, start − step_down·⌊epoch/epoch_step⌋)."""

    def __init__(self, start: float = 0.9, step_down: float = 0.1, epoch_step: int = 100) -> None:
        if step_down < 0 or epoch_step < 1:
            raise ValueError("step_down must be >= 0 and epoch_step >= 1")
        self.start, self.step_down, self.epoch_step = start, step_down, epoch_step

    def delta(self, epoch: int) -> float:
        return max(0.0, self.start - self.step_down * (epoch // self.epoch_step))


class CosineThreshold(_ScheduledMinMax):
    """δ = end + (start − end)·(1 + cos(π·min(epoch, max_epochs)/max_epochs))/2."""

    def __init__(self, start: float = 0.9, end: float = 0.3, max_epochs: int = 100) -> None:
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs!r}")
        self.start, self.end, self.max_epochs = start, end, max_epochs

    def delta(self, epoch: int) -> float:
        t = min(max(epoch, 0), self.max_epochs) / self.max_epochs
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))


class SuperclassThreshold:
    """Oracle: H(i) = negatives with i's superclass; labels < 0 (unknown) never match. ε is reported as 0."""

    def __call__(self, sim, negatives, epoch, labels_anchor=None, labels_candidates=None) -> ThresholdResult:
        self._check(sim, labels_anchor, labels_candidates)
        return ThresholdResult(mask=negatives & _same_known(labels_anchor, labels_candidates),
                               epsilon=torch.zeros((), device=sim.device))

    def prepare(self, sim, positive_index, self_index, epoch, labels_anchor=None, labels_candidates=None
                ) -> tuple[torch.Tensor, MaskFn]:
        self._check(sim, labels_anchor, labels_candidates)
        return torch.zeros((), device=sim.device), lambda s, rows: _same_known(labels_anchor[rows], labels_candidates)

    @staticmethod
    def _check(sim, labels_anchor, labels_candidates) -> None:
        if labels_anchor is None or labels_candidates is None:
            raise ValueError("labels_anchor and labels_candidates are required by hex.threshold='superclass'")
        if labels_anchor.shape != (sim.shape[0],) or labels_candidates.shape != (sim.shape[1],):
            raise ValueError(
                f"labels_anchor/labels_candidates must have shapes ({sim.shape[0]},)/({sim.shape[1]},), "
                f"got {tuple(labels_anchor.shape)}/{tuple(labels_candidates.shape)}"
            )


def _same_known(labels_anchor: torch.Tensor, labels_candidates: torch.Tensor) -> torch.Tensor:
    la, lc = labels_anchor.unsqueeze(1), labels_candidates.unsqueeze(0)
    return (la == lc) & (la >= 0) & (lc >= 0)


THRESHOLDS = {
    "adaptive": lambda cfg, max_epochs: AdaptiveQuantileThreshold(cfg.quantile),
    "step": lambda cfg, max_epochs: StepThreshold(cfg.start, cfg.step_down, cfg.epoch_step),
    "cosine": lambda cfg, max_epochs: CosineThreshold(cfg.start, cfg.end, max_epochs),
    "superclass": lambda cfg, max_epochs: SuperclassThreshold(),
}


def build_threshold(cfg: HexConfig, max_epochs: int) -> Threshold:
    """Build the threshold named by `cfg.threshold` (registry `THRESHOLDS`)."""
    if cfg.threshold not in THRESHOLDS:
        raise ValueError(f"hex.threshold must be one of {sorted(THRESHOLDS)}, got {cfg.threshold!r}")
    return THRESHOLDS[cfg.threshold](cfg, max_epochs)
