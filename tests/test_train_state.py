"""Checkpoint state round trip without Ray: after a few real steps, `training_state` → fresh objects →
`restore_training_state` reproduces the momentum encoder (MoCo), the queue (NNCLR), optimizer moments and the
scheduler position exactly, and the next step is identical to the uninterrupted one."""

from __future__ import annotations

import copy

import pytest
import torch

from hexray.config import config_to_dict, load_config
from hexray.methods.registry import build_method
from hexray.train.components import TrainModule, build_optimization, restore_training_state, training_state
from hexray.train.probes import OnlineProbe

TINY = ["backbone.width=4", "backbone.in_channels=1", "method.proj_hidden_dim=16", "method.proj_output_dim=8",
        "method.pred_hidden_dim=16", "method.queue_size=32", "data.batch_size=16", "hex.warmup_epochs=0"]


def _build(name: str):
    cfg = load_config(None, [*TINY, f"method.name={name}"])
    torch.manual_seed(0)
    method = build_method(cfg.method, cfg.backbone, cfg.hex, cfg.sem, max_epochs=cfg.run.epochs)
    module = TrainModule(method, OnlineProbe(method.feature_dim, 10, 4))
    optimizer, scheduler, _ = build_optimization(module, cfg, steps_per_epoch=4, world_size=1)
    return cfg, module, optimizer, scheduler


def _step(module, optimizer, scheduler, seed: int, progress: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn(16, 1, 28, 28, generator=g), torch.randn(16, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    out, probe_loss = module((x1, x2), y, y % 4, epoch=1, use_superclass=True)
    optimizer.zero_grad()
    (out.loss + probe_loss).backward()
    optimizer.step()
    module.method.momentum_update(progress)
    scheduler.step()


@pytest.mark.parametrize("name,buffer", [("moco", "target_backbone"), ("nnclr", "queue")])
def test_state_round_trip_restores_everything(name, buffer):
    cfg, module, optimizer, scheduler = _build(name)
    for i in range(3):
        _step(module, optimizer, scheduler, seed=i, progress=(i + 1) / 8)
    state = copy.deepcopy(training_state(module, optimizer, scheduler, epoch=1, step=3,
                                         cfg_dict=config_to_dict(cfg), nan_skips=0))
    assert any(k.startswith(buffer) for k in state["method"])

    _, fresh, fresh_opt, fresh_sched = _build(name)
    torch.manual_seed(123)
    for p in fresh.parameters():  # make sure nothing passes by accident of equal init
        p.data.add_(torch.randn_like(p))
    info = restore_training_state(state, fresh, fresh_opt, fresh_sched)
    assert info["restored_epoch"] == 1 and info["restored_step"] == 3 and info["restored/scheduler_step"] == 3
    assert info["restored/optimizer_digest"] > 0
    for key, value in module.method.state_dict().items():
        assert torch.equal(value, fresh.method.state_dict()[key]), key
    assert fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]

    torch.manual_seed(7)
    _step(module, optimizer, scheduler, seed=99, progress=0.5)
    torch.manual_seed(7)
    _step(fresh, fresh_opt, fresh_sched, seed=99, progress=0.5)
    for key, value in module.method.state_dict().items():
        assert torch.allclose(value.float(), fresh.method.state_dict()[key].float(), atol=1e-6), key
