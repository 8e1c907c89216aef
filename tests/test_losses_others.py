"""VICReg, Barlow Twins, BYOL/SimSiam cosine loss and InfoNCE against small hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hexray.losses import barlow_twins_loss, cosine_regression_loss, info_nce, nt_xent, vicreg_loss


def test_cosine_regression_hand_case():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[1.0, 1.0], [0.0, -3.0]])
    # cos = 1/√2 and −1  →  mean(2 − 2cos) = ((2 − √2) + 4)/2
    assert cosine_regression_loss(p, z).item() == pytest.approx((2 - math.sqrt(2) + 4) / 2, rel=1e-6)


def test_vicreg_hand_case():
    z1 = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    z2 = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    out = vicreg_loss(z1, z2, sim_coeff=1.0, var_coeff=1.0, cov_coeff=1.0, eps=0.0)
    inv = (0 + 1 + 0 + 1) / 4  # MSE over all entries
    # z1: var (unbiased) 2 and 2 → std √2 > 1 → no hinge; z2: var 2 and 0 → hinge 1 − 0 on dim 2 → mean 0.5
    var = (0.0 + 0.5) / 2
    # z1: cov(x, y) = 2 (unbiased) → off-diagonal 2·2² / d=2 = 4; z2: cov 0
    cov = 4.0
    assert out.terms["vicreg/invariance"].item() == pytest.approx(inv)
    assert out.terms["vicreg/variance"].item() == pytest.approx(var)
    assert out.terms["vicreg/covariance"].item() == pytest.approx(cov)
    assert out.loss.item() == pytest.approx(inv + var + cov)
    default = vicreg_loss(z1, z2)  # 25/25/1 weighting, eps = 1e-4
    assert default.loss.item() == pytest.approx(25 * inv + 25 * default.terms["vicreg/variance"].item() + cov, rel=1e-6)


def test_barlow_twins_hand_case():
    z1 = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])  # BN → [[1, 1], [−1, −1]]
    z2 = torch.tensor([[3.0, -1.0], [-3.0, 1.0]])  # BN → [[1, −1], [−1, 1]]
    out = barlow_twins_loss(z1, z2, lambd=0.5, eps=0.0)
    # C = BN(z1)ᵀBN(z2)/2 = [[1, −1], [1, −1]] → on-diag (1−1)² + (1+1)² = 4, off-diag (−1)² + 1² = 2
    assert out.terms["barlow/on_diag"].item() == pytest.approx(4.0)
    assert out.terms["barlow/off_diag"].item() == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx(4.0 + 0.5 * 2.0)


def test_barlow_perfect_decorrelated_views_give_zero():
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert barlow_twins_loss(x, x.clone(), eps=0.0).loss.item() == pytest.approx(0.0, abs=1e-6)


def test_nt_xent_hand_case_and_reference():
    z1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    z2 = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # two rows, each: positive sim 0, no negatives besides... the layout needs B ≥ 2 for a negative
    with pytest.raises(ValueError, match="negative"):
        nt_xent(z1, z2)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    tau = 0.5
    z = torch.cat([z1, z2])
    sim = z @ z.T
    expect = []
    for i in range(4):
        p = (i + 2) % 4
        den = sum(math.exp(sim[i, j].item() / tau) for j in range(4) if j != i)
        expect.append(-sim[i, p].item() / tau + math.log(den))
    assert nt_xent(z1, z2, tau).loss.item() == pytest.approx(sum(expect) / 4, abs=1e-12)


def test_info_nce_general_layout_matches_cross_entropy():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    c = F.normalize(torch.randn(30, 4, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    pos = torch.randint(0, 30, (7,), generator=g)
    out = info_nce(a, c, pos, None, 0.2)
    ref = F.cross_entropy(a @ c.T / 0.2, pos)
    assert out.loss.item() == pytest.approx(ref.item(), abs=1e-12)
    for x, y in zip(torch.autograd.grad(out.loss, (a, c)), torch.autograd.grad(ref, (a, c)), strict=True):
        assert torch.allclose(x, y, atol=1e-12)


def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="z2"):
        vicreg_loss(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="z1"):
        barlow_twins_loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="lambd"):
        barlow_twins_loss(x, x, lambd=-1.0)
    with pytest.raises(ValueError, match="p must be a 2-D"):
        cosine_regression_loss(torch.randn(3), x)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(F.normalize(x, dim=1), F.normalize(x, dim=1), temperature=0.0)
    with pytest.raises(ValueError, match="anchors must be L2-normalised"):
        nt_xent(x * 3, x)
    nt_xent(x * 3, x, validate=False)  # the hot path skips value checks (no host sync)
    with pytest.raises(ValueError, match="positive_index must be an int64"):
        info_nce(F.normalize(x, dim=1), F.normalize(x, dim=1), torch.tensor([0.0, 1.0, 2.0, 3.0]))
