"""Hierarchy metrics: effective rank bounds, local vs global rank, similarity histogram, H(i) statistics."""

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
