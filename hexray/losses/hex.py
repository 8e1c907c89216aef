"""HEX as its equation (design/HEX.md, "Loss" and "Threshold ε"): the readable reference, whole N×M masks.

Symbols: s_ij = z_i·z_j of L2-normalised embeddings, ℓ_ij = s_ij/τ, p(i) the positive of anchor i, ε the
threshold, H(i) = {j ∉ {i, p(i)} : s_ij > ε} the local hierarchical set, G(i) the other negatives.

    released (the reference code):  L_i = −ℓ_ip + log Σ_{n∈G(i)} e^{ℓ_in}
    decomposed:  L_i = −ℓ_ip + log( [e^{ℓ_ip}] + w_g Σ_{n∈G(i)} e^{ℓ_in} + w_h Σ_{h∈H(i)} q_ih e^{ℓ_ih} ),
                 q_ih = |H(i)|·softmax_{h∈H(i)}(β ℓ_ih)       ([e^{ℓ_ip}] unless positive_in_denominator is false)
    adaptive ε = mean over rows i of quantile_q(row i), `nearest` (the full row: s_ii and s_ip included)

Training runs the fast kernels beside this file on the same equation: `_engine.py` (dense, row-chunked, no host
sync) and `_sparse_hex.py` (H(i) as a sparse list, CPU), chosen by `hex_loss.HEXLoss(kernel=...)`;
tests/test_hex_kernels.py checks both equal these functions in float64, values and gradients (InfoNCE and DCL:
`hexray.losses.infonce.info_nce_rows`).
"""

from __future__ import annotations

import math

import torch

from hexray.losses.settings import HexConfig


def negatives_mask(positive_index: torch.Tensor, self_index: torch.Tensor | None, m: int) -> torch.Tensor:
    """N×M bool: True for j ∉ {i, p(i)}, every candidate but the anchor itself and its positive."""
    rows = torch.arange(positive_index.shape[0], device=positive_index.device)
    neg = torch.ones(positive_index.shape[0], m, dtype=torch.bool, device=positive_index.device)
    neg[rows, positive_index] = False
    if self_index is not None:
        neg[rows, self_index] = False
    return neg


def adaptive_epsilon(sim: torch.Tensor, negatives: torch.Tensor, q: float, over: str = "full_row") -> torch.Tensor:
    """ε = mean_i quantile_q(row i), `nearest`; `over="negatives"` reads each row's negatives only (an option)."""
    s = sim.detach()
    if over == "full_row":
        return torch.quantile(s, q, dim=1, interpolation="nearest").mean()
    rows = [torch.quantile(row[keep], q, interpolation="nearest") for row, keep in zip(s, negatives, strict=True)]
    return torch.stack(rows).mean()


def hierarchical_set(sim: torch.Tensor, negatives: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """H(i) = {j ∈ negatives(i) : s_ij > ε}, N×M bool (ε does not carry gradient)."""
    return negatives & (sim.detach() > epsilon)


def keep_global_nonempty(h: torch.Tensor, negatives: torch.Tensor, cfg: HexConfig) -> torch.Tensor:
    """Where D_i is Σ_{G(i)} alone (released; or no positive and w_h = 0), a row whose negatives all passed ε
    keeps them in G(i), H(i) = ∅: log D_i stays finite. The kernels apply the same rule."""
    if cfg.positive_in or (cfg.variant == "decomposed" and cfg.local_weight > 0):
        return h
    return h & ~(h == negatives).all(1, keepdim=True)


def hex_rows(sim: torch.Tensor, positive_index: torch.Tensor, negatives: torch.Tensor, h: torch.Tensor,
             cfg: HexConfig) -> torch.Tensor:
    """L_i for every anchor row of `sim` (N×M), given its negatives and H(i) ⊂ negatives(i) (after
    `keep_global_nonempty`)."""
    rows = torch.arange(sim.shape[0], device=sim.device)
    ell = sim / cfg.temperature                                          # ℓ_ij = s_ij / τ
    ell_p = ell[rows, positive_index]                                    # ℓ_ip
    g = negatives & ~h                                                   # G(i)
    log_w = torch.full_like(ell, -math.inf)                              # log of column j's weight in D_i
    log_w = torch.where(g, _log(cfg.global_weight), log_w)               # w_g on G(i)
    if cfg.variant == "decomposed":
        if cfg.positive_in:
            log_w[rows, positive_index] = 0.0                            # e^{ℓ_ip}
        fill = torch.finfo(ell.dtype).min                                # not −∞: an empty H(i) keeps finite grads
        log_soft = (cfg.beta * ell).masked_fill(~h, fill).log_softmax(1)  # log softmax_{H(i)}(β ℓ)
        log_q = h.sum(1, keepdim=True).to(ell.dtype).log() + log_soft    # log q_ih
        log_w = torch.where(h, _log(cfg.local_weight) + log_q, log_w)    # w_h q_ih on H(i)
    return torch.logsumexp(log_w + ell, dim=1) - ell_p                   # log D_i − ℓ_ip


def _log(w: float) -> float:
    return math.log(w) if w > 0 else -math.inf
