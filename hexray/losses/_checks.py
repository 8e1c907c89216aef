"""Edge validation shared by the losses: shapes always (free), values (norms, index ranges) on request (one sync)."""

from __future__ import annotations

import torch


def check_embeddings(name: str, x: torch.Tensor) -> None:
    """Raise ValueError naming `name` unless `x` is a 2-D floating tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a 2-D floating tensor (N×d), got {getattr(x, 'shape', type(x))}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")


def check_view_pair(z1: torch.Tensor, z2: torch.Tensor) -> None:
    """Two views' embeddings: each a non-empty 2-D floating tensor, both of the same shape."""
    check_embeddings("z1", z1)
    check_embeddings("z2", z2)
    if z1.shape != z2.shape:
        raise ValueError(f"z2 must have the shape of z1 {tuple(z1.shape)}, got {tuple(z2.shape)}")


def check_contrastive_shapes(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor | None,
) -> None:
    """Validate the general InfoNCE layout from metadata only (no host sync: always on, also on the hot path)."""
    check_embeddings("anchors", anchors)
    check_embeddings("candidates", candidates)
    n, m = anchors.shape[0], candidates.shape[0]
    if candidates.shape[1] != anchors.shape[1]:
        raise ValueError(f"candidates must have dim {anchors.shape[1]} like anchors, got {candidates.shape[1]}")
    for name, idx in (("positive_index", positive_index), ("self_index", self_index)):
        if idx is None:
            continue
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or tuple(idx.shape) != (n,):
            raise ValueError(f"{name} must be an int64 tensor of shape ({n},), got {getattr(idx, 'shape', idx)}")
        if idx.device != anchors.device:
            raise ValueError(f"{name} must be on {anchors.device} like anchors, got {idx.device}")
    if m - 1 - (self_index is not None) < 1:
        raise ValueError(f"candidates must leave every anchor at least one negative, got only {m} candidates")


def check_contrastive_values(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor | None,
) -> None:
    """Value checks (unit norms, index ranges): one batched `.tolist()` host sync, so callers on the hot path skip it.

    Norms are checked to be 1 within a tolerance that depends on the dtype (bf16 rounds to ~3 digits).
    """
    m = candidates.shape[0]
    stats = [
        (anchors.detach().float().pow(2).sum(1) - 1).abs().max(),
        (candidates.detach().float().pow(2).sum(1) - 1).abs().max(),
        positive_index.min().float(), positive_index.max().float(),
    ]
    if self_index is not None:
        stats += [self_index.min().float(), self_index.max().float(), (self_index == positive_index).any().float()]
    vals = torch.stack(stats).tolist()
    tol = 5e-2 if anchors.dtype in (torch.bfloat16, torch.float16) else 1e-3
    for name, err in (("anchors", vals[0]), ("candidates", vals[1])):
        if not err <= tol:
            raise ValueError(f"{name} must be L2-normalised rows (max |‖x‖²−1| = {err:.3g} > {tol})")
    if not (0 <= vals[2] and vals[3] < m):
        raise ValueError(f"positive_index must lie in [0, {m}), got range [{vals[2]:.0f}, {vals[3]:.0f}]")
    if self_index is not None:
        if not (0 <= vals[4] and vals[5] < m):
            raise ValueError(f"self_index must lie in [0, {m}), got range [{vals[4]:.0f}, {vals[5]:.0f}]")
        if vals[6]:
            raise ValueError("self_index must differ from positive_index in every row")


def check_labels(name: str, labels: torch.Tensor | None, n: int) -> None:
    """Labels are optional int64 vectors of length n (−1 = unknown)."""
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
        raise ValueError(f"{name} must be an int64 tensor of shape ({n},), got {getattr(labels, 'shape', labels)}")


def pair_indices(b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent layout over cat(z1, z2): positive of row i is i±B, self is i."""
    idx = torch.arange(2 * b, device=device)
    return (idx + b) % (2 * b), idx


def at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """Promote half/bf16 to float32 for softmax/log-sum-exp math; keep float64 as is (exactness tests)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
