"""Per-worker construction of what the loop trains: method + online probe, optimizer, schedule, fast path.

Kept apart from the loop so the same pieces build identically on a fresh start and on a restore.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hexray.train.optim import build_optimizer, parameter_groups, warmup_cosine_scheduler
from hexray.train.probes import OnlineProbe


@dataclass
class FastPath:
    """Resolved `fast` switches for this worker's device (`auto` = on for CUDA, off for CPU)."""

    amp: bool
    channels_last: bool
    compile: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def resolve_fast_path(fast: Any, device: torch.device) -> FastPath:
    on_gpu = device.type == "cuda"
    return FastPath(
        amp=fast.amp == "bf16" or (fast.amp == "auto" and on_gpu),
        channels_last=fast.channels_last == "on" or (fast.channels_last == "auto" and on_gpu),
        compile=fast.compile == "on" or (fast.compile == "auto" and on_gpu),
    )


class TrainModule(nn.Module):
    """The SSL method and its online probe as one module, so DDP keeps both in sync across ranks.

    The probe reads detached features, so its gradients never reach the backbone.
    """

    def __init__(self, method: nn.Module, probe: OnlineProbe | None) -> None:
        super().__init__()
        self.method = method
        self.probe = probe

    def forward(self, view1, view2, label, superclass, *, epoch: int, use_superclass: bool):  # noqa: ANN001
        out = self.method(view1, view2, epoch=epoch, superclass=superclass if use_superclass else None)
        probe_loss = None
        if self.probe is not None and out.features is not None:
            probe_loss = self.probe(out.features, label, superclass)
        return out, probe_loss


def build_optimization(module: TrainModule, cfg: Any, steps_per_epoch: int, world_size: int):  # noqa: ANN201
    """(optimizer, scheduler, base_lr). lr = optim.lr × global batch / 256; the probe trains at probe.online_lr
    without weight decay or LARS adaptation; both follow the same warm-up + cosine multiplier."""
    o = cfg.optim
    base_lr = o.lr * cfg.data.batch_size / 256
    groups = parameter_groups(module.method, o.weight_decay, o.exclude_bias_and_norm)
    if module.probe is not None:
        groups.append({"params": list(module.probe.parameters()), "weight_decay": 0.0, "lars_exclude": True,
                       "lr": cfg.probe.online_lr})
    optimizer = build_optimizer(o.name, groups, lr=base_lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                eta=o.lars_eta, fused=cfg.fast.fused_optimizer)
    total = max(1, steps_per_epoch * cfg.run.epochs)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=int(o.warmup_epochs * steps_per_epoch),
                                        total_steps=total, min_ratio=o.min_lr_ratio)
    return optimizer, scheduler, base_lr


def state_digest(obj: Any) -> float:
    """Sum of |x| over every floating tensor in a (nested) state dict: a cheap fingerprint that shows a restored
    optimizer / queue is the checkpointed one and not a fresh (empty or random) one."""
    if isinstance(obj, torch.Tensor):
        return float(obj.detach().double().abs().sum()) if obj.is_floating_point() else 0.0
    if isinstance(obj, dict):
        return sum(state_digest(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_digest(v) for v in obj)
    return 0.0


def training_state(module: TrainModule, optimizer: Any, scheduler: Any, *, epoch: int, step: int, cfg_dict: dict,
                   nan_skips: int) -> dict[str, Any]:
    """Everything a restart needs (the `state.pt` layout of `hexray.train.checkpoint`). The method's state dict
    carries its target network and queue buffers."""
    return {"method": module.method.state_dict(),
            "probe": module.probe.state_dict() if module.probe is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
            "step": step, "config": cfg_dict, "nan_skips": nan_skips, "rng": torch.get_rng_state()}


def restore_training_state(state: dict[str, Any], module: TrainModule, optimizer: Any, scheduler: Any) -> dict:
    """Load `state` into freshly built objects; returns the `restored_*` metrics that prove what was loaded
    (epoch, step, scheduler position, fingerprints of the optimizer state and of the method incl. buffers)."""
    module.method.load_state_dict(state["method"])
    if module.probe is not None and state.get("probe") is not None:
        module.probe.load_state_dict(state["probe"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:
        torch.set_rng_state(state["rng"])
    return {"restored_epoch": int(state["epoch"]), "restored_step": int(state["step"]),
            "restored/optimizer_digest": state_digest(optimizer.state_dict()["state"]),
            "restored/scheduler_step": scheduler.last_epoch,
            "restored/method_digest": state_digest(module.method.state_dict())}
