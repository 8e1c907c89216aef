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


def gather_to_first(x: torch.Tensor) -> torch.Tensor | None:
    """Concatenate a detached `x` (N_r × ..., uneven N_r allowed) over ranks in rank order on rank 0 only;
    other ranks get None. For evaluation features: only rank 0 scores them, so only it holds the whole set."""
    if not is_initialized() or world_size() == 1:
        return x.detach()
    with torch.no_grad():
        x = x.detach().contiguous()
        sizes = _sizes(x)
        biggest = max(sizes)
        if biggest != x.shape[0]:
            x = torch.cat([x, x.new_zeros((biggest - x.shape[0], *x.shape[1:]))])
        out = [torch.empty_like(x) for _ in sizes] if rank() == 0 else None
        dist.gather(x, out, dst=0)
        return torch.cat([t[:s] for t, s in zip(out, sizes, strict=True)]) if out is not None else None


def sum_over_workers(x: torch.Tensor) -> torch.Tensor:
    """Σ over ranks of a detached tensor, on every rank (epoch metrics: sums and counts of all workers)."""
    if not is_initialized() or world_size() == 1:
        return x.detach()
    out = x.detach().contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class _AllReduceSum(torch.autograd.Function):
    """Forward: Σ_r x_r on every rank. Backward: Σ_r of the incoming gradients (each rank's loss used the sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CrossWorkerBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any device (gloo on CPU included).

    Why not torch.nn.SyncBatchNorm: it accepts CUDA tensors only, so CPU clusters (and the 2-worker gloo tests)
    could not synchronise BN at all. Per channel, the sums Σx, Σx² and the count are all-reduced with gradient;
    mean = Σx/N, var = Σx²/N − mean² (normalisation), running_var gets the unbiased N/(N−1) form as in BatchNorm.
    Same parameter and buffer names as BatchNorm, so checkpoints load into either. On CUDA, hexray uses
    torch.nn.SyncBatchNorm instead (see `convert_sync_batchnorm`).
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and is_initialized() and world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = x.new_full((1,), x.numel() / x.shape[1])
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        total = _AllReduceSum.apply(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count.to(xf.dtype)]))
        c = x.shape[1]
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: torch.nn.Module, device_type: str) -> torch.nn.Module:
    """Every BatchNorm of `module` normalises with global-batch statistics: torch.nn.SyncBatchNorm on CUDA,
    `CrossWorkerBatchNorm` elsewhere. The weights stay the same Parameter objects and the running statistics the
    same buffers."""
    if device_type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_cross_worker(module)


def _to_cross_worker(module: torch.nn.Module) -> torch.nn.Module:
    out = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, CrossWorkerBatchNorm):
        like = module.weight if module.affine else module.running_mean
        factory = {} if like is None else {"device": like.device, "dtype": like.dtype}
        out = CrossWorkerBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats, **factory)
        if module.affine:  # the same Parameter objects: an optimizer built before the conversion keeps working
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _to_cross_worker(child))
    return out
