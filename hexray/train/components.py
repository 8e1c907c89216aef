"""Per-worker construction of what the loop trains: method + online probe, optimizer, schedule, fast path.

Kept apart from the loop so the same pieces build identically on a fresh start and on a restore.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hexray.train.optim import build_optimizer, parameter_groups, warmup_cosine_scheduler
from hexray.train.probes import OnlineProbe


@dataclass
class FastPath:
    """Resolved `fast` switches for this worker's device (see `resolve_fast_path` for what `auto` picks).

    amp: None, "bf16" (autocast, no scaling needed) or "fp16" (autocast + dynamic loss scaling by `grad_scaler`).
    """

    amp: str | None
    channels_last: bool
    compile: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type=device.type,
                                  dtype=torch.float16 if self.amp == "fp16" else torch.bfloat16)
        return contextlib.nullcontext()

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A GradScaler for fp16 (keeps small fp16 gradients from flushing to 0); a pass-through otherwise."""
        return torch.amp.GradScaler(device.type, enabled=self.amp == "fp16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions and matmuls natively (AVX512-BF16 or AMX, through oneDNN): there
    bf16 autocast made a convnet's training step ~1.7× faster than float32; without it bf16 is emulated, slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_amp_note(fast: Any, use_gpu: bool, native_bf16: bool) -> str | None:
    """A line for the console when a CPU run asks for bf16 that this CPU would only emulate (say how to undo it)."""
    if use_gpu or fast.amp != "bf16" or native_bf16:
        return None
    return ("fast.amp=bf16 on a CPU without native bf16 (AVX512-BF16/AMX): autocast is emulated and slower than "
            "float32 here; add --set fast.amp=off")


def resolve_fast_path(fast: Any, device: torch.device, native_bf16: bool | None = None) -> FastPath:
    """`auto`: bf16 autocast on a GPU, and on a CPU that runs bf16 natively (`cpu_has_native_bf16`, or
    `native_bf16` when given); channels_last on GPU and CPU (oneDNN's convolutions prefer NHWC too: ~1.2× on the
    2-core convnet step in float32); compile only on GPU. Explicit values win."""
    on_gpu, on_cpu = device.type == "cuda", device.type == "cpu"
    if fast.amp == "auto":
        native = on_cpu and (cpu_has_native_bf16() if native_bf16 is None else native_bf16)
        amp = "bf16" if on_gpu or native else None
    else:
        amp = fast.amp if fast.amp in ("bf16", "fp16") else None
    return FastPath(
        amp=amp,
        channels_last=fast.channels_last == "on" or (fast.channels_last == "auto" and (on_gpu or on_cpu)),
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

    def forward(self, views, label, superclass, *, epoch: int, use_superclass: bool):  # noqa: ANN001
        """`views`: the two global crops, then any local crops the method declared."""
        out = self.method(*views, epoch=epoch, superclass=superclass if use_superclass else None, label=label)
        probe_loss = None
        if self.probe is not None and out.features is not None:
            probe_loss = self.probe(out.features, label, superclass)
        return out, probe_loss


def optimizer_steps_per_epoch(batches_per_epoch: int, accumulate_steps: int) -> int:
    """Optimizer steps in an epoch of `batches_per_epoch` micro-batches: one per `accumulate_steps`, and one for a
    shorter remainder at the epoch's end (as Lightning, which the reference runs on)."""
    return max(1, -(-batches_per_epoch // accumulate_steps))


def build_optimization(module: TrainModule, cfg: Any, steps_per_epoch: int, world_size: int):  # noqa: ANN201
    """(optimizer, scheduler, base_lr). lr = optim.lr × global batch / 256; the probe trains at probe.online_lr
    without weight decay or LARS adaptation; both follow the same warm-up + cosine multiplier, which steps once
    per optimizer step (`steps_per_epoch` counts micro-batches; see `optimizer_steps_per_epoch`)."""
    o = cfg.optim
    base_lr = o.lr * cfg.data.batch_size / 256
    groups = parameter_groups(module.method, o.weight_decay, o.exclude_bias_and_norm)
    if module.probe is not None:
        groups.append({"params": list(module.probe.parameters()), "weight_decay": 0.0, "lars_exclude": True,
                       "lr": cfg.probe.online_lr})
    optimizer = build_optimizer(o.name, groups, lr=base_lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                eta=o.lars_eta, clip_lr=o.clip_lr, fused=cfg.fast.fused_optimizer)
    per_epoch = optimizer_steps_per_epoch(steps_per_epoch, o.accumulate_steps)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=int(o.warmup_epochs * per_epoch),
                                        total_steps=max(1, per_epoch * cfg.run.epochs), min_ratio=o.min_lr_ratio)
    return optimizer, scheduler, base_lr


class OptimizerStepper:
    """One optimizer step per `accumulate` micro-batches: scaled backward, optional gradient clipping, the step,
    the schedule. The loop and the tests share it, so "k steps of B equal one step of k·B" is tested on this code.

    Each micro-batch's loss is divided by `accumulate` (gradients average over the group, as Lightning does for
    the reference); the scheduler advances once per optimizer step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any, *, accumulate: int = 1,
                 scaler: torch.amp.GradScaler | None = None, grad_clip: float | None = None,
                 clip_params: Any = None) -> None:
        self.optimizer, self.scheduler, self.accumulate = optimizer, scheduler, accumulate
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler("cpu", enabled=False)
        self.grad_clip, self.clip_params = grad_clip, list(clip_params) if clip_params is not None else []

    def steps_after(self, index: int, batches_per_epoch: int) -> bool:
        """Whether micro-batch `index` (0-based, within its epoch) closes an accumulation group."""
        return (index + 1) % self.accumulate == 0 or index + 1 == batches_per_epoch

    pending = 0  # micro-batches backpropagated since the last optimizer step

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss / self.accumulate).backward()
        self.pending += 1

    def step(self) -> None:
        self.pending = 0
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.clip_params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # fp16: a step GradScaler skipped (inf gradients) still moves the schedule,
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")  # as
            self.scheduler.step()  # the reference does; PyTorch warns about that order once


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
    """Everything a restart needs (the `state.pt` layout of `hexray.checkpoint`). The method's state dict
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
