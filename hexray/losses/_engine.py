"""One row-chunked autograd kernel for InfoNCE and HEX over a precomputed similarity matrix.

Per row i (ℓ = s/τ; p = positive; self excluded; H(i) ⊂ negatives from a mask callback, G(i) the other negatives):

    L_i = log D_i − ℓ_ip,   D_i = [e^{ℓ_ip}] + w_g Σ_G e^{ℓ} + w_h·T_i,   T_i = |H| Σ_H e^{(1+β)ℓ} / Σ_H e^{βℓ}

(`local=False` drops T_i: H(i) removed; `positive_in=False` drops the bracketed e^{ℓ_ip}: both together are HEX's
`released` variant. No mask at all: plain InfoNCE, or DCL with `positive_in=False`.)
Rows are processed in chunks that fit in cache, and the backward pass recomputes each chunk from `sim` and a few
saved per-row statistics instead of keeping N×M temporaries alive: on CPU a handful of N×M passes through main
memory cost more than the loss' arithmetic. All math runs in float32 (float64 inputs stay float64); there are
no host synchronisations, so the kernel is safe on the hot path of a GPU step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

MaskFn = Callable[[torch.Tensor, slice], torch.Tensor]  # (float sim chunk, its row slice) -> bool H-candidates


@dataclass(frozen=True)
class Spec:
    temperature: float
    global_weight: float = 1.0
    local_weight: float = 1.0
    beta: float = 0.0
    local: bool = True  # False: H(i) leaves the denominator (released variant)
    positive_in: bool = True  # False: e^{ℓ_ip} leaves the denominator (released variant, DCL)
    chunk_rows: int | None = None


def needs_global(spec: Spec) -> bool:
    """True when G(i) is all the denominator has (no positive, no weighted H term): an empty G(i) must not happen."""
    return not spec.positive_in and (not spec.local or spec.local_weight == 0)


def _log(w: float) -> float:
    return math.log(w) if w > 0 else float("-inf")


def _chunk_rows(n: int, m: int, device: torch.device, override: int | None) -> int:
    if override:
        return max(1, override)
    budget = 1 << 26 if device.type == "cuda" else 1 << 18  # elements per chunk: all of it on GPU, ~L2 on CPU
    return max(1, min(n, budget // max(m, 1)))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _Chunk:
    """Everything one row chunk needs, recomputed identically in forward and backward."""

    def __init__(self, sim, rows: slice, pos, self_idx, spec: Spec, mask_fn: MaskFn | None) -> None:
        s = sim[rows].to(_compute_dtype(sim))
        self.logits = s / spec.temperature
        self.pos = pos[rows].unsqueeze(1)
        if self_idx is not None:
            self.logits.scatter_(1, self_idx[rows].unsqueeze(1), float("-inf"))
        self.lp = self.logits.gather(1, self.pos).squeeze(1)
        self.h = None
        if mask_fn is not None:
            h = mask_fn(s, rows)
            h = h.scatter(1, self.pos, False)
            if self_idx is not None:
                h.scatter_(1, self_idx[rows].unsqueeze(1), False)
            if needs_global(spec):  # a row whose negatives all passed ε keeps them (else log Σ_G = −∞)
                n_neg = s.shape[1] - 1 - (self_idx is not None)
                h.masked_fill_(h.sum(1, keepdim=True) >= n_neg, False)
            self.h = h


class _ContrastiveRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sim, pos, self_idx, spec: Spec, mask_fn, labels_a, labels_c):  # noqa: D102
        n, m = sim.shape
        dt = _compute_dtype(sim)
        step = _chunk_rows(n, m, sim.device, spec.chunk_rows)
        loss = sim.new_empty(n, dtype=dt)
        log_d = torch.empty_like(loss)
        hexed = mask_fn is not None
        if hexed:
            stats = {k: torch.empty_like(loss) for k in ("h_size", "frac_g", "frac_h", "m_h", "log_a", "log_b")}
            pure = torch.zeros(2, dtype=dt, device=sim.device)  # [same-label pairs in H, known-label pairs in H]
        log_wg, log_wh = _log(spec.global_weight), _log(spec.local_weight)
        with torch.autocast(sim.device.type, enabled=False):
            for r0 in range(0, n, step):
                rows = slice(r0, min(n, r0 + step))
                c = _Chunk(sim, rows, pos, self_idx, spec, mask_fn)
                if not hexed:
                    den = c.logits if spec.positive_in else c.logits.scatter(1, c.pos, float("-inf"))
                    log_d[rows] = torch.logsumexp(den, dim=1)
                    loss[rows] = log_d[rows] - c.lp
                    continue
                x, h, lp = c.logits, c.h, c.lp
                mx = x.amax(1, keepdim=True)
                e = (x - mx).exp_().masked_fill_(h, 0.0).scatter_(1, c.pos, 0.0)  # G(i) only
                log_g = e.sum(1).log_() + mx.squeeze(1) + log_wg
                hs = h.sum(1).to(dt)
                parts = [lp, log_g] if spec.positive_in else [log_g]
                if spec.local:
                    xh = x.masked_fill(~h, float("-inf"))
                    m_h = xh.amax(1, keepdim=True).nan_to_num_(neginf=0.0)  # empty H: any finite shift
                    u = xh - m_h
                    log_a = torch.logsumexp((1.0 + spec.beta) * u, dim=1)
                    log_b = torch.logsumexp(spec.beta * u, dim=1) if spec.beta else hs.log()
                    log_h = torch.where(hs > 0, log_wh + hs.log() + m_h.squeeze(1) + log_a - log_b, float("-inf"))
                    parts.append(log_h)
                    stats["m_h"][rows], stats["log_a"][rows], stats["log_b"][rows] = m_h.squeeze(1), log_a, log_b
                ld = torch.logsumexp(torch.stack(parts, dim=1), dim=1)
                log_d[rows] = ld
                loss[rows] = ld - lp
                stats["h_size"][rows] = hs
                stats["frac_g"][rows] = (log_g - ld).exp()
                stats["frac_h"][rows] = (parts[-1] - ld).exp() if spec.local else 0.0
                if labels_a is not None:
                    la = labels_a[rows].unsqueeze(1)
                    known = h & (la >= 0) & (labels_c >= 0).unsqueeze(0)
                    pure += torch.stack([(known & (la == labels_c.unsqueeze(0))).sum(), known.sum()]).to(dt)
        ctx.spec, ctx.mask_fn = spec, mask_fn
        ctx.save_for_backward(sim, pos, self_idx, log_d, *([stats["m_h"], stats["log_a"], stats["log_b"]]
                                                           if hexed and spec.local else []))
        out_stats = {}
        if hexed:
            out_stats = {k: stats[k] for k in ("h_size", "frac_g", "frac_h")}
            if labels_a is not None:
                out_stats["purity"] = pure[0] / pure[1].clamp(min=1)
        ctx.stat_keys = tuple(out_stats)
        for v in out_stats.values():
            ctx.mark_non_differentiable(v)
        return (loss, *out_stats.values())

    @staticmethod
    def backward(ctx, grad_loss, *_):  # noqa: D102
        sim, pos, self_idx, log_d, *local = ctx.saved_tensors
        spec, mask_fn = ctx.spec, ctx.mask_fn
        n, m = sim.shape
        step = _chunk_rows(n, m, sim.device, spec.chunk_rows)
        grad = torch.empty_like(sim)
        wg = spec.global_weight
        with torch.autocast(sim.device.type, enabled=False):
            for r0 in range(0, n, step):
                rows = slice(r0, min(n, r0 + step))
                c = _Chunk(sim, rows, pos, self_idx, spec, mask_fn)
                ld = log_d[rows].unsqueeze(1)
                g = (c.logits - ld).exp_()  # softmax over the denominator; self → 0
                if mask_fn is not None:
                    if wg != 1.0:
                        g.mul_(wg)
                    if spec.local:
                        m_h, log_a, log_b = (t[rows].unsqueeze(1) for t in local)
                        u = c.logits - m_h
                        # ∂ log D/∂ℓ_h = (w_h T/D)·[(1+β)·softmax_H((1+β)ℓ)_h − β·softmax_H(βℓ)_h]
                        h_size = c.h.sum(1, keepdim=True).to(g.dtype)
                        scale = _log(spec.local_weight) + h_size.log() + m_h + log_a - log_b - ld
                        gh = (1.0 + spec.beta) * ((1.0 + spec.beta) * u - log_a).exp_()
                        if spec.beta:
                            gh -= spec.beta * (spec.beta * u - log_b).exp_()
                        g = torch.where(c.h, gh * scale.exp(), g)
                    else:
                        g.masked_fill_(c.h, 0.0)
                    g.scatter_(1, c.pos, (c.lp.unsqueeze(1) - ld).exp())
                if not spec.positive_in:
                    g.scatter_(1, c.pos, 0.0)
                g.scatter_add_(1, c.pos, torch.full_like(c.lp.unsqueeze(1), -1.0))
                g.mul_((grad_loss[rows] / spec.temperature).unsqueeze(1))
                grad[rows] = g
        return grad, None, None, None, None, None, None


def contrastive_rows(
    sim: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor | None,
    spec: Spec,
    mask_fn: MaskFn | None = None,
    labels_anchor: torch.Tensor | None = None,
    labels_candidates: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-row losses (differentiable w.r.t. `sim`) and, with a mask, detached per-row HEX statistics
    (`h_size`, `frac_g`, `frac_h`) plus the pooled `purity` of H when both label vectors are given."""
    out = _ContrastiveRows.apply(sim, positive_index, self_index, spec, mask_fn, labels_anchor, labels_candidates)
    if mask_fn is None:
        return out[0], {}
    keys = ["h_size", "frac_g", "frac_h"] + (["purity"] if labels_anchor is not None else [])
    return out[0], dict(zip(keys, out[1:], strict=True))
