"""Hierarchy diagnostics of an embedding: local vs global dimensional collapse, the similarity distribution,
and how well a HEX threshold's H(i) follows the label hierarchy (design/HEX.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def effective_rank(x: Tensor, eps: float = 1e-12) -> float:
    """Roy & Vetterli (2007): erank = exp(H(p)), p_k = σ_k / Σ σ (singular values of the N×d matrix x).

    Lies in [1, min(N, d)]: d for an isotropic (identity-like) matrix, 1 for a rank-1 one. Computed from the
    eigenvalues of the d×d Gram matrix in float64 (σ_k² = λ_k), so a 60k×512 matrix costs one small eigvalsh.
    """
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (N, d), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must be non-empty, got shape {tuple(x.shape)}")
    x = x.detach().double()
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    sigma = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    total = sigma.sum()
    if total <= eps:
        raise ValueError("x is all zeros: effective rank undefined")
    p = sigma / total
    entropy = -(p * (p + eps).log()).sum()
    return float(entropy.exp())


def _mean_group_rank(x: Tensor, groups: Tensor, min_size: int) -> float:
    sizes = {g: int((groups == g).sum()) for g in groups.unique().tolist() if g >= 0}
    ranks = [effective_rank(x[groups == g]) for g, size in sizes.items() if size >= min_size]
    return float(sum(ranks) / len(ranks)) if ranks else float("nan")


def local_global_rank(
    features: Tensor,
    labels: Tensor,
    superclasses: Tensor | None = None,
    *,
    min_group_size: int = 2,
) -> dict[str, float]:
    """Effective rank globally and averaged within each class and each superclass.

    A high global but low within-class rank means classes spread over many directions while each collapses
    locally; the ratio is the local-vs-global collapse HEX targets. Groups smaller than `min_group_size` and
    label −1 (unknown) are skipped; a per-group rank is bounded by the group size.
    Keys: `rank/global`, `rank/class_mean`, `rank/superclass_mean` (when superclasses are known).
    """
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
    out = {
        "rank/global": effective_rank(features),
        "rank/class_mean": _mean_group_rank(features, labels.cpu().long(), min_group_size),
    }
    if superclasses is not None:
        if superclasses.shape != labels.shape:
            raise ValueError(f"superclasses must have shape {tuple(labels.shape)}, got {tuple(superclasses.shape)}")
        if (superclasses >= 0).any():
            out["rank/superclass_mean"] = _mean_group_rank(features, superclasses.cpu().long(), min_group_size)
    return out


def _subsample(n: int, max_samples: int, seed: int) -> Tensor:
    if n <= max_samples:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_samples].sort().values


@dataclass
class SimilarityHistogram:
    """Counts of pairwise cosine similarities over fixed bins on [−1, 1]; each pair i < j counted once."""

    edges: Tensor
    counts: Tensor
    same_label: Tensor | None = None
    different_label: Tensor | None = None


def cosine_similarity_histogram(
    features: Tensor,
    *,
    labels: Tensor | None = None,
    bins: int = 40,
    max_samples: int = 2000,
    seed: int = 0,
) -> SimilarityHistogram:
    """Histogram of cos(z_i, z_j) for all pairs i < j of (at most `max_samples`, seeded) rows.

    With `labels`, also split into same-label and different-label pairs: separated peaks mean the embedding
    encodes the labels; a single narrow peak near 1 is collapse. Counts sum to n(n−1)/2.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (N, d), got shape {tuple(features.shape)}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins!r}")
    if max_samples < 2:
        raise ValueError(f"max_samples must be >= 2, got {max_samples!r}")
    idx = _subsample(features.shape[0], max_samples, seed)
    z = F.normalize(features.detach().cpu().float()[idx], dim=1)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    sims = (z @ z.T)[iu[0], iu[1]].clamp(-1.0, 1.0)
    edges = torch.linspace(-1.0, 1.0, bins + 1)

    def hist(values: Tensor) -> Tensor:
        return torch.histc(values, bins=bins, min=-1.0, max=1.0).long()

    result = SimilarityHistogram(edges=edges, counts=hist(sims))
    if labels is not None:
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
        y = labels.cpu()[idx]
        same = y[iu[0]] == y[iu[1]]
        result.same_label, result.different_label = hist(sims[same]), hist(sims[~same])
    return result


def load_threshold(cfg: Any, max_epochs: int) -> Any | None:
    """`hexray.losses.thresholds.build_threshold(cfg, max_epochs)`, or None when that module is not available."""
    try:
        from hexray.losses.thresholds import build_threshold
    except ImportError:
        return None
    return build_threshold(cfg, max_epochs)


def hierarchy_set_statistics(
    features: Tensor,
    threshold: Any,
    *,
    epoch: int,
    labels: Tensor | None = None,
    superclasses: Tensor | None = None,
    max_samples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Statistics of H(i) = threshold-selected negatives on a frozen embedding (every other sample a negative).

    `threshold` follows the losses contract: `threshold(sim, negatives, epoch, labels_anchor, labels_candidates,
    classes) -> ThresholdResult(mask, epsilon)` (superclasses, then the fine labels of both sides). Reports ε, mean
    |H(i)|, and the share of H(i) pairs with the anchor's class / superclass (how well the threshold finds the
    hierarchy; chance = that label's frequency).
    """
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (N, d), got shape {tuple(features.shape)}")
    idx = _subsample(features.shape[0], max_samples, seed)
    z = F.normalize(features.detach().cpu().float()[idx], dim=1)
    sim = z @ z.T
    negatives = ~torch.eye(z.shape[0], dtype=torch.bool)
    sup = superclasses.cpu().long()[idx] if superclasses is not None else None
    select = getattr(threshold, "threshold", threshold)  # a `.threshold` method or a plain callable
    cls = labels.cpu().long()[idx] if labels is not None else None
    result = select(sim, negatives, epoch, sup, sup, None if cls is None else (cls, cls))
    mask = result.mask & negatives
    h_size = mask.sum(dim=1).float()
    out = {"hex/epsilon": float(torch.as_tensor(result.epsilon).float().mean()), "hex/h_size": float(h_size.mean())}
    pairs = mask.sum()
    for name, group in (("class", labels), ("superclass", superclasses)):
        if group is None or pairs == 0:
            continue
        g = group.cpu().long()[idx]
        known = (g[:, None] >= 0) & (g[None, :] >= 0)
        same = (g[:, None] == g[None, :]) & known
        denom = (mask & known).sum()
        if denom > 0:
            out[f"hex/purity_{name}"] = float((mask & same).sum() / denom)
    return out


def negative_mass_shares(
    embeddings: Tensor,
    labels: Tensor,
    superclasses: Tensor,
    *,
    temperature: float,
    batch_size: int = 256,
    batches: int = 40,
    seed: int = 0,
) -> dict[str, float]:
    """Where an anchor's InfoNCE denominator mass sits, over its negatives: the anchor's own class, its sibling
    classes (same superclass, other class) and the other superclasses.

    What a HEX-style H(i) re-weights is mass, not a count: removing a set that carries little of Σ_j exp(s_ij/τ)
    changes the gradient little. Measured in the space the loss sees (projector outputs, cosine at the loss's τ),
    in random batches of `batch_size` like a training batch, every other row of the batch a negative. Besides the
    mean share of each part, `…/per_negative_*` divides each share by that part's mean count, and
    `denominator/siblings_vs_other` is the siblings' per-negative weight over the other superclasses': ~1 when the
    embedding does not place sibling classes nearer than unrelated ones. Samples with no superclass (< 0) are left
    out."""
    if embeddings.ndim != 2 or labels.shape != (embeddings.shape[0],) or superclasses.shape != labels.shape:
        raise ValueError(f"expected embeddings (N, d) with labels and superclasses of shape (N,), got "
                         f"{tuple(embeddings.shape)}, {tuple(labels.shape)}, {tuple(superclasses.shape)}")
    if temperature <= 0 or batch_size < 2 or batches < 1:
        raise ValueError(f"need temperature > 0, batch_size >= 2, batches >= 1; got {temperature}, {batch_size}, "
                         f"{batches}")
    known = superclasses.cpu() >= 0
    z = F.normalize(embeddings.detach().cpu().double()[known], dim=1)
    y, s = labels.cpu().long()[known], superclasses.cpu().long()[known]
    if z.shape[0] < 2:
        raise ValueError("need at least 2 samples with a superclass")
    gen = torch.Generator().manual_seed(seed)
    parts = ("class", "siblings", "other")
    share = dict.fromkeys(parts, 0.0)
    count = dict.fromkeys(parts, 0.0)
    for _ in range(batches):
        idx = torch.randperm(z.shape[0], generator=gen)[:batch_size]
        zb, yb, sb = z[idx], y[idx], s[idx]
        mass = torch.exp((zb @ zb.T - 1.0) / temperature)  # shifted by the largest possible cosine: no overflow
        negative = ~torch.eye(len(idx), dtype=torch.bool)
        same_class = (yb[:, None] == yb[None, :]) & negative
        same_super = (sb[:, None] == sb[None, :]) & negative
        masks = {"class": same_class, "siblings": same_super & ~same_class, "other": ~same_super & negative}
        total = (mass * negative).sum(dim=1)
        for part, m in masks.items():
            share[part] += float(((mass * m).sum(dim=1) / total).mean()) / batches
            count[part] += float(m.sum(dim=1).double().mean()) / batches
    out = {f"denominator/share_{p}": share[p] for p in parts}
    out.update({f"denominator/count_{p}": count[p] for p in parts})
    per = {p: share[p] / count[p] if count[p] > 0 else float("nan") for p in parts}
    out.update({f"denominator/per_negative_{p}": per[p] for p in parts})
    out["denominator/siblings_vs_other"] = per["siblings"] / per["other"] if per["other"] > 0 else float("nan")
    return out
