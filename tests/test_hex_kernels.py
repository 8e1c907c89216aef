"""The fast HEX and InfoNCE kernels against their readable equations (hexray.losses.hex, infonce.info_nce_rows).

Random and clustered inputs in float64; every setting that changes the equation (variant, positive in or out,
w_h, w_g, β, each threshold kind, pair and queue layouts, chunking): values, gradients and logged statistics.
The equations themselves are checked against explicit loops in test_hex_reference.py.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hexray.losses import HexConfig, HEXLoss, info_nce
from hexray.losses.hex import adaptive_epsilon, negatives_mask
from hexray.losses.infonce import info_nce_rows
from hexray.losses.thresholds import AdaptiveQuantileThreshold

EQUATIONS = [  # (variant, positive_in_denominator, w_h, w_g, β)
    ("released", True, 1.0, 1.0, 0.0),
    ("decomposed", True, 1.0, 1.0, 0.0),
    ("decomposed", False, 0.0, 1.0, 0.0),
    ("decomposed", True, 3.0, 0.7, 1.0),
    ("decomposed", False, 0.5, 1.5, 2.0),
]


def _clustered(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two views of n points around n/16 centres, so that a 0.99-quantile ε leaves H(i) non-empty; superclass =
    centre % 3."""
    z1, z2, centre = _clustered_by_centre(n, d, seed)
    return z1, z2, centre % 3


def _clustered_by_centre(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_clustered`'s points with the centre each was drawn around (a fine class nested in the superclass)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(n // 16, 2), d, generator=g, dtype=torch.float64)
    which = torch.randint(len(centres), (n,), generator=g)
    base = centres[which] + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    z1 = F.normalize(base + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    z2 = F.normalize(base + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    return z1, z2, which


def _run(loss: HEXLoss, z1, z2, labels, epoch=0, classes=None):
    out = loss.pairs(z1, z2, epoch=epoch, labels=labels, classes=classes)
    return out, torch.autograd.grad(out.loss, (z1, z2))


def _assert_equal(out, grads, ref, ref_grads, atol=1e-10):
    assert set(out.terms) == set(ref.terms)
    for key, value in ref.terms.items():
        assert out.terms[key].item() == pytest.approx(value.item(), abs=atol), key
    for a, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, r, atol=atol, rtol=0)


@pytest.mark.parametrize(("variant", "positive_in", "w_h", "w_g", "beta"), EQUATIONS)
@pytest.mark.parametrize("threshold",
                         ["adaptive", "step", "cosine_compound", "superclass", "superclass_siblings", "none"])
def test_dense_kernel_equals_the_equation(variant, positive_in, w_h, w_g, beta, threshold):
    z1, z2, centre = _clustered_by_centre(150, 12, seed=3)
    labels = centre % 3
    classes = centre if threshold == "superclass_siblings" else None  # read by the siblings oracle only
    cfg = HexConfig(variant=variant, positive_in_denominator=positive_in, local_weight=w_h, global_weight=w_g,
                    beta=beta, threshold=threshold, warmup_epochs=0, start=0.6)
    ref, ref_grads = _run(HEXLoss(cfg, 10, kernel="reference"), z1, z2, labels, epoch=2, classes=classes)
    assert threshold == "none" or ref.terms["hex/h_size"].item() > 0, "the case must exercise H(i)"
    for chunk_rows in (None, 37):
        out, grads = _run(HEXLoss(cfg, 10, kernel="dense", chunk_rows=chunk_rows), z1, z2, labels, epoch=2,
                          classes=classes)
        _assert_equal(out, grads, ref, ref_grads)


@pytest.mark.parametrize(("variant", "positive_in", "w_h", "w_g", "beta"), EQUATIONS)
@pytest.mark.parametrize("over", ["full_row", "negatives"])
def test_sparse_kernel_equals_the_equation(variant, positive_in, w_h, w_g, beta, over):
    z1, z2, labels = _clustered(400, 12, seed=5)  # 800 columns: the sparse kernel's regime
    cfg = HexConfig(variant=variant, positive_in_denominator=positive_in, local_weight=w_h, global_weight=w_g,
                    beta=beta, quantile_over=over, warmup_epochs=0)
    ref, ref_grads = _run(HEXLoss(cfg, 10, kernel="reference"), z1, z2, labels)
    assert ref.terms["hex/h_size"].item() > 1
    out, grads = _run(HEXLoss(cfg, 10, kernel="sparse"), z1, z2, labels)
    _assert_equal(out, grads, ref, ref_grads)


def test_queue_layout_equals_the_equation():
    """Anchors against a larger candidate set (a MoCo-style queue), no self column."""
    g = torch.Generator().manual_seed(11)
    anchors = F.normalize(torch.randn(60, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    candidates = F.normalize(torch.randn(900, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    positive = torch.randperm(900, generator=g)[:60]
    for variant, positive_in, w_h, w_g, beta in EQUATIONS:
        cfg = HexConfig(variant=variant, positive_in_denominator=positive_in, local_weight=w_h, global_weight=w_g,
                        beta=beta, warmup_epochs=0)
        results = {}
        for kernel in ("reference", "dense", "sparse"):
            out = HEXLoss(cfg, 10, kernel=kernel)(anchors, candidates, positive, None, epoch=0)
            results[kernel] = (out, torch.autograd.grad(out.loss, (anchors, candidates)))
        assert results["reference"][0].terms["hex/h_size"].item() > 1
        for kernel in ("dense", "sparse"):
            _assert_equal(*results[kernel], *results["reference"])


@pytest.mark.parametrize("variant", ["released", "decomposed"])
def test_a_row_whose_negatives_all_enter_h_keeps_them_in_g(variant):
    """All negatives in H(i) (one superclass) would leave D_i = Σ_G e^ℓ = 0: every kernel keeps H(i) empty there."""
    z1, z2, _ = _clustered(40, 6, seed=4)
    same = torch.zeros(40, dtype=torch.long)
    cfg = HexConfig(threshold="superclass", variant=variant, positive_in_denominator=False, local_weight=0.0,
                    warmup_epochs=0)
    ref, ref_grads = _run(HEXLoss(cfg, 10, kernel="reference"), z1, z2, same)
    assert torch.isfinite(ref.loss) and ref.terms["hex/h_size"].item() == 0
    dcl_rows = info_nce_rows(torch.cat([z1, z2]) @ torch.cat([z1, z2]).T, torch.arange(80).roll(40),
                             torch.arange(80), cfg.temperature, decoupled=True)
    assert ref.loss.item() == pytest.approx(dcl_rows.mean().item(), abs=1e-12)
    _assert_equal(*_run(HEXLoss(cfg, 10, kernel="dense"), z1, z2, same), ref, ref_grads)


@pytest.mark.parametrize("over", ["full_row", "negatives"])
def test_adaptive_epsilon_equation_equals_the_top_k_selection(over):
    z1, z2, _ = _clustered(500, 6, seed=9)
    z = torch.cat([z1, z2]).detach()
    sim = z @ z.T
    pos = torch.cat([torch.arange(500, 1000), torch.arange(500)])
    self_idx = torch.arange(1000)
    eps = AdaptiveQuantileThreshold(0.99, over).epsilon(sim, pos, self_idx)
    assert eps.item() == pytest.approx(adaptive_epsilon(sim, negatives_mask(pos, self_idx, 1000), 0.99, over).item(),
                                       abs=1e-12)


@pytest.mark.parametrize(("decoupled", "with_self"), list(itertools.product([False, True], [True, False])))
def test_info_nce_kernel_equals_the_equation(decoupled, with_self):
    g = torch.Generator().manual_seed(2)
    anchors = F.normalize(torch.randn(70, 5, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    candidates = torch.cat([anchors, F.normalize(torch.randn(30, 5, generator=g, dtype=torch.float64), dim=1)])
    positive = (torch.arange(70) + 1) % 70
    self_idx = torch.arange(70) if with_self else None
    out = info_nce(anchors, candidates, positive, self_idx, 0.2, decoupled=decoupled, validate=False).loss
    ref = info_nce_rows(anchors @ candidates.T, positive, self_idx, 0.2, decoupled).mean()
    assert out.item() == pytest.approx(ref.item(), abs=1e-12)
    for a, r in zip(torch.autograd.grad(out, anchors), torch.autograd.grad(ref, anchors), strict=True):
        assert torch.allclose(a, r, atol=1e-12, rtol=0)
