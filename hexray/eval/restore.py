"""Frozen models from a run dir's checkpoints, through the train layer's contract
(`hexray.checkpoint.restore_method`, `load_state`, docs/interfaces.md).

Only `SSLMethod.backbone`, `SSLMethod.forward` and the SEM head's class are relied on: SEM logits are captured
with a forward hook on the online `SEMHead`, so any method's layout (projector before SEM, SEM inside a
Sequential) works unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hexray.errors import DataError
from hexray.eval.offline import EvalModel
from hexray.eval.runs import require_checkpoints, require_run_dir
from hexray.storage import StoragePath

_TARGET_WORDS = ("target", "momentum", "teacher", "ema")


@dataclass
class RestoredRun:
    """A trained method (CPU, eval mode), its TrainConfig, its completed epochs and the checkpoint it came from."""

    method: nn.Module
    config: Any
    epoch: int
    checkpoint: StoragePath


def restore_run(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> RestoredRun:
    """The method at `checkpoint` (a checkpoint dir, or its name inside the run dir), default the latest."""
    from hexray.checkpoint import restore_method

    run = require_run_dir(run_dir)
    if checkpoint is None:
        ckpt = require_checkpoints(run)[-1]
    else:
        ckpt = StoragePath(checkpoint)
        if not ckpt.exists() and "://" not in str(checkpoint) and (run / str(checkpoint)).exists():
            ckpt = run / str(checkpoint)
        if not (ckpt / "state.pt").is_file():
            raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} has no state.pt (looked in {str(ckpt)!r})")
    method, cfg, epoch = restore_method(str(ckpt))
    method.eval()
    return RestoredRun(method=method, config=cfg, epoch=int(epoch), checkpoint=ckpt)


def iter_checkpoint_backbones(method: nn.Module, checkpoints: list[StoragePath]) -> Iterator[tuple[int, nn.Module]]:
    """(epoch, backbone) for each checkpoint, loading each state into the same `method` in turn (one in memory)."""
    from hexray.checkpoint import load_state

    for ckpt in checkpoints:
        state = load_state(str(ckpt))
        method.load_state_dict(state["method"])
        method.eval()
        yield int(state["epoch"]), method.backbone


def _online_sem_head(method: nn.Module) -> nn.Module | None:
    heads = [(name, m) for name, m in method.named_modules() if type(m).__name__ == "SEMHead"]
    online = [m for name, m in heads if not any(w in name.lower() for w in _TARGET_WORDS)]
    return (online or [m for _, m in heads] or [None])[0]


def sem_logits_fn(method: nn.Module, sem_cfg: Any) -> Callable[[Tensor], Tensor]:
    """images → SEM logits (B, L, V) before the simplex softmax.

    Uses `SEMHead.logits(x)` when the head has it; otherwise recovers them from the head's output
    p = softmax(z/τ): τ·log p = z − τ·logsumexp(z/τ), which differs from z by a per-simplex constant, and softmax
    ignores such constants — so softmax(τ·log p / τ_down) = softmax(z / τ_down) exactly.
    """
    head = _online_sem_head(method)
    if head is None:
        raise DataError("cfg.sem.enabled is true but the restored method has no SEMHead module")
    L, V = int(sem_cfg.num_simplices), int(sem_cfg.simplex_dim)

    def logits(images: Tensor) -> Tensor:
        captured: dict[str, Any] = {}

        def hook(_module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
            if "x" not in captured:
                captured["x"] = args[0] if args else kwargs.get("x")
                captured["branch"] = kwargs.get("branch", args[1] if len(args) > 1 else "online")
                captured["out"] = output

        handle = head.register_forward_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                method(images, images, epoch=0)
        finally:
            handle.remove()
        if "x" not in captured:
            raise DataError("the method's forward never called its SEMHead: cannot read SEM embeddings")
        if hasattr(head, "logits"):
            z = head.logits(captured["x"])
        else:
            tau = float(sem_cfg.tau_online if captured["branch"] == "online" else sem_cfg.tau_target)
            z = tau * captured["out"].float().clamp_min(1e-30).log()
        return z.reshape(z.shape[0], L, V)

    return logits


def eval_model(restored: RestoredRun) -> EvalModel:
    """The frozen backbone, plus SEM logits when the run trained with SEM (cfg.sem.enabled)."""
    sem_cfg = getattr(restored.config, "sem", None)
    sem = sem_logits_fn(restored.method, sem_cfg) if sem_cfg is not None and sem_cfg.enabled else None
    return EvalModel(backbone=restored.method.backbone, sem_logits=sem)


def projection_fn(method: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """The online projector's output z (what a contrastive loss compares), or None for a method without a
    projector (`SSLMethod.project_online`)."""
    project = getattr(method, "project_online", None)
    if project is None or getattr(method, "projector", None) is None:
        return None
    return lambda x: project(x)[1]


def build_run_threshold(cfg: Any) -> Any | None:
    """The run's HEX threshold (hex section, run.epochs), applied to frozen embeddings even for base runs, so
    base and HEX runs are measured with the same ruler. None when the losses layer cannot build it."""
    try:
        from hexray.losses.thresholds import build_threshold
    except ImportError:
        return None
    return build_threshold(cfg.hex, int(cfg.run.epochs))
