"""Hierarchy metrics: effective rank bounds, local vs global rank, similarity histogram, H(i) statistics, where the
loss denominator's mass sits."""

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch

from hexray.eval.hierarchy import (
    cosine_similarity_histogram,
    effective_rank,
    hierarchy_set_statistics,
    load_threshold,
    local_global_rank,
    negative_mass_shares,
)


def test_effective_rank_of_identity_like_matrix_is_d():
    assert effective_rank(torch.eye(16)) == pytest.approx(16.0, rel=1e-6)
    assert effective_rank(3 * torch.cat([torch.eye(8)] * 5)) == pytest.approx(8.0, rel=1e-6)  # tall, equal σ


def test_effective_rank_of_rank_one_matrix_is_one():
    u, v = torch.randn(100, 1), torch.randn(1, 32)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-3)


def test_effective_rank_matches_entropy_formula():
    x = torch.randn(50, 10, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(x.double())
    p = s / s.sum()
    assert effective_rank(x) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-6)
    with pytest.raises(ValueError, match="x"):
        effective_rank(torch.randn(5))


def test_local_rank_detects_within_class_collapse():
    # Each class collapses onto its own direction (rank 1 locally), classes span 8 directions globally.
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(8).repeat_interleave(30)
    x = torch.eye(8)[y] * (1 + torch.rand(240, 1, generator=gen))
    supers = y // 4
    r = local_global_rank(x, y, supers)
    assert r["rank/global"] > 7.5
    assert r["rank/class_mean"] == pytest.approx(1.0, abs=1e-3)
    assert 3.5 < r["rank/superclass_mean"] < 4.01
    assert "rank/superclass_mean" not in local_global_rank(x, y, torch.full_like(y, -1))


@pytest.mark.parametrize("n", [1, 2, 37, 300])
def test_histogram_counts_sum_to_number_of_pairs(n):
    x = torch.randn(n, 5)
    h = cosine_similarity_histogram(x, bins=20, max_samples=100)
    m = min(n, 100)
    assert int(h.counts.sum()) == m * (m - 1) // 2
    assert h.edges.shape == (21,) and h.edges[0] == -1 and h.edges[-1] == 1


def test_histogram_includes_exact_plus_minus_one_and_splits_by_label():
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])  # sims: 1, -1, -1
    h = cosine_similarity_histogram(x, labels=torch.tensor([0, 0, 1]), bins=4)
    assert h.counts.tolist() == [2, 0, 0, 1]
    assert h.same_label.tolist() == [0, 0, 0, 1] and h.different_label.tolist() == [2, 0, 0, 0]


def test_hierarchy_set_statistics_with_a_contract_threshold():
    # A fixed-ε threshold following the losses contract; two tight superclass clusters.
    def threshold(sim, negatives, epoch, labels_anchor=None, labels_candidates=None, classes=None):
        return SimpleNamespace(mask=(sim > 0.5) & negatives, epsilon=torch.tensor(0.5))

    gen = torch.Generator().manual_seed(0)
    supers = torch.arange(2).repeat_interleave(20)
    x = torch.eye(2)[supers] * 5 + 0.1 * torch.randn(40, 2, generator=gen)
    labels = torch.arange(4).repeat_interleave(10)
    stats = hierarchy_set_statistics(x, threshold, epoch=0, labels=labels, superclasses=supers)
    assert stats["hex/epsilon"] == pytest.approx(0.5)
    assert stats["hex/h_size"] == pytest.approx(19.0)
    assert stats["hex/purity_superclass"] == pytest.approx(1.0)
    assert stats["hex/purity_class"] == pytest.approx(9 / 19)


def test_load_threshold_skips_when_losses_lack_it_else_feeds_statistics():
    from hexray.losses.settings import HexConfig

    thr = load_threshold(HexConfig(threshold="superclass"), max_epochs=10)
    if importlib.util.find_spec("hexray.losses.thresholds") is None:
        assert thr is None
        return
    supers = torch.arange(2).repeat_interleave(10)
    stats = hierarchy_set_statistics(torch.randn(20, 4), thr, epoch=0, superclasses=supers)
    assert stats["hex/purity_superclass"] == pytest.approx(1.0)  # the oracle threshold picks the superclass


def _mass_shares_by_loops(z, labels, supers, tau):
    """Plain float64 loops over every anchor and negative: the reference for negative_mass_shares."""
    z = torch.nn.functional.normalize(z.double(), dim=1)
    n = len(labels)
    share = {"class": 0.0, "siblings": 0.0, "other": 0.0}
    for i in range(n):
        parts = {"class": 0.0, "siblings": 0.0, "other": 0.0}
        for j in range(n):
            if j == i:
                continue
            m = math.exp(float(z[i] @ z[j]) / tau)
            part = "class" if labels[j] == labels[i] else "siblings" if supers[j] == supers[i] else "other"
            parts[part] += m
        total = sum(parts.values())
        for k in share:
            share[k] += parts[k] / total / n
    return share


def test_negative_mass_shares_match_plain_loops_in_float64():
    # one batch holding every sample: the shares are means over all anchors, whatever the batch's order
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    labels = torch.arange(30) % 6
    supers = labels // 3  # 2 superclasses of 3 classes
    got = negative_mass_shares(z, labels, supers, temperature=0.2, batch_size=64, batches=1)
    want = _mass_shares_by_loops(z, labels, supers, 0.2)
    for k, v in want.items():
        assert got[f"denominator/share_{k}"] == pytest.approx(v, rel=1e-12, abs=1e-15)
    assert got["denominator/count_class"] == 4 and got["denominator/count_siblings"] == 10
    assert got["denominator/count_other"] == 15
    assert sum(got[f"denominator/share_{k}"] for k in want) == pytest.approx(1.0)
    ratio = (want["siblings"] / 10) / (want["other"] / 15)
    assert got["denominator/siblings_vs_other"] == pytest.approx(ratio, rel=1e-12)


def test_negative_mass_shares_see_siblings_only_when_the_embedding_groups_them():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    supers = labels // 2
    flat = torch.randn(4, 16, generator=gen)  # four unrelated class centres
    grouped = torch.randn(2, 16, generator=gen)[supers] * 2 + torch.randn(4, 16, generator=gen)[labels]
    for centres, near in ((flat[labels], False), (grouped, True)):
        z = centres + 0.3 * torch.randn(400, 16, generator=gen)
        got = negative_mass_shares(z, labels, supers, temperature=0.1, batch_size=128, batches=5)
        assert (got["denominator/siblings_vs_other"] > 3) == near, got
        assert got["denominator/share_class"] > got["denominator/share_other"]


def test_negative_mass_shares_reject_bad_input():
    z, y = torch.randn(8, 3), torch.arange(8) % 2
    with pytest.raises(ValueError, match="shape"):
        negative_mass_shares(z, y[:7], y[:7], temperature=0.1)
    with pytest.raises(ValueError, match="temperature > 0"):
        negative_mass_shares(z, y, y, temperature=0.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        negative_mass_shares(z, y, torch.full_like(y, -1), temperature=0.1)
