"""Unit tests of the training layer's pure pieces: LARS and parameter groups, the lr schedule, checkpoint files,
the NaN guard, the online probe, and the metrics CSV / progress line. No Ray."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hexray.losses.base import LossOutput
from hexray.train.checkpoint import checkpoint_dir_name, find_checkpoints, load_state, resolve_checkpoint, save_state
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
    opt = LARS([{"params": [w]}, {"params": [b], "lars_exclude": True}], lr=1.0, momentum=0.0, eta=0.01)
    w.grad = torch.full((4,), 10.0)  # ‖g‖ = 20 → trust = 0.01 · 4 / 20 = 0.002
    b.grad = torch.full((4,), 10.0)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((4,), 2.0 - 10.0 * 0.002))
    assert torch.allclose(b.detach(), torch.full((4,), -10.0))  # plain SGD step


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
    assert [p.name for p in found] == ["checkpoint_epoch0001", "checkpoint_epoch0002", "checkpoint_epoch0010"]
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
