"""HEX as the reference code computes it (design/HEX.md), against an independent float64 implementation.

The reference here is written with loops and torch.quantile, sharing nothing with hexray.losses: ε = mean over
rows of the full row's nearest 0.99-quantile (self and positive included), H(i) = {j ∉ {i, p(i)} : s_ij > ε},
L_i = −ℓ_ip + log Σ_{G(i)} e^{ℓ} for `released`; the general decomposition for `decomposed`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hexray.losses import HexConfig, HEXLoss, dcl, nt_xent
from hexray.losses.thresholds import CompoundCosineThreshold, StepThreshold


def reference_loss(z1, z2, *, tau=0.1, q=0.99, variant="released", w_h=1.0, w_g=1.0, beta=0.0,
                   positive_in=True, over="full_row", eps=None):
    """(loss, ε, mean |H(i)|) by explicit loops over rows, in the inputs' dtype."""
    z = torch.cat([z1, z2])
    n, b = z.shape[0], z1.shape[0]
    sim = z @ z.T
    pos_of = [(i + b) % n for i in range(n)]
    if eps is None:
        rows = []
        for i in range(n):
            row = sim[i].detach()
            if over == "negatives":
                row = row[[j for j in range(n) if j not in (i, pos_of[i])]]
            rows.append(torch.quantile(row, q, interpolation="nearest"))
        eps = torch.stack(rows).mean().item()
    losses, h_sizes = [], []
    for i in range(n):
        p = pos_of[i]
        negs = [j for j in range(n) if j not in (i, p)]
        hs = [j for j in negs if sim[i, j].item() > eps]
        gs = [j for j in negs if j not in hs]
        ell = sim[i] / tau
        den = w_g * torch.exp(ell[gs]).sum() if gs else ell.new_zeros(())
        if variant == "decomposed":
            if positive_in:
                den = den + torch.exp(ell[p])
            if hs:
                qh = len(hs) * torch.softmax(beta * ell[hs], dim=0)
                den = den + w_h * (qh * torch.exp(ell[hs])).sum()
        losses.append(torch.log(den) - ell[p])
        h_sizes.append(len(hs))
    return torch.stack(losses).mean(), eps, sum(h_sizes) / n


def _clustered(b, d=16, seed=0, spread=0.7, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(max(b // 16, 2), d, generator=g, dtype=torch.float64)
    base = centers[torch.randint(len(centers), (b,), generator=g)] + spread * torch.randn(
        b, d, generator=g, dtype=torch.float64)
    z1 = F.normalize(base + noise * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    z2 = F.normalize(base + noise * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    return z1.requires_grad_(), z2.requires_grad_()


def _grads(loss, z1, z2):
    return torch.autograd.grad(loss, (z1, z2), retain_graph=True)


def _assert_same(out, ref, z1, z2, atol=1e-10):
    assert out.loss.item() == pytest.approx(ref.item(), abs=atol)
    for a, r in zip(_grads(out.loss, z1, z2), _grads(ref, z1, z2), strict=True):
        assert torch.allclose(a, r, atol=atol, rtol=0)


def test_defaults_are_the_reference():
    cfg = HexConfig()
    assert (cfg.variant, cfg.threshold, cfg.quantile, cfg.quantile_over, cfg.negatives, cfg.warmup_mode) == (
        "released", "adaptive", 0.99, "full_row", "global", "inclusive")


@pytest.mark.parametrize("kernel", ["reference", "dense", "sparse"])
@pytest.mark.parametrize("b", [80, 300])
def test_released_adaptive_equals_reference_values_and_gradients(b, kernel):
    z1, z2 = _clustered(b, seed=b, spread=0.3)
    loss = HEXLoss(HexConfig(variant="released", threshold="adaptive", warmup_epochs=0), max_epochs=100,
                   kernel=kernel)
    out = loss.pairs(z1, z2, epoch=50)
    ref, eps, h = reference_loss(z1, z2)
    assert out.terms["hex/epsilon"].item() == pytest.approx(eps, abs=1e-6)  # logged as float32
    assert out.terms["hex/h_size"].item() == pytest.approx(h)
    assert h > 0  # the test exercises a populated H(i)
    _assert_same(out, ref, z1, z2)


def test_public_call_on_normalized_views():
    z1, z2 = _clustered(256, seed=3)
    out = HEXLoss(HexConfig(variant="released", threshold="adaptive", warmup_epochs=0), max_epochs=100).pairs(
        z1, z2, epoch=50)
    ref, _, _ = reference_loss(z1, z2)
    assert out.loss.item() == pytest.approx(ref.item(), abs=1e-10)
    assert out.terms["hex/active"].item() == 1.0


@pytest.mark.parametrize("threshold", ["adaptive", "step", "cosine", "cosine_compound", "superclass"])
@pytest.mark.parametrize("kernel", ["reference", "dense", "sparse"])
def test_decomposed_unit_weights_beta_zero_positive_in_is_nt_xent(threshold, kernel):
    if kernel == "sparse" and threshold != "adaptive":
        pytest.skip("the sparse kernel serves the adaptive threshold only")
    z1, z2 = _clustered(300, seed=1)
    labels = torch.arange(300) % 4
    cfg = HexConfig(variant="decomposed", threshold=threshold, local_weight=1.0, global_weight=1.0, beta=0.0,
                    positive_in_denominator=True, warmup_epochs=0, start=0.5)
    out = HEXLoss(cfg, 100, kernel=kernel).pairs(z1, z2, epoch=2, labels=labels)
    assert out.terms["hex/h_size"].item() > 0
    _assert_same(out, nt_xent(z1, z2, 0.1).loss, z1, z2)


@pytest.mark.parametrize("kernel", ["reference", "dense", "sparse"])
@pytest.mark.parametrize("beta", [0.0, 1.5])
def test_decomposed_without_h_and_positive_is_released(beta, kernel):
    z1, z2 = _clustered(300, seed=2)
    dec = HexConfig(variant="decomposed", local_weight=0.0, beta=beta, positive_in_denominator=False,
                    warmup_epochs=0)
    out = HEXLoss(dec, 100, kernel=kernel).pairs(z1, z2, epoch=0)
    released = HEXLoss(HexConfig(warmup_epochs=0), 100, kernel=kernel).pairs(z1, z2, epoch=0)
    assert out.terms["hex/h_size"].item() > 0
    _assert_same(out, released.loss, z1, z2, atol=1e-12)
    ref, _, _ = reference_loss(z1, z2, variant="decomposed", w_h=0.0, beta=beta, positive_in=False)
    _assert_same(out, ref, z1, z2)


@pytest.mark.parametrize(("w_h", "w_g", "beta", "positive_in"),
                         [(2.0, 0.5, 1.0, True), (0.3, 1.5, 2.0, False), (3.0, 1.0, 0.0, True)])
def test_decomposed_general_weights_equal_reference(w_h, w_g, beta, positive_in):
    z1, z2 = _clustered(60, seed=4)
    cfg = HexConfig(variant="decomposed", local_weight=w_h, global_weight=w_g, beta=beta,
                    positive_in_denominator=positive_in, warmup_epochs=0, quantile=0.9)
    out = HEXLoss(cfg, 100).pairs(z1, z2, epoch=0)
    ref, _, h = reference_loss(z1, z2, q=0.9, variant="decomposed", w_h=w_h, w_g=w_g, beta=beta,
                               positive_in=positive_in)
    assert h > 0
    _assert_same(out, ref, z1, z2)


def _dcl_reference(z1, z2, tau=0.1):
    z = torch.cat([z1, z2])
    n, b = z.shape[0], z1.shape[0]
    ell = z @ z.T / tau
    rows = []
    for i in range(n):
        p = (i + b) % n
        rows.append(torch.log(sum(torch.exp(ell[i, j]) for j in range(n) if j not in (i, p))) - ell[i, p])
    return torch.stack(rows).mean()


def test_released_with_empty_h_is_dcl():
    z1, z2 = _clustered(50, seed=5)
    ref = _dcl_reference(z1, z2)
    _assert_same(dcl(z1, z2, 0.1), ref, z1, z2)
    none = HEXLoss(HexConfig(threshold="none", warmup_epochs=0), 100).pairs(z1, z2, epoch=0)
    assert none.terms["hex/h_size"].item() == 0.0
    _assert_same(none, ref, z1, z2)


@pytest.mark.parametrize("seed", range(5))
def test_rows_of_at_most_51_give_epsilon_one_and_empty_h(seed):
    # nearest 0.99-quantile of n ≤ 51 values is the largest, the self-similarity 1: H is empty for ANY input
    g = torch.Generator().manual_seed(seed)
    z1 = F.normalize(torch.randn(25, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    z2 = F.normalize(torch.randn(25, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    out = HEXLoss(HexConfig(warmup_epochs=0), 100).pairs(z1, z2, epoch=0)
    assert out.terms["hex/epsilon"].item() == pytest.approx(1.0, abs=1e-6)
    assert out.terms["hex/h_size"].item() == 0.0
    _assert_same(out, _dcl_reference(z1, z2), z1, z2)


def test_batch_64_h_is_empty_while_batch_512_clustered_is_not():
    # batch 64 (128 rows): the quantile is each row's second-largest similarity (its positive, once two views
    # agree), so H(i) would need a negative closer than the average positive: empty for views that agree.
    z1, z2 = _clustered(64, seed=6, spread=1.0, noise=0.05)
    small = HEXLoss(HexConfig(warmup_epochs=0), 100).pairs(z1, z2, epoch=0)
    assert small.terms["hex/h_size"].item() == 0.0
    # batch 512 of clustered embeddings (1024 rows): ε is the 11th largest of a row, below many cluster-mates
    z1, z2 = _clustered(512, seed=7, spread=0.3, noise=0.1)
    big = HEXLoss(HexConfig(warmup_epochs=0), 100).pairs(z1, z2, epoch=0)
    assert big.terms["hex/h_size"].item() >= 1.0


def test_quantile_over_negatives_is_an_option_that_differs():
    z1, z2 = _clustered(120, seed=8)
    full = HEXLoss(HexConfig(warmup_epochs=0), 100).pairs(z1, z2, epoch=0)
    negs = HEXLoss(HexConfig(warmup_epochs=0, quantile_over="negatives"), 100).pairs(z1, z2, epoch=0)
    ref, eps, _ = reference_loss(z1, z2, over="negatives")
    assert negs.terms["hex/epsilon"].item() == pytest.approx(eps, abs=1e-6)
    assert negs.terms["hex/epsilon"].item() < full.terms["hex/epsilon"].item()
    _assert_same(negs, ref, z1, z2)


def test_step_threshold_min_max_over_the_full_row():
    # row 0: self 1.0, positive 0.95, negatives 0.0 .. 0.9; full-row min–max: ŝ = s (min 0, max 1)
    sim = torch.tensor([[1.0, 0.95, 0.0, 0.5, 0.85, 0.9]])
    neg = torch.tensor([[False, False, True, True, True, True]])
    step = StepThreshold(start=0.9, step_down=0.1, epoch_step=10)
    assert step.delta(0) == pytest.approx(0.9) and step.delta(9) == pytest.approx(0.9)
    assert step.delta(10) == pytest.approx(0.8)
    assert step(sim, neg, 10).mask.tolist() == [[False, False, False, False, True, True]]  # ŝ > 0.8
    assert step(sim, neg, 0).mask.tolist() == [[False] * 6]  # ŝ > 0.9: none (0.9 is not above)
    # over the negatives only, 0.9 becomes the row max (ŝ = 1) and 0.85 → 0.944: both above 0.9
    negs = StepThreshold(start=0.9, step_down=0.1, epoch_step=10, over="negatives")
    assert negs(sim, neg, 0).mask.tolist() == [[False, False, False, False, True, True]]
    _, fn = step.prepare(sim, torch.tensor([1]), torch.tensor([0]), 10)
    assert (fn(sim, slice(0, 1)) & neg).tolist() == [[False, False, False, False, True, True]]


def test_cosine_compound_is_the_reference_update_applied_every_epoch():
    comp = CompoundCosineThreshold(start=0.9, end=0.3, max_epochs=20)
    delta = 0.9
    for epoch in range(25):
        delta = 0.3 + (delta - 0.3) * (1 + math.cos(math.pi * min(epoch, 20) / 20)) / 2  # the reference's loop
        assert comp.delta(epoch) == pytest.approx(delta, abs=1e-12)
    assert comp.delta(5) < HEXLoss(HexConfig(threshold="cosine", warmup_epochs=0), 20).threshold.delta(5)


def test_inclusive_warmup_matches_epoch_le_warm_epoch():
    z1, z2 = _clustered(300, seed=9)
    loss = HEXLoss(HexConfig(warmup_epochs=3), 100)  # default: inclusive, like `epoch <= warm_epoch`
    for epoch in range(4):
        out = loss.pairs(z1, z2, epoch=epoch)
        assert out.terms["hex/active"].item() == 0.0
        assert out.loss.item() == pytest.approx(nt_xent(z1, z2, 0.1).loss.item(), abs=1e-12)
    assert loss.pairs(z1, z2, epoch=4).terms["hex/active"].item() == 1.0
    exclusive = HEXLoss(HexConfig(warmup_epochs=3, warmup_mode="exclusive"), 100)
    assert exclusive.pairs(z1, z2, epoch=3).terms["hex/active"].item() == 1.0
    assert HEXLoss(HexConfig(warmup_epochs=0), 100).pairs(z1, z2, epoch=0).terms["hex/active"].item() == 1.0


def test_new_keys_are_validated():
    for key, bad in (("quantile_over", "rows"), ("negatives", "queue"), ("warmup_mode", "lt")):
        with pytest.raises(ValueError, match=f"hex.{key}"):
            HexConfig(**{key: bad})


@pytest.mark.parametrize("kernel", ["reference", "dense", "sparse"])
def test_row_with_every_negative_above_epsilon_stays_finite(kernel):
    # three near-identical images and one far away: ε is low, so rows of the tight group would have G(i) = ∅;
    # such a row keeps its negatives (H(i) emptied, i.e. DCL for that row) instead of log 0 = −∞
    g = torch.Generator().manual_seed(10)
    base = torch.randn(1, 8, generator=g, dtype=torch.float64).expand(40, 8).clone()
    base[-4:] = torch.randn(4, 8, generator=g, dtype=torch.float64)
    z1 = F.normalize(base + 1e-3 * torch.randn(40, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    z2 = F.normalize(base + 1e-3 * torch.randn(40, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    out = HEXLoss(HexConfig(warmup_epochs=0, quantile=0.5), 100, kernel=kernel).pairs(z1, z2, epoch=0)
    assert torch.isfinite(out.loss)
    grads = _grads(out.loss, z1, z2)
    assert all(torch.isfinite(gr).all() for gr in grads)
    dense = HEXLoss(HexConfig(warmup_epochs=0, quantile=0.5), 100, kernel="dense").pairs(z1, z2, epoch=0)
    _assert_same(out, dense.loss, z1, z2, atol=1e-9)


@pytest.mark.parametrize("kernel", ["reference", "dense"])
@pytest.mark.parametrize("w_h", [0.0, 3.0])
def test_superclass_siblings_oracle_equals_a_loop(kernel, w_h):
    """The siblings oracle (decomposed, β = 0, positive in): H(i) = negatives of i's superclass whose class is not
    i's. The anchor's own class stays with the global negatives, so at w_h = 0 only the siblings leave the
    denominator (the superclass oracle would remove the anchor's own class as well)."""
    b = 120
    z1, z2 = _clustered(b, seed=6)
    classes = torch.arange(b) % 6
    supers = classes // 2  # classes 2k and 2k+1 are siblings
    cfg = HexConfig(variant="decomposed", threshold="superclass_siblings", local_weight=w_h, beta=0.0,
                    positive_in_denominator=True, warmup_epochs=0)
    out = HEXLoss(cfg, 100, kernel=kernel).pairs(z1, z2, epoch=0, labels=supers, classes=classes)

    z, n = torch.cat([z1, z2]), 2 * b
    ell = z @ z.T / cfg.temperature
    sup, cls = torch.cat([supers, supers]).tolist(), torch.cat([classes, classes]).tolist()
    losses, h_total = [], 0
    for i in range(n):
        p = (i + b) % n
        negs = [j for j in range(n) if j not in (i, p)]
        hs = [j for j in negs if sup[j] == sup[i] and cls[j] != cls[i]]
        gs = [j for j in negs if j not in hs]
        den = torch.exp(ell[i, p]) + torch.exp(ell[i, gs]).sum() + w_h * torch.exp(ell[i, hs]).sum()
        losses.append(torch.log(den) - ell[i, p])
        h_total += len(hs)
    ref = torch.stack(losses).mean()
    assert out.terms["hex/h_size"].item() == pytest.approx(h_total / n) and h_total > 0
    assert out.terms["hex/purity"].item() == 1.0 and out.terms["hex/purity_class"].item() == 0.0
    _assert_same(out, ref, z1, z2)
