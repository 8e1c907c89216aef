"""HEX against independent references: NT-Xent equivalence, the released variant, a brute-force decomposition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hexray.losses import HexConfig, HEXLoss, info_nce, nt_xent
from hexray.losses.hex import negatives_mask
from hexray.losses.thresholds import AdaptiveQuantileThreshold, CosineThreshold, StepThreshold, build_threshold

KINDS = ("adaptive", "step", "cosine", "superclass")
# The paper's general form with a negatives-only quantile and `epoch < warmup_epochs`: options of HexConfig, tested
# here; the reference code's semantics (the defaults) are tested in test_hex_reference.py.
PAPER = dict(variant="decomposed", quantile_over="negatives", warmup_mode="exclusive")


def _views(b: int, d: int = 6, seed: int = 0, dtype=torch.float64, noise: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, d, generator=g, dtype=dtype)
    z1 = F.normalize(base + noise * torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    z2 = F.normalize(base + noise * torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    labels = torch.randint(0, 3, (b,), generator=g)
    return z1.requires_grad_(), z2.requires_grad_(), labels


def _brute(z1, z2, cfg: HexConfig, in_h) -> torch.Tensor:
    """design/HEX.md's formula with explicit loops; in_h(i, j) says whether negative j is in H(i)."""
    z = torch.cat([z1, z2])
    n, b = z.shape[0], z1.shape[0]
    logits = z @ z.T / cfg.temperature
    losses = []
    for i in range(n):
        p = (i + b) % n
        negs = [j for j in range(n) if j not in (i, p)]
        hs = [j for j in negs if in_h(i, j)]
        gs = [j for j in negs if not in_h(i, j)]
        keep_pos = cfg.variant == "decomposed" and cfg.positive_in_denominator
        den = keep_pos * torch.exp(logits[i, p]) + cfg.global_weight * sum((torch.exp(logits[i, j]) for j in gs), 0.0)
        if hs and cfg.variant == "decomposed":
            q = len(hs) * torch.softmax(cfg.beta * logits[i, hs], dim=0)
            den = den + cfg.local_weight * (q * torch.exp(logits[i, hs])).sum()
        losses.append(torch.log(den) - logits[i, p])
    return torch.stack(losses).mean()


def _h_from_eps(z1, z2, eps: float):
    z = torch.cat([z1, z2]).detach()
    sim = z @ z.T
    return lambda i, j: bool(sim[i, j] > eps)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("b", [2, 5, 16, 33])
def test_unit_weights_and_beta_zero_equal_nt_xent(kind, b):
    z1, z2, labels = _views(b, seed=b)
    cfg = HexConfig(**PAPER, threshold=kind, local_weight=1.0, global_weight=1.0, beta=0.0, warmup_epochs=0,
                    quantile=0.8)
    out = HEXLoss(cfg, max_epochs=10).pairs(z1, z2, epoch=3, labels=labels)
    ref = nt_xent(z1, z2, cfg.temperature).loss
    assert abs(out.loss.item() - ref.item()) < 1e-5
    assert out.terms["hex/h_size"].item() > 0 or b == 2  # H(i) was really populated
    g_hex = torch.autograd.grad(out.loss, (z1, z2))
    g_ref = torch.autograd.grad(ref, (z1, z2))
    for a, r in zip(g_hex, g_ref, strict=True):
        assert torch.allclose(a, r, atol=1e-8)


@pytest.mark.parametrize("chunk_rows", [None, 1, 3])
@pytest.mark.parametrize(("beta", "w_h", "w_g"), [(1.0, 2.0, 0.5), (0.5, 0.0, 1.5), (2.0, 0.3, 1.0)])
def test_full_decomposition_matches_brute_force(beta, w_h, w_g, chunk_rows):
    z1, z2, _ = _views(9, seed=1)
    cfg = HexConfig(**PAPER, beta=beta, local_weight=w_h, global_weight=w_g, warmup_epochs=0, quantile=0.7)
    out = HEXLoss(cfg, max_epochs=10, chunk_rows=chunk_rows).pairs(z1, z2, epoch=0)
    ref = _brute(z1, z2, cfg, _h_from_eps(z1, z2, out.terms["hex/epsilon"].item()))
    assert out.loss.item() == pytest.approx(ref.item(), abs=1e-10)
    for a, r in zip(torch.autograd.grad(out.loss, (z1, z2)), torch.autograd.grad(ref, (z1, z2)), strict=True):
        assert torch.allclose(a, r, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_released_variant_is_dcl_without_h(kind):
    z1, z2, labels = _views(12, seed=2)
    cfg = HexConfig(**{**PAPER, "variant": "released"}, threshold=kind, warmup_epochs=0, quantile=0.8, beta=1.0,
                    local_weight=3.0)
    loss = HEXLoss(cfg, max_epochs=10)
    out = loss.pairs(z1, z2, epoch=5, labels=labels)
    # independent reference: explicit mask built from the public threshold interface
    z = torch.cat([z1, z2])
    n = z.shape[0]
    sim = z @ z.T
    pos = (torch.arange(n) + n // 2) % n
    neg = ~torch.eye(n, dtype=torch.bool)
    neg[torch.arange(n), pos] = False
    lab = torch.cat([labels, labels])
    h = build_threshold(cfg, 10)(sim.detach(), neg, 5, lab, lab).mask
    out_of_den = h | torch.eye(n, dtype=torch.bool)
    out_of_den[torch.arange(n), pos] = True  # released: the positive is not in the denominator either
    logits = sim / cfg.temperature
    ref = (torch.logsumexp(logits.masked_fill(out_of_den, float("-inf")), 1) - logits[torch.arange(n), pos]).mean()
    assert out.loss.item() == pytest.approx(ref.item(), abs=1e-10)
    assert out.terms["hex/local_denominator"].item() == 0.0
    assert h.any()


def test_h_never_holds_anchor_or_positive():
    # near-identical embeddings: the anchor and its positive top every row, yet must stay out of H(i)
    z1, z2, labels = _views(10, seed=3, noise=0.01)
    n = 20
    pos = (torch.arange(n) + 10) % n
    z = torch.cat([z1, z2]).detach()
    neg = ~torch.eye(n, dtype=torch.bool)
    neg[torch.arange(n), pos] = False
    lab = torch.cat([labels, labels])
    for kind in KINDS:
        thr = build_threshold(HexConfig(**PAPER, threshold=kind, quantile=0.5, start=0.0), 10)
        h = thr(z @ z.T, neg, 0, lab, lab).mask
        assert not h[torch.arange(n), torch.arange(n)].any() and not h[torch.arange(n), pos].any()
    # and inside the loss: with w_h = 0 (H dropped), a positive wrongly in H would drop the positive term
    cfg = HexConfig(**PAPER, local_weight=0.0, warmup_epochs=0, quantile=0.5)
    out = HEXLoss(cfg, 10).pairs(z1, z2, epoch=0)
    assert torch.isfinite(out.loss) and out.loss.item() >= 0.0
    assert out.terms["hex/h_size"].item() <= n - 2


def test_adaptive_epsilon_is_mean_of_row_quantiles():
    g = torch.Generator().manual_seed(4)
    for n, q in ((37, 0.99), (200, 0.99), (64, 0.9), (11, 0.75)):
        z = F.normalize(torch.randn(n, 8, generator=g, dtype=torch.float64), dim=1)
        sim = z @ z.T
        pos = (torch.arange(n) + 1) % n
        neg = ~torch.eye(n, dtype=torch.bool)
        neg[torch.arange(n), pos] = False
        ref = torch.stack([torch.quantile(sim[i][neg[i]], q, interpolation="nearest") for i in range(n)]).mean()
        thr = AdaptiveQuantileThreshold(q, over="negatives")
        res = thr(sim, neg, 0)
        assert res.epsilon.item() == pytest.approx(ref.item(), abs=1e-12)
        assert torch.equal(res.mask, neg & (sim > ref))
        eps, _ = thr.prepare(sim, pos, torch.arange(n), 0)
        assert eps.item() == pytest.approx(ref.item(), abs=1e-12)
        eps_noself, _ = thr.prepare(sim, pos, None, 0)  # queue layout: self is a candidate like any other
        neg2 = torch.ones(n, n, dtype=torch.bool)
        neg2[torch.arange(n), pos] = False
        ref2 = torch.stack([torch.quantile(sim[i][neg2[i]], q, interpolation="nearest") for i in range(n)]).mean()
        assert eps_noself.item() == pytest.approx(ref2.item(), abs=1e-12)


def test_adaptive_quantile_on_wide_rows_uses_exact_selection():
    g = torch.Generator().manual_seed(5)
    z = F.normalize(torch.randn(300, 16, generator=g), dim=1)
    sim = torch.cat([z @ z.T] * 8, dim=1)  # 2400 columns: the block-pruned top-k path, with ties
    pos = torch.randint(0, 2400, (300,), generator=g)
    neg = torch.ones_like(sim, dtype=torch.bool)
    neg[torch.arange(300), pos] = False
    ref = torch.stack([torch.quantile(sim[i][neg[i]], 0.99, interpolation="nearest") for i in range(300)]).mean()
    eps, _ = AdaptiveQuantileThreshold(0.99, "negatives").prepare(sim, pos, None, 0)
    assert eps.item() == pytest.approx(ref.item(), abs=1e-6)


def test_step_and_cosine_schedules():
    step = StepThreshold(start=0.9, step_down=0.1, epoch_step=100, over="negatives")
    for epoch, delta in ((0, 0.9), (99, 0.9), (100, 0.8), (250, 0.7), (499, 0.5), (1000, 0.0), (5000, 0.0)):
        assert step.delta(epoch) == pytest.approx(delta)
    cos = CosineThreshold(start=0.9, end=0.3, max_epochs=100, over="negatives")
    assert cos.delta(0) == pytest.approx(0.9)
    assert cos.delta(50) == pytest.approx(0.6)
    assert cos.delta(25) == pytest.approx(0.3 + 0.6 * (1 + math.cos(math.pi / 4)) / 2)
    assert cos.delta(100) == pytest.approx(0.3) and cos.delta(150) == pytest.approx(0.3)
    # the schedule reaches the mask: ŝ = min–max normalised over the row's negatives, H = {ŝ > δ}
    sim = torch.tensor([[1.0, 0.0, 0.2, 0.5, 0.95, 0.9]])
    neg = torch.tensor([[False, False, True, True, True, True]])
    res = step(sim, neg, 100)  # δ = 0.8; ŝ = [_, _, 0, 0.4, 1, 0.933]
    assert res.mask.tolist() == [[False, False, False, False, True, True]] and res.epsilon.item() == pytest.approx(0.8)
    res = cos(sim, neg, 50)  # δ = 0.6
    assert res.mask.tolist() == [[False, False, False, False, True, True]]
    _, fn = step.prepare(sim, torch.tensor([1]), torch.tensor([0]), 100)
    assert (fn(sim, slice(0, 1)) & neg).tolist() == res.mask.tolist()


def test_superclass_mask_is_label_equality_minus_self_and_positive():
    labels = torch.tensor([0, 1, 0, 2, 1, -1, 0, 2])
    n = 16
    lab = torch.cat([labels, labels])
    pos = (torch.arange(n) + 8) % n
    neg = ~torch.eye(n, dtype=torch.bool)
    neg[torch.arange(n), pos] = False
    thr = build_threshold(HexConfig(**PAPER, threshold="superclass"), 10)
    mask = thr(torch.zeros(n, n), neg, 0, lab, lab).mask
    expect = (lab[:, None] == lab[None, :]) & (lab[:, None] >= 0) & neg
    assert torch.equal(mask, expect)
    with pytest.raises(ValueError, match="labels_anchor"):
        thr(torch.zeros(n, n), neg, 0)


def test_superclass_siblings_mask_is_the_superclass_less_the_anchors_class():
    sup = torch.tensor([0, 1, 0, 2, 1, -1, 0, 2, 0])
    cls = torch.tensor([0, 2, 1, 4, 2, 6, 0, 5, -1])  # 8: class unknown, so never a sibling
    n = 2 * len(sup)
    lab, fine = torch.cat([sup, sup]), torch.cat([cls, cls])
    pos = (torch.arange(n) + len(sup)) % n
    neg = ~torch.eye(n, dtype=torch.bool)
    neg[torch.arange(n), pos] = False
    thr = build_threshold(HexConfig(**PAPER, threshold="superclass_siblings"), 10)
    mask = thr(torch.zeros(n, n), neg, 0, lab, lab, (fine, fine)).mask
    expect = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            expect[i, j] = bool(neg[i, j] and lab[i] >= 0 and lab[i] == lab[j] and fine[i] >= 0 and fine[j] >= 0
                                and fine[i] != fine[j])
    assert torch.equal(mask, expect) and mask.any()
    eps, mask_fn = thr.prepare(torch.zeros(n, n), pos, torch.arange(n), 0, lab, lab, (fine, fine))
    assert torch.equal(mask_fn(torch.zeros(5, n), slice(3, 8)) & neg[3:8], expect[3:8])
    with pytest.raises(ValueError, match="fine class labels"):
        thr(torch.zeros(n, n), neg, 0, lab, lab)
    with pytest.raises(ValueError, match="classes must have shapes"):
        thr(torch.zeros(n, n), neg, 0, lab, lab, (fine[:3], fine))


def test_purity_on_a_hand_built_case():
    # two tight clusters of 2 images each; images 0,1 share superclass 0, images 2,3 have superclasses 0 and 1
    c = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    base = c[[0, 0, 1, 1]]
    z1 = F.normalize(base + torch.tensor([[0, 0, 0.01], [0, 0, -0.01], [0, 0, 0.02], [0, 0, -0.02]]), dim=1)
    z2 = F.normalize(base + torch.tensor([[0, 0.01, 0], [0.01, 0, 0], [0, 0, 0.03], [0, 0, -0.03]]), dim=1)
    labels = torch.tensor([0, 0, 0, 1])
    cfg = HexConfig(**PAPER, threshold="step", start=0.5, step_down=0.0, warmup_epochs=0)
    out = HEXLoss(cfg, 10).pairs(z1, z2, epoch=0, labels=labels)
    # H(i) = the 2 views of the other image in i's cluster: 16 pairs, cluster {0,1} pure, cluster {2,3} not.
    assert out.terms["hex/h_size"].item() == pytest.approx(2.0)
    assert out.terms["hex/purity"].item() == pytest.approx(0.5)
    unknown = torch.tensor([0, -1, 0, 1])
    out = HEXLoss(cfg, 10).pairs(z1, z2, epoch=0, labels=unknown)  # pairs with an unknown label don't count
    assert out.terms["hex/purity"].item() == pytest.approx(0.0)


def _plain_share(pairs: list[tuple[int, int]], labels_a: list[int], labels_c: list[int]) -> float:
    known = [(i, j) for i, j in pairs if labels_a[i] >= 0 and labels_c[j] >= 0]
    return sum(labels_a[i] == labels_c[j] for i, j in known) / max(len(known), 1)


@pytest.mark.parametrize("threshold", ["adaptive", "superclass", "step", "none"])
def test_h_diagnostics_match_a_plain_count_and_the_kernels_purity(threshold):
    """What H(i) holds (class, superclass) and the chance level over all negatives, against a loop over pairs; the
    superclass share equals the kernel's own `hex/purity` (same H(i))."""
    n = 48  # anchors = candidates = two views of 24 images
    g = torch.Generator().manual_seed(3)
    sup_img = torch.randint(0, 3, (n // 2,), generator=g)
    cls_img = sup_img * 2 + torch.randint(0, 2, (n // 2,), generator=g)
    cls_img[5] = -1  # an unknown label counts nowhere
    sup, cls = torch.cat([sup_img, sup_img]), torch.cat([cls_img, cls_img])
    centres = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=1)
    z = F.normalize(centres[cls.clamp(min=0)] + 0.4 * torch.randn(n, 8, generator=g, dtype=torch.float64), dim=1)
    pos = torch.cat([torch.arange(n // 2, n), torch.arange(0, n // 2)])
    cfg = HexConfig(**PAPER, threshold=threshold, start=0.8, step_down=0.0, quantile=0.9, warmup_epochs=0)
    loss = HEXLoss(cfg, 10, kernel="dense")
    out = loss(z, z, pos, torch.arange(n), epoch=0, labels_anchor=sup, labels_candidates=sup, classes=(cls, cls))
    neg = negatives_mask(pos, torch.arange(n), n)
    h = loss.threshold(z @ z.T, neg, 0, sup, sup).mask
    h_pairs = [(i, j) for i in range(n) for j in range(n) if h[i, j]]
    neg_pairs = [(i, j) for i in range(n) for j in range(n) if neg[i, j]]
    s, c = sup.tolist(), cls.tolist()
    assert out.terms["hex/purity_class"].item() == pytest.approx(_plain_share(h_pairs, c, c), abs=1e-6)
    assert out.terms["hex/chance_class"].item() == pytest.approx(_plain_share(neg_pairs, c, c), abs=1e-6)
    assert out.terms["hex/chance_superclass"].item() == pytest.approx(_plain_share(neg_pairs, s, s), abs=1e-6)
    assert out.terms["hex/purity"].item() == pytest.approx(_plain_share(h_pairs, s, s), abs=1e-6)
    if threshold == "superclass":
        assert out.terms["hex/purity"].item() == 1.0 and out.terms["hex/purity_class"].item() < 1.0
    if threshold == "none":
        assert not h_pairs and out.terms["hex/purity_class"].item() == 0.0
    assert out.terms["hex/chance_class"].item() < out.terms["hex/chance_superclass"].item()


def test_h_diagnostics_never_touch_the_loss_or_its_gradient():
    z1, z2, labels = _views(16, seed=4)
    cfg = HexConfig(**PAPER, warmup_epochs=0)
    loss = HEXLoss(cfg, 10)
    n = z1.shape[0] * 2
    z = torch.cat([z1, z2]).requires_grad_()
    pos = torch.cat([torch.arange(n // 2, n), torch.arange(0, n // 2)])
    sup = torch.cat([labels, labels])
    plain = loss(z, z, pos, torch.arange(n), epoch=0, labels_anchor=sup, labels_candidates=sup)
    (grad_plain,) = torch.autograd.grad(plain.loss, z)
    diag = loss(z, z, pos, torch.arange(n), epoch=0, labels_anchor=sup, labels_candidates=sup, classes=(sup, sup))
    (grad_diag,) = torch.autograd.grad(diag.loss, z)
    assert torch.equal(plain.loss, diag.loss) and torch.equal(grad_plain, grad_diag)
    assert "hex/purity_class" in diag.terms and "hex/purity_class" not in plain.terms


def test_warmup_returns_infonce_with_the_same_term_keys():
    z1, z2, labels = _views(8, seed=6)
    cfg = HexConfig(**PAPER, warmup_epochs=3, beta=2.0, local_weight=4.0)
    loss = HEXLoss(cfg, 10)
    warm = loss.pairs(z1, z2, epoch=2, labels=labels)
    assert warm.loss.item() == pytest.approx(nt_xent(z1, z2, cfg.temperature).loss.item(), abs=1e-12)
    assert warm.terms["hex/active"].item() == 0.0
    live = loss.pairs(z1, z2, epoch=3, labels=labels)
    assert live.terms["hex/active"].item() == 1.0
    assert abs(live.loss.item() - warm.loss.item()) > 1e-6
    assert set(warm.terms) == set(live.terms)


def test_general_layout_with_queue_candidates():
    g = torch.Generator().manual_seed(7)
    a = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    c = F.normalize(torch.randn(20, 5, generator=g, dtype=torch.float64), dim=1)
    pos = torch.arange(6)
    cfg = HexConfig(**PAPER, beta=0.0, warmup_epochs=0, quantile=0.6)
    out = HEXLoss(cfg, 10)(a, c, pos, epoch=0)
    assert out.loss.item() == pytest.approx(info_nce(a, c, pos, None, cfg.temperature).loss.item(), abs=1e-12)
    assert out.terms["hex/h_size"].item() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("variant", ["decomposed", "released"])
def test_gradients_finite_for_near_identical_embeddings(dtype, variant):
    g = torch.Generator().manual_seed(8)
    base = torch.randn(1, 32, generator=g).expand(64, 32)
    z1 = (base + 1e-4 * torch.randn(64, 32, generator=g)).requires_grad_()
    z2 = (base + 1e-4 * torch.randn(64, 32, generator=g)).requires_grad_()
    cfg = HexConfig(**{**PAPER, "variant": variant}, warmup_epochs=0, beta=1.0, local_weight=2.0, temperature=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = HEXLoss(cfg, 10).pairs(F.normalize(z1, dim=1), F.normalize(z2, dim=1), epoch=0)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    assert all(torch.isfinite(v).all() for v in out.terms.values())


def test_bf16_autocast_close_to_float32():
    z1, z2, _ = _views(32, d=16, seed=9, dtype=torch.float32)
    cfg = HexConfig(**PAPER, warmup_epochs=0)
    ref = HEXLoss(cfg, 10).pairs(z1, z2, epoch=0).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = HEXLoss(cfg, 10).pairs(z1, z2, epoch=0).loss
    assert low.dtype == torch.float32 and low.item() == pytest.approx(ref.item(), rel=0.05)


def test_bad_inputs_raise_named_value_errors():
    z1, z2, _ = _views(4)
    loss = HEXLoss(HexConfig(**PAPER, warmup_epochs=0), 10)
    with pytest.raises(ValueError, match="z2"):
        loss.pairs(z1, z2[:3], epoch=0)
    with pytest.raises(ValueError, match="anchors must be L2-normalised"):
        loss.pairs(2 * z1, z2, epoch=0)
    with pytest.raises(ValueError, match="labels"):
        loss.pairs(z1, z2, epoch=0, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="positive_index"):
        loss(z1, z2, torch.tensor([0, 1, 2, 9]), epoch=0)
    with pytest.raises(ValueError, match="self_index"):
        loss(z1, z1, torch.tensor([1, 2, 3, 0]), torch.tensor([1, 1, 2, 3]), epoch=0)
    with pytest.raises(ValueError, match="negative"):
        loss(z1, z2[:1], torch.zeros(4, dtype=torch.long), epoch=0)
    with pytest.raises(ValueError, match="hex.local_weight"):
        HexConfig(local_weight=-1.0)
    with pytest.raises(ValueError, match="hex.threshold"):
        HexConfig(threshold="nope")
    with pytest.raises(ValueError, match="hex.variant"):
        HexConfig(variant="nope")
    with pytest.raises(ValueError, match="max_epochs"):
        HEXLoss(HexConfig(**PAPER), 0)
    with pytest.raises(ValueError, match="superclass"):
        HEXLoss(HexConfig(**PAPER, threshold="superclass", warmup_epochs=0), 10).pairs(z1, z2, epoch=0)


# --- the sparse CPU kernel for the adaptive threshold (hexray.losses._sparse_hex) against the dense one -------


def _clustered(b: int, d: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(max(b // 16, 2), d, generator=g, dtype=dtype)
    base = centers[torch.randint(len(centers), (b,), generator=g)] + 0.7 * torch.randn(b, d, generator=g, dtype=dtype)
    z1 = F.normalize(base + 0.3 * torch.randn(b, d, generator=g, dtype=dtype), dim=1).requires_grad_()
    z2 = F.normalize(base + 0.3 * torch.randn(b, d, generator=g, dtype=dtype), dim=1).requires_grad_()
    return z1, z2, torch.randint(0, 3, (b,), generator=g)


@pytest.mark.parametrize(("beta", "w_h", "w_g"), [(1.0, 2.0, 0.5), (0.5, 0.0, 1.5), (0.0, 1.0, 1.0)])
def test_sparse_kernel_matches_brute_force(beta, w_h, w_g):
    z1, z2, _ = _views(9, seed=1)
    cfg = HexConfig(**PAPER, beta=beta, local_weight=w_h, global_weight=w_g, warmup_epochs=0, quantile=0.7)
    out = HEXLoss(cfg, max_epochs=10, kernel="sparse").pairs(z1, z2, epoch=0)
    ref = _brute(z1, z2, cfg, _h_from_eps(z1, z2, out.terms["hex/epsilon"].item()))
    assert out.loss.item() == pytest.approx(ref.item(), abs=1e-10)
    for a, r in zip(torch.autograd.grad(out.loss, (z1, z2)), torch.autograd.grad(ref, (z1, z2)), strict=True):
        assert torch.allclose(a, r, atol=1e-10)


@pytest.mark.parametrize("variant", ["decomposed", "released"])
@pytest.mark.parametrize(("b", "chunk_rows"), [(700, None), (301, 37)])  # 602 columns: blocks padded at the end
def test_sparse_kernel_equals_dense_kernel_on_wide_rows(b, chunk_rows, variant):
    z1, z2, labels = _clustered(b, 16, seed=b)
    cfg = HexConfig(**{**PAPER, "variant": variant}, warmup_epochs=0, quantile=0.99, beta=2.0, local_weight=0.5)
    res = {}
    for kernel in ("dense", "sparse"):
        out = HEXLoss(cfg, 10, kernel=kernel, chunk_rows=chunk_rows).pairs(z1, z2, epoch=0, labels=labels)
        res[kernel] = (out, torch.autograd.grad(out.loss, (z1, z2)))
    (dense, g_dense), (sparse, g_sparse) = res["dense"], res["sparse"]
    assert sparse.terms["hex/h_size"].item() > 1.0
    for key, value in dense.terms.items():
        assert sparse.terms[key].item() == pytest.approx(value.item(), abs=1e-10), key
    for a, r in zip(g_sparse, g_dense, strict=True):
        assert torch.allclose(a, r, atol=1e-12)


def test_sparse_kernel_queue_layout_and_epsilon_estimate_rerun(monkeypatch):
    import hexray.losses._sparse_hex as sparse_hex

    g = torch.Generator().manual_seed(11)
    a = F.normalize(torch.randn(200, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    c = F.normalize(torch.randn(1000, 8, generator=g, dtype=torch.float64), dim=1)
    pos = torch.randint(0, 1000, (200,), generator=g)
    cfg = HexConfig(**PAPER, warmup_epochs=0, quantile=0.99, beta=1.0)
    dense = HEXLoss(cfg, 10, kernel="dense")(a, c, pos, epoch=0)
    ref = torch.autograd.grad(dense.loss, a)[0]
    for se in (4.0, -50.0):  # -50: ε̂ far above ε, so the scan must rerun with ε itself
        monkeypatch.setattr(sparse_hex, "_SAMPLE_ROWS", 16)
        monkeypatch.setattr(sparse_hex, "_SAMPLE_SE", se)
        out = HEXLoss(cfg, 10, kernel="sparse")(a, c, pos, epoch=0)
        assert out.loss.item() == pytest.approx(dense.loss.item(), abs=1e-12)
        assert out.terms["hex/epsilon"].item() == pytest.approx(dense.terms["hex/epsilon"].item(), abs=1e-12)
        assert out.terms["hex/h_size"].item() == dense.terms["hex/h_size"].item()
        assert torch.allclose(torch.autograd.grad(out.loss, a)[0], ref, atol=1e-12)


def test_sparse_kernel_gradients_reach_both_factors():
    # the sparse kernel differentiates through sim = anchors @ candidatesᵀ itself: both sides need their gradient
    g = torch.Generator().manual_seed(13)
    a = F.normalize(torch.randn(150, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    c = F.normalize(torch.randn(900, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    pos = torch.randint(0, 900, (150,), generator=g)
    self_idx = (pos + 1) % 900
    cfg = HexConfig(**PAPER, warmup_epochs=0, quantile=0.99, beta=0.5, local_weight=2.0)
    res = {}
    for kernel in ("dense", "sparse"):
        out = HEXLoss(cfg, 10, kernel=kernel, chunk_rows=40)(a, c, pos, self_idx, epoch=0)
        res[kernel] = (out.loss, *torch.autograd.grad(out.loss * 3.0, (a, c)))
    for x, y in zip(res["sparse"], res["dense"], strict=True):
        assert torch.allclose(x, y, atol=1e-12, rtol=0)


def test_sparse_kernel_bf16_autocast_matches_dense():
    z1, z2, _ = _clustered(300, 16, seed=12, dtype=torch.float32)
    cfg = HexConfig(**PAPER, warmup_epochs=0, quantile=0.99)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dense = HEXLoss(cfg, 10, kernel="dense").pairs(z1, z2, epoch=0)
        sparse = HEXLoss(cfg, 10, kernel="sparse").pairs(z1, z2, epoch=0)
    assert sparse.loss.item() == pytest.approx(dense.loss.item(), abs=1e-5)
    assert sparse.terms["hex/h_size"].item() == dense.terms["hex/h_size"].item()
    g_d = torch.autograd.grad(dense.loss, (z1, z2))
    g_s = torch.autograd.grad(sparse.loss, (z1, z2))
    for a, r in zip(g_s, g_d, strict=True):
        assert torch.allclose(a, r, rtol=2e-2, atol=1e-4)  # bf16 ∂L/∂s: rounding may differ by an ulp


def test_kernel_choice_is_validated():
    with pytest.raises(ValueError, match="kernel"):
        HEXLoss(HexConfig(**PAPER), 10, kernel="fast")
    with pytest.raises(ValueError, match="kernel='sparse'"):
        HEXLoss(HexConfig(**PAPER, threshold="step"), 10, kernel="sparse")
