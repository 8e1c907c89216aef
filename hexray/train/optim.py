"""Optimizers (LARS, SGD, AdamW) with bias/norm exclusion, and the warm-up + cosine learning-rate schedule.

LARS (You et al., 2017): each weight's update is scaled by the trust ratio η·‖w‖ / (‖∇w‖ + wd·‖w‖), so one lr
works for huge batches; the reference's `clip_lr` caps that ratio at the lr (η = 0.02). With η = 0.001 and no
clipping, small models here barely moved from their initialization (design/HEX.md, "Measured caution").
Biases and normalisation parameters get neither weight decay nor the LARS adaptation (SimCLR/BYOL practice;
design/HEX.md: "no wd/LARS on bias and norm").
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZERS = ("lars", "sgd", "adamw")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling, as the HEX reference code (solo-learn) runs it.

    Per adapted parameter p with gradient g (both norms > 0):
        r = η‖p‖ / (‖g‖ + wd‖p‖ + ε);   with `clip_lr`: r ← min(r / lr, 1);   g ← (g + wd·p)·r
    then v ← μ·v + g; p ← p − lr·v. With clipping the layer's step size is min(η‖p‖/(‖g‖ + wd‖p‖), lr): LARS
    only ever slows a layer down. Groups with `lars_exclude=True` (biases, norms) skip weight decay and the ratio.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.02, clip_lr: bool = True, eps: float = 1e-8) -> None:
        if lr <= 0 or eta <= 0 or weight_decay < 0 or not 0 <= momentum < 1:
            raise ValueError(f"invalid LARS settings lr={lr}, momentum={momentum}, wd={weight_decay}, eta={eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr, eps=eps,
                        lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, lr = group["weight_decay"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["lars_exclude"]:
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    ratio = group["eta"] * p_norm / (g_norm + wd * p_norm + group["eps"])
                    if group["clip_lr"]:
                        ratio = torch.clamp(ratio / lr, max=1.0)
                    ratio = torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
                    grad = grad.add(p, alpha=wd) if wd else grad
                    grad = grad.mul(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-lr)
        return loss


def is_bias_or_norm(name: str, param: nn.Parameter) -> bool:
    """1-D parameters are biases or norm scales/shifts (BatchNorm, LayerNorm, GroupNorm): excluded from wd/LARS."""
    return param.ndim <= 1 or name.endswith(".bias")


def parameter_groups(model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool) -> list[dict]:
    """Two groups: regular weights (decayed, LARS-adapted) and biases/norms (no decay, `lars_exclude`)."""
    regular, excluded = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (excluded if exclude_bias_and_norm and is_bias_or_norm(name, param) else regular).append(param)
    groups = [{"params": regular, "weight_decay": weight_decay, "lars_exclude": False}]
    if excluded:
        groups.append({"params": excluded, "weight_decay": 0.0, "lars_exclude": True})
    return groups


def build_optimizer(name: str, groups: list[dict], *, lr: float, momentum: float, weight_decay: float,
                    eta: float = 0.02, clip_lr: bool = True, fused: bool = False) -> torch.optim.Optimizer:
    """`lars` | `sgd` | `adamw` over `groups` (from `parameter_groups`; extra groups may set their own lr)."""
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr)
    plain = [{k: v for k, v in g.items() if k != "lars_exclude"} for g in groups]
    extra = {"foreach": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(plain, lr=lr, momentum=momentum, weight_decay=weight_decay, **extra)
    if name == "adamw":
        return torch.optim.AdamW(plain, lr=lr, weight_decay=weight_decay, **extra)
    raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got {name!r}")


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """lr multiplier: linear from 1/warmup_steps to 1 over `warmup_steps`, then cosine down to `min_ratio`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                            min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimizer step; its state_dict (last_epoch) is checkpointed with the run."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio),
    )
