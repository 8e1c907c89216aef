"""How HEX picks the local hierarchical set H(i) among an anchor's negatives (design/HEX.md, "Threshold ε").

Every kind implements `threshold(sim, negatives, epoch, labels_anchor=None, labels_candidates=None, classes=None)`
(superclass labels, and the fine labels of anchors and candidates that only an oracle reads) and returns
the N×M bool mask of H(i) (always a subset of `negatives`, so never the anchor nor its positive) plus ε, the
scalar threshold actually used (for logging). `over` says which values of a row the quantile (adaptive) or the
min–max (step, cosine) read: `full_row` (every column: self s_ii = 1 and the positive included, as the reference
code does) or `negatives`. HEXLoss uses the equivalent row-chunked form `prepare(sim, positive_index,
self_index, epoch, labels_anchor, labels_candidates, classes) -> (ε, mask_fn)`, which never builds N×M masks at
once; `mask_fn(sim_chunk, rows)` may include the anchor and its positive (the loss drops them).
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
        classes: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, MaskFn]: ...

    def __call__(
        self,
        sim: torch.Tensor,
        negatives: torch.Tensor,
        epoch: int,
        labels_anchor: torch.Tensor | None = None,
        labels_candidates: torch.Tensor | None = None,
        classes: tuple[torch.Tensor, torch.Tensor] | None = None,
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


def row_quantile_nearest_full(sim: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row q-quantile over every column (`nearest`, like torch.quantile): one top-k of the few largest."""
    m = sim.shape[1]
    desc = int(_nearest_desc_rank(torch.tensor(m), q, sim.dtype))  # CPU scalar: no device sync
    return row_topk(sim.detach(), desc + 1)[0][:, desc]


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


OVER = ("full_row", "negatives")


def _check_over(over: str) -> str:
    if over not in OVER:
        raise ValueError(f"over must be one of {OVER}, got {over!r}")
    return over


def _minmax_rows(sim: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
    """ŝ_ij = (s_ij − min)/(max − min) with min/max over the row's negatives, or over the whole row (None)."""
    s = sim.detach()
    lo = (s if negatives is None else s.masked_fill(~negatives, float("inf"))).amin(1, keepdim=True)
    hi = (s if negatives is None else s.masked_fill(~negatives, float("-inf"))).amax(1, keepdim=True)
    return (s - lo) / (hi - lo).clamp(min=1e-12)


class AdaptiveQuantileThreshold:
    """ε = mean_i quantile_q(row i), `nearest`; H(i) = {j ∈ negatives(i) : s_ij > ε} (the paper's main method).

    `over="full_row"` (reference code): the quantile reads every s_ij of the row, self (= 1) and positive
    included. With `nearest` the q = 0.99 quantile of a row of n ≤ 51 values is its largest value, the self
    similarity, so H(i) is empty for any input: HEX acts only at realistic batch sizes.
    `over="negatives"`: the quantile reads the row's negatives only (an option, not the reference)."""

    def __init__(self, quantile: float = 0.99, over: str = "full_row") -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        self.quantile, self.over = quantile, _check_over(over)

    def __call__(self, sim, negatives, epoch, labels_anchor=None, labels_candidates=None, classes=None
                 ) -> ThresholdResult:
        if self.over == "full_row":
            q = row_quantile_nearest_full(sim, self.quantile)
        else:
            q = row_quantile_nearest(sim, negatives, self.quantile)
        eps = _at_least_f32(q).mean()
        return ThresholdResult(mask=negatives & (sim.detach() > eps), epsilon=eps)

    def epsilon(self, sim: torch.Tensor, positive_index: torch.Tensor, self_index: torch.Tensor | None
                ) -> torch.Tensor:
        """ε for the anchors×candidates layout (0-dim, at least float32, detached)."""
        if self.over == "full_row":
            q = row_quantile_nearest_full(sim, self.quantile)
        else:
            q = row_quantile_nearest_layout(sim, positive_index, self_index, self.quantile)
        return _at_least_f32(q).mean()

    def prepare(self, sim, positive_index, self_index, epoch, labels_anchor=None, labels_candidates=None,
                classes=None) -> tuple[torch.Tensor, MaskFn]:
        eps = self.epsilon(sim, positive_index, self_index)
        return eps, lambda s, rows: s > eps


class _ScheduledMinMax:
    """H(i) = {j ∈ negatives(i) : ŝ_ij > δ(epoch)}, ŝ min–max normalised over the full row (reference: the max is
    then the self-similarity) or over the row's negatives (`over="negatives"`)."""

    over = "full_row"

    def delta(self, epoch: int) -> float:
        raise NotImplementedError

    def __call__(self, sim, negatives, epoch, labels_anchor=None, labels_candidates=None, classes=None
                 ) -> ThresholdResult:
        d = self.delta(epoch)
        mask = negatives & (_minmax_rows(sim, None if self.over == "full_row" else negatives) > d)
        return ThresholdResult(mask=mask, epsilon=torch.full((), d, dtype=torch.float32, device=sim.device))

    def prepare(self, sim, positive_index, self_index, epoch, labels_anchor=None, labels_candidates=None,
                classes=None) -> tuple[torch.Tensor, MaskFn]:
        d = self.delta(epoch)
        full = self.over == "full_row"

        def mask(s: torch.Tensor, rows: slice) -> torch.Tensor:
            if full:
                lo, hi = s.amin(1, keepdim=True), s.amax(1, keepdim=True)
            else:
                idx = positive_index[rows].unsqueeze(1)
                if self_index is not None:
                    idx = torch.cat([idx, self_index[rows].unsqueeze(1)], dim=1)
                lo = s.scatter(1, idx, float("inf")).amin(1, keepdim=True)
                hi = s.scatter(1, idx, float("-inf")).amax(1, keepdim=True)
            return (s - lo) / (hi - lo).clamp(min=1e-12) > d

        return torch.full((), d, dtype=torch.float32, device=sim.device), mask


class StepThreshold(_ScheduledMinMax):
    """δ = max(0, start − step_down·⌊epoch/epoch_step⌋): 0.9 until `epoch_step`, then lower by `step_down` each
    `epoch_step` epochs (the reference's `HEX_fixed` step schedule)."""

    def __init__(self, start: float = 0.9, step_down: float = 0.1, epoch_step: int = 100,
                 over: str = "full_row") -> None:
        if step_down < 0 or epoch_step < 1:
            raise ValueError("step_down must be >= 0 and epoch_step >= 1")
        self.start, self.step_down, self.epoch_step = start, step_down, epoch_step
        self.over = _check_over(over)

    def delta(self, epoch: int) -> float:
        return max(0.0, self.start - self.step_down * (epoch // self.epoch_step))


class CosineThreshold(_ScheduledMinMax):
    """δ = end + (start − end)·(1 + cos(π·min(epoch, max_epochs)/max_epochs))/2."""

    def __init__(self, start: float = 0.9, end: float = 0.3, max_epochs: int = 100, over: str = "full_row") -> None:
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs!r}")
        self.start, self.end, self.max_epochs = start, end, max_epochs
        self.over = _check_over(over)

    def factor(self, epoch: int) -> float:
        t = min(max(epoch, 0), self.max_epochs) / self.max_epochs
        return 0.5 * (1.0 + math.cos(math.pi * t))

    def delta(self, epoch: int) -> float:
        return self.end + (self.start - self.end) * self.factor(epoch)


class CompoundCosineThreshold(CosineThreshold):
    """The reference code's cosine: every epoch e it applies δ ← end + (δ − end)·(1 + cos(π e/E))/2 to the δ it
    already updated, so δ_e = end + (start − end)·Π_{k=1..e} (1 + cos(π k/E))/2 (falls much faster than the plain
    cosine). Computed from the epoch alone, so a resumed run gets the same δ."""

    def delta(self, epoch: int) -> float:
        prod = 1.0
        for k in range(1, max(epoch, 0) + 1):
            prod *= self.factor(k)
        return self.end + (self.start - self.end) * prod


class SuperclassThreshold:
    """Oracle: H(i) = negatives with i's superclass; labels < 0 (unknown) never match. ε is reported as 0.

    H(i) then holds i's own class too (28% of it on Fashion-MNIST), false negatives whose removal (w_h = 0)
    helps fine classes for a reason that has nothing to do with the hierarchy. `siblings_only` keeps only the
    superclass's *other* classes (it needs the fine labels, `classes`): the control that isolates the hierarchy."""

    def __init__(self, siblings_only: bool = False) -> None:
        self.siblings_only = siblings_only

    def __call__(self, sim, negatives, epoch, labels_anchor=None, labels_candidates=None, classes=None
                 ) -> ThresholdResult:
        self._check(sim, labels_anchor, labels_candidates, classes)
        return ThresholdResult(mask=negatives & self._mask(labels_anchor, labels_candidates, classes),
                               epsilon=torch.zeros((), device=sim.device))

    def prepare(self, sim, positive_index, self_index, epoch, labels_anchor=None, labels_candidates=None,
                classes=None) -> tuple[torch.Tensor, MaskFn]:
        self._check(sim, labels_anchor, labels_candidates, classes)

        def mask(s: torch.Tensor, rows: slice) -> torch.Tensor:
            fine = None if classes is None else (classes[0][rows], classes[1])
            return self._mask(labels_anchor[rows], labels_candidates, fine)

        return torch.zeros((), device=sim.device), mask

    def _mask(self, labels_anchor: torch.Tensor, labels_candidates: torch.Tensor,
              classes: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        same_superclass = _same_known(labels_anchor, labels_candidates)
        if not self.siblings_only:
            return same_superclass
        # an unknown fine label cannot be told apart from the anchor's class: left out of H(i)
        return same_superclass & (classes[0].unsqueeze(1) != classes[1].unsqueeze(0)) & _known(*classes)

    def _check(self, sim, labels_anchor, labels_candidates, classes) -> None:
        name = "superclass_siblings" if self.siblings_only else "superclass"
        if labels_anchor is None or labels_candidates is None:
            raise ValueError(f"labels_anchor and labels_candidates are required by hex.threshold='{name}'")
        if labels_anchor.shape != (sim.shape[0],) or labels_candidates.shape != (sim.shape[1],):
            raise ValueError(
                f"labels_anchor/labels_candidates must have shapes ({sim.shape[0]},)/({sim.shape[1]},), "
                f"got {tuple(labels_anchor.shape)}/{tuple(labels_candidates.shape)}"
            )
        if not self.siblings_only:
            return
        if classes is None:
            raise ValueError(f"hex.threshold='{name}' needs the fine class labels (classes) of anchors and candidates")
        if classes[0].shape != (sim.shape[0],) or classes[1].shape != (sim.shape[1],):
            raise ValueError(f"classes must have shapes ({sim.shape[0]},)/({sim.shape[1]},), "
                             f"got {tuple(classes[0].shape)}/{tuple(classes[1].shape)}")


class NoThreshold:
    """H(i) = ∅ (ε = +∞): with the `released` variant HEX becomes DCL, the control that isolates H(i)'s removal."""

    def __call__(self, sim, negatives, epoch, labels_anchor=None, labels_candidates=None, classes=None
                 ) -> ThresholdResult:
        return ThresholdResult(mask=torch.zeros_like(negatives), epsilon=torch.full((), math.inf, device=sim.device))

    def prepare(self, sim, positive_index, self_index, epoch, labels_anchor=None, labels_candidates=None,
                classes=None) -> tuple[torch.Tensor, MaskFn]:
        return torch.full((), math.inf, device=sim.device), lambda s, rows: torch.zeros_like(s, dtype=torch.bool)


def _known(labels_anchor: torch.Tensor, labels_candidates: torch.Tensor) -> torch.Tensor:
    return (labels_anchor >= 0).unsqueeze(1) & (labels_candidates >= 0).unsqueeze(0)


def _same_known(labels_anchor: torch.Tensor, labels_candidates: torch.Tensor) -> torch.Tensor:
    return (labels_anchor.unsqueeze(1) == labels_candidates.unsqueeze(0)) & _known(labels_anchor, labels_candidates)


THRESHOLDS = {
    "adaptive": lambda cfg, max_epochs: AdaptiveQuantileThreshold(cfg.quantile, cfg.quantile_over),
    "step": lambda cfg, max_epochs: StepThreshold(cfg.start, cfg.step_down, cfg.epoch_step, cfg.quantile_over),
    "cosine": lambda cfg, max_epochs: CosineThreshold(cfg.start, cfg.end, max_epochs, cfg.quantile_over),
    "cosine_compound": lambda cfg, max_epochs: CompoundCosineThreshold(cfg.start, cfg.end, max_epochs,
                                                                       cfg.quantile_over),
    "superclass": lambda cfg, max_epochs: SuperclassThreshold(),
    "superclass_siblings": lambda cfg, max_epochs: SuperclassThreshold(siblings_only=True),
    "none": lambda cfg, max_epochs: NoThreshold(),
}


def build_threshold(cfg: HexConfig, max_epochs: int) -> Threshold:
    """Build the threshold named by `cfg.threshold` (registry `THRESHOLDS`)."""
    if cfg.threshold not in THRESHOLDS:
        raise ValueError(f"hex.threshold must be one of {sorted(THRESHOLDS)}, got {cfg.threshold!r}")
    return THRESHOLDS[cfg.threshold](cfg, max_epochs)
