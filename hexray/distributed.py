"""Cross-worker gathers for global-batch losses. The only module of the core that calls torch.distributed.

Why a gather *with gradient*: contrastive negatives, HEX's threshold ε and VICReg/Barlow statistics should see
the global batch, and each worker's embeddings must receive the gradient that the other workers' losses put on
them. Every function here is the identity (or 0 / 1) when torch.distributed is not initialised.

Gradient scaling, stated once: let worker r compute a loss L_r from the gathered tensor. The backward of
`gather_with_grad` all-reduces (sums) the incoming gradient and returns this worker's slice, so worker r's local
embeddings get Σ_r' ∂L_r'/∂x_r. DDP then *averages* parameter gradients over the W workers, which gives
∂/∂θ [(1/W) Σ_r L_r]. Hence:
  - if every worker computes the same global loss L (hexray's contrastive methods do), the DDP gradient is ∂L/∂θ,
    exactly the single-process gradient on the concatenated batch;
  - if every worker computes its share so that mean_r L_r is the global loss (local anchors, or a per-sample loss
    averaged over the local batch), the DDP gradient is again the single-process gradient.
No extra factor of W is needed in either case.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    """True when a torch.distributed process group is up (then the gathers communicate)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This worker's global rank; 0 without torch.distributed."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of workers; 1 without torch.distributed."""
    return dist.get_world_size() if is_initialized() else 1


def _sizes(x: torch.Tensor) -> list[int]:
    """First-dim sizes on every rank (workers may hold uneven last batches)."""
    local = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    out = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(out, local)
    return [int(s) for s in torch.cat(out).tolist()]


def _all_gather_cat(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    x = x.contiguous()
    sizes = _sizes(x)
    biggest = max(sizes)
    if biggest != x.shape[0]:
        pad = x.new_zeros((biggest - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad])
    out = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(out, x)
    return torch.cat([t[:s] for t, s in zip(out, sizes, strict=True)]), sizes


class _GatherWithGrad(torch.autograd.Function):
    """Forward: concatenation of x over ranks. Backward: sum of the gradients over ranks, this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        gathered, sizes = _all_gather_cat(x)
        start = sum(sizes[: rank()])
        ctx.slice = (start, start + x.shape[0])
        return gathered

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start, end = ctx.slice
        return grad[start:end]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (N_r × ...) over ranks in rank order; gradients flow back to each rank's own rows.

    See the module docstring for why no rescaling is needed under DDP's gradient averaging.
    """
    if not is_initialized() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a detached `x` over ranks (labels, queue entries, target-network keys)."""
    if not is_initialized() or world_size() == 1:
        return x.detach()
    with torch.no_grad():
        return _all_gather_cat(x.detach())[0]
