"""HEX with the adaptive threshold, fused for CPU: H(i) (~1% of a row) is handled as a sparse list.

Why: on CPU every pass over the N×M similarity matrix costs about as much as the loss' arithmetic, and a dense
`s > ε` mask, `nonzero` or a row `topk` each cost several such passes. Here the forward makes the passes plain
InfoNCE makes per row chunk (x = s/τ; a max over blocks of ≤ 8 columns, which also gives the row max; exp;
sum) and finds every element that the row quantile or H(i) can need from the block maxima:

* t_i = the r-th largest maximum of disjoint column groups (r = the quantile's descending rank; self and positive
  are −inf): r negatives are ≥ t_i, so the row's r-th largest negative (its quantile) is ≥ t_i.
* Candidates C_i = {x ≥ u_i}, u_i = min(t_i, ε̂/τ), read only from the blocks whose maximum is ≥ u_i. ε̂ is a low
  estimate of ε from an exact top-k over a sample of rows, so C_i holds both the quantile's top r and H(i) =
  {s > ε}; should the estimate exceed ε after all, the chunk pass reruns with ε itself (exact, just slower).
* C's entries leave the dense sum, which so holds G(i) only (no cancellation); ε, H(i), T_i, the hardness
  weights and their gradients are computed on the sparse list.

The backward is two dense passes per chunk (e^{x − log D + log(w_g·∂L/∂L_i/τ)}) plus a sparse overwrite of the
H entries with gradients computed in the forward; given the factors of sim (HEXLoss does), each chunk goes
straight into ∂/∂anchors and ∂/∂candidates by two small matmuls, so no N×M gradient is ever written.
Exact: same values as the dense kernel (hexray.losses._engine) up to float rounding order. Host syncs: yes (CPU only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hexray.losses._engine import Spec, _compute_dtype, _log, needs_global
from hexray.losses.thresholds import _nearest_desc_rank, row_quantile_nearest_layout

_SAMPLE_ROWS = 128  # rows whose exact quantile gives ε̂
_SAMPLE_SE = 4.0  # ε̂ = sample mean − this many standard errors
_SCAN_ELEMS = 1 << 20  # elements per row chunk of the forward scan


def fused_applies(m: int, quantile: float) -> bool:
    """Whether the sparse kernel pays off: the quantile's top-r must be a small part of a row."""
    return 32 * (_desc_rank(m - 2, quantile) + 1) <= m


def _desc_rank(n_neg: int, q: float) -> int:
    return int(_nearest_desc_rank(torch.tensor(n_neg), q, torch.float32))


def _layout(m: int, r: int) -> tuple[int, int]:
    """Block size b (contiguous columns per block maximum) and g (blocks per group for the bound t_i)."""
    b = next((b for b in (8, 4, 2) if -(-m // b) >= 4 * r), 1)
    nb = -(-m // b)
    g = next((g for g in (4, 2) if nb // g >= 2 * r), 1)
    return b, g


class _Scan:
    """One pass over the row chunks: row max (over the negatives), Σ e^{x − max} over the negatives outside C, the
    bound t_i, and C's entries as (row, column, s); all bounds in units of s (x = s/τ is monotone in s). Block
    maxima come straight from `sim`; the blocks of self and positive are recomputed without them. C may hold
    self or positive: their s is set to −inf in the list (never in H, never in the quantile)."""

    def __init__(self, sim, pos, self_idx, spec: Spec, r: int, ug: torch.Tensor, dt: torch.dtype) -> None:
        n, m = sim.shape
        dev = sim.device
        b, g = _layout(m, r)
        nb = -(-m // b)
        mp = nb * b
        copy = mp > m or sim.dtype != dt  # else blocks and exp read `sim` in place
        inv_t = 1.0 / spec.temperature
        step = spec.chunk_rows or max(1, min(n, _SCAN_ELEMS // mp))
        buf = torch.empty(min(step, n), mp, dtype=dt, device=dev)
        excl = pos[:, None] if self_idx is None else torch.stack([pos, self_idx], dim=1)  # n × k columns
        offs = torch.arange(b, device=dev)
        self.mx, self.rest, self.t = (torch.empty(n, dtype=dt, device=dev) for _ in range(3))
        flats, ss = [], []
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            x = buf[: r1 - r0]
            if copy:
                x[:, :m] = sim[r0:r1]
                x[:, m:] = float("-inf")  # padding to whole blocks
                src = x
            else:
                src = sim[r0:r1]
            ex = excl[r0:r1]
            if b > 1:
                bm = F.max_pool1d(src.unsqueeze(0), b, b).squeeze(0)
                eb = ex // b  # the blocks of self and positive: their maxima without them
                bc = (eb.unsqueeze(2) * b + offs).flatten(1)
                bv = src.gather(1, bc).masked_fill_((bc.unsqueeze(2) == ex.unsqueeze(1)).any(2), float("-inf"))
                bm.scatter_(1, eb, bv.view(-1, ex.shape[1], b).amax(2))
            else:
                bm = src.scatter(1, ex, float("-inf"))
            mx = bm.amax(1)
            grp = F.max_pool1d(bm.unsqueeze(0), g, g, ceil_mode=True).squeeze(0) if g > 1 else bm
            t = torch.topk(grp, r, dim=1, sorted=False).values.amin(1)
            u = torch.minimum(t, ug)
            sel = (bm >= u.unsqueeze(1)).view(-1).nonzero().squeeze(1)  # flat block ids in the chunk
            if b > 1:
                vals = src.reshape(-1, b).index_select(0, sel)
                hit = (vals >= u.index_select(0, sel // nb).unsqueeze(1)).view(-1).nonzero().squeeze(1)
                flat = sel.index_select(0, hit // b) * b + hit % b
                cs = vals.view(-1).index_select(0, hit)
            else:
                flat, cs = sel, src.reshape(-1).index_select(0, sel)
            # e^{x − max} over the negatives outside C
            torch.add((mx * -inv_t).unsqueeze(1), src, alpha=inv_t, out=x).exp_()
            x.view(-1).index_fill_(0, flat, 0.0)
            x.scatter_(1, ex, 0.0)
            self.rest[r0:r1] = x.sum(1)
            self.mx[r0:r1], self.t[r0:r1] = mx, t
            flats.append(flat + r0 * mp)
            ss.append(cs.to(dt))
        flat = torch.cat(flats)
        self.row = flat // mp
        self.col = flat - self.row * mp
        s = torch.cat(ss)
        own = (self.col.unsqueeze(1) == excl.index_select(0, self.row)).any(1)
        self.s = s.masked_fill_(own, float("-inf"))
        self.x = self.s * inv_t
        self.mx *= inv_t
        self.lp = sim.gather(1, pos[:, None]).squeeze(1).to(dt) * inv_t


class _FusedAdaptiveHex(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sim, anchors, candidates, pos, self_idx, spec: Spec, quantile: float, labels_a, labels_c,  # noqa: D102
                epsilon):
        ctx.fuse = anchors is not None
        with torch.autocast(sim.device.type, enabled=False):
            return _forward(ctx, sim.contiguous(), pos, self_idx, spec, quantile, labels_a, labels_c,
                            (anchors, candidates) if ctx.fuse else (), epsilon)

    @staticmethod
    def backward(ctx, grad_loss, *_):  # noqa: D102
        sim, pos, self_idx, ld, lp, hflat, gh, *factors = ctx.saved_tensors
        spec = ctx.spec
        n, m = sim.shape
        dt = ld.dtype
        c = grad_loss.to(dt) / spec.temperature
        fold = bool((c > 0).all())  # then c joins the exponent and the dense part is 2 passes
        shift = ld - _log(spec.global_weight) - (c.log() if fold else 0.0)
        neg_shift = (-shift).unsqueeze(1)
        pos_val = (((lp - ld).exp() if spec.positive_in else 0.0) - 1.0) * c
        step = spec.chunk_rows or max(1, min(n, (_SCAN_ELEMS if factors else 1 << 18) // m))
        if factors:  # ∂/∂anchors and ∂/∂candidates chunk by chunk: no N×M gradient in memory
            fa, fc = (f.detach().to(dt) for f in factors)
            need_a, need_c = ctx.needs_input_grad[1:3]
            grad_a = torch.empty_like(fa) if need_a else None
            grad_c = torch.zeros_like(fc) if need_c else None
            buf = torch.empty(min(step, n), m, dtype=dt, device=sim.device)
        else:
            grad = torch.empty_like(sim)
            buf = None if sim.dtype == dt else torch.empty(min(step, n), m, dtype=dt, device=sim.device)
        hval = gh * c.index_select(0, hflat // m)
        starts = torch.arange(0, n + step, step, device=sim.device).clamp_(max=n) * m
        cut = torch.searchsorted(hflat, starts).tolist()  # the H entries of each chunk (hflat is ascending)
        with torch.autocast(sim.device.type, enabled=False):
            for k, r0 in enumerate(range(0, n, step)):
                r1 = min(n, r0 + step)
                g = grad[r0:r1] if buf is None else buf[: r1 - r0]
                torch.add(neg_shift[r0:r1], sim[r0:r1], alpha=1.0 / spec.temperature, out=g)
                g.exp_()
                if not fold:
                    g.mul_(c[r0:r1, None])
                if self_idx is not None:
                    g.scatter_(1, self_idx[r0:r1, None], 0.0)
                g.scatter_(1, pos[r0:r1, None], pos_val[r0:r1, None])
                a, z = cut[k], cut[k + 1]
                g.view(-1).index_copy_(0, hflat[a:z] - r0 * m, hval[a:z])
                if factors:
                    if need_a:
                        torch.mm(g, fc, out=grad_a[r0:r1])
                    if need_c:
                        grad_c.addmm_(g.T, fa[r0:r1])
                elif buf is not None:
                    grad[r0:r1] = g
        if factors:
            return (None, grad_a if grad_a is None else grad_a.to(factors[0].dtype),
                    grad_c if grad_c is None else grad_c.to(factors[1].dtype), *[None] * 7)
        return grad, *[None] * 9


def _forward(ctx, sim, pos, self_idx, spec: Spec, quantile: float, labels_a, labels_c, factors, known_eps):
    n, m = sim.shape
    dt = _compute_dtype(sim)
    dev = sim.device
    excluded = 1 + (self_idx is not None)
    r = _desc_rank(m - excluded, quantile) + 1  # the quantile is the r-th largest negative of every row
    if known_eps is not None:  # ε given (a full-row quantile): C only has to cover H(i) = {s > ε}
        eps = known_eps.to(dt)
        return _finish(ctx, _Scan(sim, pos, self_idx, spec, r, eps, dt), eps, sim, pos, self_idx, spec,
                       labels_a, labels_c, factors)
    # ε̂: exact quantiles of evenly spaced rows, minus a safety margin
    n_s = min(n, _SAMPLE_ROWS)
    idx = torch.arange(n_s, device=dev) * n // n_s
    q_s = row_quantile_nearest_layout(
        sim[idx], pos[idx], None if self_idx is None else self_idx[idx], quantile
    ).to(dt)
    eps_hat = q_s.mean() - (_SAMPLE_SE * q_s.std() / math.sqrt(n_s) if n_s < n else 0.0)
    scan = _Scan(sim, pos, self_idx, spec, r, eps_hat, dt)
    # the quantile: r-th largest of each row's candidates ≥ t_i (a padded n × W top-r)
    sel = (scan.s >= scan.t.index_select(0, scan.row)).nonzero().squeeze(1)
    q_row, q_val = scan.row.index_select(0, sel), scan.s.index_select(0, sel)
    counts = torch.bincount(q_row, minlength=n)
    width = int(counts.max())
    slot = torch.arange(q_row.numel(), device=dev) - (counts.cumsum(0) - counts).index_select(0, q_row)
    padded = torch.full((n * width,), float("-inf"), dtype=q_val.dtype, device=dev)
    padded.index_copy_(0, q_row * width + slot, q_val)
    padded = padded.view(n, width)
    eps = torch.topk(padded, r, dim=1, sorted=False).values.amin(1).to(dt).mean()
    if bool(eps_hat > eps):  # ε̂ was too high: some H(i) may reach below C_i
        scan = _Scan(sim, pos, self_idx, spec, r, eps, dt)
    return _finish(ctx, scan, eps, sim, pos, self_idx, spec, labels_a, labels_c, factors)


def _finish(ctx, scan: _Scan, eps, sim, pos, self_idx, spec: Spec, labels_a, labels_c, factors):
    """Losses, statistics and the saved state for the backward, from a scan whose C covers H(i) = {s > ε}."""
    n, m = sim.shape
    dt, dev = scan.mx.dtype, sim.device
    in_h = scan.s > eps
    if needs_global(spec):  # a row whose negatives all passed ε keeps them (else log Σ_G = −∞), as the dense kernel
        n_neg = m - 1 - (self_idx is not None)
        full = torch.bincount(scan.row[in_h], minlength=n) >= n_neg
        in_h &= ~full.index_select(0, scan.row)
    ce = (scan.x - scan.mx.index_select(0, scan.row)).exp().masked_fill_(in_h, 0.0)
    sum_g = scan.rest.index_add(0, scan.row, ce)
    log_g = sum_g.log() + scan.mx + _log(spec.global_weight)
    h_idx = in_h.nonzero().squeeze(1)
    h_row, h_col, hx = (v.index_select(0, h_idx) for v in (scan.row, scan.col, scan.x))
    h_size = torch.bincount(h_row, minlength=n).to(dt)
    lp = scan.lp
    if spec.local:
        m_h = torch.full((n,), float("-inf"), dtype=dt, device=dev).scatter_reduce_(0, h_row, hx, "amax")
        m_h = torch.where(h_size > 0, m_h, 0.0)
        u = hx - m_h.index_select(0, h_row)
        ea = ((1.0 + spec.beta) * u).exp()
        log_a = torch.zeros(n, dtype=dt, device=dev).index_add_(0, h_row, ea).log()
        if spec.beta:
            eb = (spec.beta * u).exp()
            log_b = torch.zeros(n, dtype=dt, device=dev).index_add_(0, h_row, eb).log()
        else:
            log_b = h_size.log()
        log_h = torch.where(h_size > 0, _log(spec.local_weight) + h_size.log() + m_h + log_a - log_b, float("-inf"))
        ld = torch.logsumexp(torch.stack([lp, log_g, log_h] if spec.positive_in else [log_g, log_h], dim=1), dim=1)
        # ∂ log D/∂ℓ_h = (w_h T/D)·[(1+β)·softmax_H((1+β)ℓ)_h − β·softmax_H(βℓ)_h]
        gh = (1.0 + spec.beta) * (ea / log_a.exp().index_select(0, h_row))
        if spec.beta:
            gh -= spec.beta * (eb / log_b.exp().index_select(0, h_row))
        gh *= (log_h - ld).exp().index_select(0, h_row)
        frac_h = (log_h - ld).exp()
    else:
        ld = torch.logsumexp(torch.stack([lp, log_g], dim=1), dim=1) if spec.positive_in else log_g
        gh = torch.zeros_like(hx)
        frac_h = torch.zeros_like(ld)
    loss = ld - lp
    ctx.spec = spec
    ctx.save_for_backward(sim, pos, self_idx, ld, lp, h_row * m + h_col, gh, *factors)
    out = [loss, eps, h_size, (log_g - ld).exp(), frac_h]
    if labels_a is not None:
        la, lc = labels_a[h_row], labels_c[h_col]
        known = (la >= 0) & (lc >= 0)
        pure = torch.stack([(known & (la == lc)).sum(), known.sum()]).to(dt)
        out.append(pure[0] / pure[1].clamp(min=1))
    for v in out[1:]:
        ctx.mark_non_differentiable(v)
    return tuple(out)


def fused_adaptive_hex(
    sim: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor | None,
    spec: Spec,
    quantile: float,
    labels_anchor: torch.Tensor | None = None,
    labels_candidates: torch.Tensor | None = None,
    factors: tuple[torch.Tensor, torch.Tensor] | None = None,
    epsilon: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-row HEX losses with H(i) = {negatives with s > ε}, ε = mean row `quantile` of the negatives (nearest)
    or the given `epsilon` (e.g. the reference's full-row quantile, computed by the caller),
    differentiable w.r.t. `sim`, and detached statistics: `epsilon`, `h_size`, `frac_g`, `frac_h`, and `purity`
    when both label vectors are given. Same contract as `contrastive_rows` with the adaptive threshold's mask.

    `factors=(anchors, candidates)` with sim = anchors @ candidatesᵀ: the gradient flows to the factors instead,
    computed chunk by chunk in the backward (sim is then read detached): on CPU, writing and re-reading an N×M
    gradient costs about as much as the loss' own passes."""
    with_labels = labels_anchor is not None and labels_candidates is not None
    a, c = factors if factors is not None else (None, None)
    out = _FusedAdaptiveHex.apply(sim if factors is None else sim.detach(), a, c, positive_index, self_index, spec,
                                  quantile,
                                  labels_anchor if with_labels else None, labels_candidates if with_labels else None,
                                  epsilon)
    keys = ["epsilon", "h_size", "frac_g", "frac_h"] + (["purity"] if with_labels else [])
    return out[0], dict(zip(keys, out[1:], strict=True))
