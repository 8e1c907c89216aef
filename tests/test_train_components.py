"""Unit tests of the training layer's pure pieces: LARS and parameter groups, the lr schedule, checkpoint files,
the NaN guard, the online probe, and the metrics CSV / progress line. No Ray."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from hexray.checkpoint import checkpoint_dir_name, find_checkpoints, load_state, resolve_checkpoint, save_state
from hexray.losses.base import LossOutput
from hexray.train.metrics import CsvMetricsWriter, format_duration, progress_line
from hexray.train.nan_guard import NanGuard, NonFiniteLossError
from hexray.train.optim import LARS, build_optimizer, parameter_groups, warmup_cosine
from hexray.train.probes import OnlineProbe


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def test_parameter_groups_exclude_bias_and_norm():
    groups = parameter_groups(_net(), weight_decay=1e-4, exclude_bias_and_norm=True)
    regular, excluded = groups
    assert [p.ndim for p in regular["params"]] == [4, 2]  # conv weight, linear weight
    assert all(p.ndim == 1 for p in excluded["params"]) and len(excluded["params"]) == 4
    assert excluded["weight_decay"] == 0.0 and excluded["lars_exclude"]
    assert len(parameter_groups(_net(), 1e-4, exclude_bias_and_norm=False)) == 1


def test_lars_trust_ratio_scales_the_step_and_skips_excluded_groups():
    w = nn.Parameter(torch.full((4,), 2.0))  # ‖w‖ = 4
    b = nn.Parameter(torch.zeros(4))
    opt = LARS([{"params": [w]}, {"params": [b], "lars_exclude": True}], lr=1.0, momentum=0.0, eta=0.01,
               clip_lr=False)
    w.grad = torch.full((4,), 10.0)  # ‖g‖ = 20 → trust = 0.01 · 4 / 20 = 0.002
    b.grad = torch.full((4,), 10.0)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((4,), 2.0 - 10.0 * 0.002))
    assert torch.allclose(b.detach(), torch.full((4,), -10.0))  # plain SGD step


@pytest.mark.parametrize(("grad", "wd", "clipped"), [(10.0, 0.5, False), (0.005, 1e-3, True)])
def test_lars_clip_lr_caps_the_trust_ratio_at_the_learning_rate(grad, wd, clipped):
    # the reference's LARS: r = η‖w‖/(‖g‖ + wd‖w‖), clip: r ← min(r/lr, 1), step = lr·r·(g + wd·w)
    w = nn.Parameter(torch.full((4,), 2.0))  # ‖w‖ = 4
    opt = LARS([{"params": [w]}], lr=0.1, momentum=0.0, eta=0.02, weight_decay=wd, clip_lr=True)
    w.grad = torch.full((4,), grad)  # ‖g‖ = 2·grad
    raw = 0.02 * 4 / (2 * grad + wd * 4) / 0.1  # 0.036 (LARS slows the layer) or 57 (clipped to 1: plain SGD)
    assert (raw > 1) == clipped
    opt.step()
    assert torch.allclose(w.detach(), torch.full((4,), 2.0 - 0.1 * min(raw, 1.0) * (grad + wd * 2.0)), atol=1e-7)


def test_lars_keeps_momentum_state_and_trains():
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    opt = build_optimizer("lars", parameter_groups(model, 1e-6, True), lr=0.5, momentum=0.9, weight_decay=1e-6,
                          eta=0.02)
    first = None
    for _ in range(50):
        loss = ((model(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert all("momentum_buffer" in opt.state[p] for p in model.parameters())


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_build_optimizer_plain(name):
    opt = build_optimizer(name, parameter_groups(_net(), 1e-4, True), lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert opt.param_groups[1]["weight_decay"] == 0.0


def test_build_optimizer_rejects_unknown_name():
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer("adam", parameter_groups(_net(), 0, True), lr=0.1, momentum=0.9, weight_decay=0)


def test_warmup_cosine_shape():
    f = [warmup_cosine(s, warmup_steps=10, total_steps=110, min_ratio=0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55)
    assert f[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))


def test_checkpoint_roundtrip_and_ordering(tmp_path):
    for epoch in (2, 10, 1):
        save_state(tmp_path / checkpoint_dir_name(epoch), {"method": {}, "epoch": epoch, "step": 7 * epoch,
                                                            "config": {}})
    (tmp_path / "checkpoint_epoch0099").mkdir()  # no state file: ignored
    found = find_checkpoints(tmp_path)
    assert [Path(p).name for p in found] == ["checkpoint_epoch0001", "checkpoint_epoch0002", "checkpoint_epoch0010"]
    assert resolve_checkpoint(tmp_path) == found[-1]
    assert load_state(found[1])["step"] == 14


def test_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)
    save_state(tmp_path / "c", {"epoch": 1})
    with pytest.raises(ValueError, match="lacks"):
        load_state(tmp_path / "c")


def _output(loss: float, term: float) -> LossOutput:
    terms = {"loss/infonce": torch.tensor(1.0), "hex/epsilon": torch.tensor(term)}
    return LossOutput(loss=torch.tensor(loss), terms=terms)


def test_nan_guard_stop_names_step_and_term():
    guard = NanGuard("stop")
    assert guard.check(_output(1.0, 0.5), step=3, epoch=1)
    with pytest.raises(NonFiniteLossError, match=r"step 4 .*'hex/epsilon'"):
        guard.check(_output(math.nan, math.inf), step=4, epoch=1)
    with pytest.raises(NonFiniteLossError, match=r"step 5 .*'loss'"):
        guard.check(_output(math.inf, 0.5), step=5, epoch=1)


def test_nan_guard_lets_a_finite_loss_with_an_infinite_diagnostic_through():
    """`hex.threshold: none` (the DCL control) reports ε = +∞ by design: the loss is fine, the run goes on."""
    assert NanGuard("stop").check(_output(1.0, math.inf), step=1, epoch=1)


def test_nan_guard_skip_counts_then_stops():
    guard = NanGuard("skip", max_skips=2)
    assert not guard.check(_output(math.nan, 0.5), step=1, epoch=1)
    assert not guard.check(_output(math.nan, 0.5), step=2, epoch=1)
    assert guard.skipped == 2
    with pytest.raises(NonFiniteLossError, match="max_nan_skips=2"):
        guard.check(_output(math.nan, 0.5), step=3, epoch=1)


def test_online_probe_is_detached_and_learns():
    torch.manual_seed(0)
    feats = torch.randn(128, 8, requires_grad=True)
    labels = (feats[:, 0] > 0).long().detach()
    probe = OnlineProbe(8, num_classes=2, num_superclasses=2)
    opt = torch.optim.SGD(probe.parameters(), lr=0.5)
    for _ in range(100):
        loss = probe(feats, labels, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert feats.grad is None
    acc = probe.accuracies(feats.detach(), labels, labels)
    assert acc["probe/online_top1"] > 0.9 and acc["probe/online_superclass"] > 0.9


def test_csv_writer_adds_columns_and_reloads(tmp_path):
    path = tmp_path / "metrics.csv"
    writer = CsvMetricsWriter(path)
    writer.write({"epoch": 1, "step": 10, "loss": 2.0, "worker/node_id": "x"})
    writer.write({"epoch": 2, "step": 20, "loss": 1.5, "knn/top1": 0.4})
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,step,loss,knn/top1" and len(lines) == 3
    CsvMetricsWriter(path).write({"epoch": 3, "step": 30, "loss": 1.0})
    assert path.read_text().splitlines()[-1] == "3,30,1.0,"


def test_progress_line_has_rate_and_eta():
    line = progress_line({"epoch": 2, "loss": 1.234, "images_per_s": 812.3}, 5, [60.0, 40.0])
    assert "epoch 2/5" in line and "812 img/s" in line and "ETA 2m30s" in line
    assert format_duration(3725) == "1h02m"


def test_seeding_from_another_runs_checkpoint_keeps_position_but_takes_this_configs_lr():
    """PBT exploit (`checkpoint.init_from`): the restored schedule position stays, the base lr is this config's."""
    from hexray.train.loop import _reapply_lrs
    from hexray.train.optim import warmup_cosine_scheduler

    def build(lr: float):
        opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr)
        return opt, warmup_cosine_scheduler(opt, warmup_steps=2, total_steps=10)

    donor_opt, donor_sched = build(0.5)
    for _ in range(4):
        donor_opt.step()
        donor_sched.step()
    opt, sched = build(0.1)
    fresh = [g["initial_lr"] for g in opt.param_groups]
    opt.load_state_dict(donor_opt.state_dict())
    sched.load_state_dict(donor_sched.state_dict())
    assert opt.param_groups[0]["initial_lr"] == 0.5  # the donor's lr came along with its state
    _reapply_lrs(opt, sched, fresh)
    factor = warmup_cosine(4, warmup_steps=2, total_steps=10)
    assert sched.last_epoch == 4 and opt.param_groups[0]["lr"] == pytest.approx(0.1 * factor)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * warmup_cosine(5, warmup_steps=2, total_steps=10))


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_k_accumulated_micro_batches_equal_one_step_on_the_joint_batch(optimizer):
    # a loss without cross-sample terms (per-sample mean): k micro-batches of B, then one step == one step of k·B
    from hexray.train.components import OptimizerStepper
    from hexray.train.optim import warmup_cosine_scheduler

    def model_and_stepper(k):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).double()
        opt = build_optimizer(optimizer, parameter_groups(model, 1e-4, True), lr=0.1, momentum=0.9,
                              weight_decay=1e-4)
        sched = warmup_cosine_scheduler(opt, warmup_steps=1, total_steps=10)
        return model, OptimizerStepper(opt, sched, accumulate=k, grad_clip=1.0, clip_params=model.parameters())

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 24, 6, generator=g, dtype=torch.float64), torch.randn(3, 24, 2, generator=g,
                                                                               dtype=torch.float64)
    big, big_step = model_and_stepper(1)
    small, small_step = model_and_stepper(4)
    for step in range(3):
        big_step.backward(((big(x[step]) - y[step]) ** 2).mean())
        big_step.step()
        for i, idx in enumerate(torch.arange(24).chunk(4)):
            small_step.backward(((small(x[step][idx]) - y[step][idx]) ** 2).mean())
            if small_step.steps_after(i, batches_per_epoch=4):
                assert i == 3
                small_step.step()
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert big_step.scheduler.last_epoch == small_step.scheduler.last_epoch == 3
    assert small_step.steps_after(1, batches_per_epoch=2)  # an epoch's short last group steps too
    small_step.backward(((small(x[0]) - y[0]) ** 2).mean())
    assert small_step.pending == 1  # what the loop flushes when a stream ends inside a group
    small_step.step()
    assert small_step.pending == 0


def test_fp16_grad_scaler_path_trains_on_cpu():
    from hexray.config import FastPathSection
    from hexray.train.components import OptimizerStepper, resolve_fast_path
    from hexray.train.optim import warmup_cosine_scheduler

    fast = resolve_fast_path(FastPathSection(amp="fp16"), torch.device("cpu"))
    assert fast.amp == "fp16" and fast.grad_scaler(torch.device("cpu")).is_enabled()
    cpu = torch.device("cpu")
    assert resolve_fast_path(FastPathSection(), cpu, native_bf16=False).amp is None  # auto: off on a plain CPU
    assert resolve_fast_path(FastPathSection(), cpu, native_bf16=True).amp == "bf16"  # bf16 where it is native
    assert resolve_fast_path(FastPathSection(amp="off"), cpu, native_bf16=True).amp is None
    assert resolve_fast_path(FastPathSection(), cpu).channels_last
    assert not resolve_fast_path(FastPathSection(channels_last="off"), cpu).channels_last
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    opt = build_optimizer("sgd", parameter_groups(model, 0.0, True), lr=0.05, momentum=0.0, weight_decay=0.0)
    stepper = OptimizerStepper(opt, warmup_cosine_scheduler(opt, warmup_steps=0, total_steps=100),
                               scaler=fast.grad_scaler(torch.device("cpu")))
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    losses = []
    for _ in range(30):
        with fast.autocast(torch.device("cpu")):
            loss = ((model(x) - y) ** 2).mean()
        losses.append(loss.item())
        stepper.backward(loss)
        stepper.step()
    assert losses[-1] < losses[0]


def test_bf16_asked_of_a_cpu_that_would_emulate_it_gets_a_note_naming_the_way_back():
    from hexray.config import FastPathSection
    from hexray.train.components import cpu_amp_note, cpu_has_native_bf16

    assert isinstance(cpu_has_native_bf16(), bool)
    note = cpu_amp_note(FastPathSection(amp="bf16"), use_gpu=False, native_bf16=False)
    assert note is not None and "fast.amp=off" in note
    assert cpu_amp_note(FastPathSection(amp="bf16"), use_gpu=False, native_bf16=True) is None
    assert cpu_amp_note(FastPathSection(amp="bf16"), use_gpu=True, native_bf16=False) is None
    assert cpu_amp_note(FastPathSection(amp="off"), use_gpu=False, native_bf16=False) is None


def test_bf16_channels_last_convnet_step_on_cpu_matches_float32_closely():
    """The long preset's CPU fast path (bf16 autocast + channels_last) computes the same step as float32, to bf16's
    precision: same loss to ~1%, gradients pointing the same way."""
    from hexray.config import FastPathSection, load_config
    from hexray.methods.registry import build_method
    from hexray.train.components import resolve_fast_path

    cfg = load_config(None, ["backbone.width=8", "data.batch_size=32"])
    torch.manual_seed(0)
    images = (torch.randn(2, 32, 1, 28, 28), torch.randn(2, 32, 1, 28, 28))
    results = []
    for amp, layout in (("off", "off"), ("bf16", "on")):
        torch.manual_seed(1)
        method = build_method(cfg.method, cfg.backbone, cfg.hex, cfg.sem, max_epochs=cfg.run.epochs)
        fast = resolve_fast_path(FastPathSection(amp=amp, channels_last=layout), torch.device("cpu"))
        views = images[0][0], images[1][0]
        if fast.channels_last:
            method = method.to(memory_format=torch.channels_last)
            views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
        with fast.autocast(torch.device("cpu")):
            out = method(*views, epoch=1)
        out.loss.backward()
        grad = torch.cat([p.grad.flatten() for p in method.parameters() if p.grad is not None])
        assert out.loss.dtype == torch.float32  # the loss math runs in float32 under autocast
        results.append((out.loss.detach(), grad.float()))
    (loss32, grad32), (loss16, grad16) = results
    assert torch.isfinite(loss16)
    assert abs(loss16 - loss32) < 0.01 * abs(loss32)
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.95
