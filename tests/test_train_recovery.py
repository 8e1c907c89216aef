"""Fault tolerance: a training worker dies after epoch 1's checkpoint; FailureConfig restarts the worker group,
which resumes from that checkpoint — the same epoch/step, optimizer moments, scheduler position, momentum encoder
and queue — and finishes every epoch. Then `--resume` extends the finished run by one epoch. Also: a NaN loss
stops the run with an error naming the step and the term."""

from __future__ import annotations

import csv

import pytest
from fault_hooks import CrashOnce, PoisonLoss, StallLastRank
from test_train_e2e import synthetic_overrides

from hexray.checkpoint import checkpoint_dir_name, load_state
from hexray.errors import RunFailedError
from hexray.train.components import state_digest


def _rows(run):
    return list(csv.DictReader((run / "metrics.csv").open()))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_worker_crash_restores_full_state_then_resume(ray_session, tmp_path):
    from hexray.config import load_config
    from hexray.train.launch import run_training

    sets = synthetic_overrides(tmp_path, "crash", **{
        "method.name": "moco", "method.pred_hidden_dim": 32, "run.epochs": 3,
        "checkpoint.max_failures": 1, "checkpoint.keep": 5, "probe.knn_every_epochs": 0,
        "checkpoint.metric": "loss", "checkpoint.mode": "min", "optim.name": "sgd"})
    result = run_training(load_config(None, sets), final_eval=False,
                          worker_hooks=[CrashOnce(after_epoch=1, flag=str(tmp_path / "crashed.flag"))])
    run = tmp_path / "crash"
    assert (tmp_path / "crashed.flag").is_file(), "the test hook never killed the worker"

    saved = load_state(run / checkpoint_dir_name(1))
    restored = [r for r in _rows(run) if r.get("restored_epoch")]
    assert len(restored) == 1
    row = restored[0]
    assert int(row["restored_epoch"]) == 1 and int(row["restored_step"]) == saved["step"] > 0
    assert int(row["restored/scheduler_step"]) == saved["scheduler"]["last_epoch"] == saved["step"]
    optimizer_digest = state_digest(saved["optimizer"]["state"])
    assert optimizer_digest > 0  # momentum buffers exist: a fresh optimizer would have none
    assert float(row["restored/optimizer_digest"]) == pytest.approx(optimizer_digest, rel=1e-9)
    assert float(row["restored/method_digest"]) == pytest.approx(state_digest(saved["method"]), rel=1e-9)
    assert any(k.startswith("target_backbone") for k in saved["method"])  # MoCo's momentum encoder
    ends = [int(r["epoch"]) for r in _rows(run) if r["epoch_end"] == "1"]
    assert ends[-2:] == [2, 3] and result.summary["final_metrics"]["epoch"] == 3
    assert load_state(run / checkpoint_dir_name(3))["step"] == 3 * saved["step"]

    cfg = load_config(str(run / "config.yaml"), ["run.epochs=4"])
    run_training(cfg, resume_dir=str(run), final_eval=False)
    last = load_state(run / checkpoint_dir_name(4))
    assert last["epoch"] == 4 and last["step"] == 4 * saved["step"]
    assert int([r for r in _rows(run) if r.get("restored_epoch")][-1]["restored_epoch"]) == 3


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_nan_loss_stops_naming_step_and_term(ray_session, tmp_path):
    from hexray.config import load_config
    from hexray.train.launch import run_training

    # data.augment_in=pipeline: this run also covers views made by Ray Data's tasks (the e2e run makes them on
    # the training workers, the default)
    sets = synthetic_overrides(tmp_path, "nan", **{"run.epochs": 1, "probe.knn_every_epochs": 0,
                                                   "checkpoint.metric": "loss", "checkpoint.mode": "min",
                                                   "data.augment_in": "pipeline"})
    with pytest.raises(RunFailedError, match=r"step 2 .*term 'loss/"):
        run_training(load_config(None, sets), final_eval=False, worker_hooks=[PoisonLoss(step=2)])


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_stalled_worker_fails_the_collective_with_a_message_naming_the_timeout(ray_session, tmp_path):
    from hexray.config import load_config
    from hexray.train.launch import run_training

    sets = synthetic_overrides(tmp_path, "stall", **{
        "run.epochs": 1, "probe.knn_every_epochs": 0, "checkpoint.metric": "loss", "checkpoint.mode": "min",
        "scaling.num_workers": 2, "scaling.cpus_per_worker": 0.25, "scaling.collective_timeout_s": 5})
    with pytest.raises(RunFailedError, match=r"waited longer than scaling.collective_timeout_s = 5 s"):
        # rank 1 sleeps; rank 0 waits in all-gather
        run_training(load_config(None, sets), final_eval=False, worker_hooks=[StallLastRank(seconds=60)])


@pytest.mark.parametrize("snippet", [
    # gloo all-gather in the loss (the usual case)
    "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error: Connection timed out",
    # DDP's buffer broadcast at forward, with Ray's truncation cutting off the op name's first half
    '  File ".../torch/nn/parallel/distributed.py", line 2364, in _distributed_broadcast_coalesced\n'
    "    dist._broadcast_coalesced(\nRuntimeError: Application timeout caused pair closure",
])
def test_collective_timeout_is_recognised_from_whichever_part_of_the_traceback_survives(snippet):
    from hexray.config import load_config
    from hexray.train.launch import _failure_message

    cfg = load_config(None, ["scaling.collective_timeout_s=7"])
    message = _failure_message(RuntimeError("Training failed due to worker errors:\n... (Output truncated) ...\n"
                                            + snippet), cfg)
    assert message is not None and "scaling.collective_timeout_s = 7 s" in message


def test_unrelated_timeouts_are_left_to_ray():
    from hexray.config import load_config
    from hexray.train.launch import _failure_message

    err = RuntimeError("urllib3 read timeout while listing s3://bucket")
    assert _failure_message(err, load_config(None, [])) is None


def test_nan_stop_is_found_by_its_type_in_the_workers_failures():
    from ray.exceptions import RayTaskError
    from ray.train.v2.api.exceptions import WorkerGroupError

    from hexray.config import load_config
    from hexray.train.launch import _failure_message, worker_exceptions
    from hexray.train.nan_guard import NonFiniteLossError

    cfg = load_config(None, [])
    nan = NonFiniteLossError("non-finite loss at step 2 (term 'loss/hex')")
    wrapped = RayTaskError("train_fn", "Traceback ...", nan)
    err = WorkerGroupError("rank 1 failed", {1: wrapped, 0: RuntimeError("peer gone")})
    assert any(e is nan for e in worker_exceptions(err))
    assert _failure_message(err, cfg) == str(nan)
    # the same words in a message, without the type, are not a NaN stop
    assert _failure_message(RuntimeError("NonFiniteLossError: non-finite loss at step 2"), cfg) is None


def test_a_workers_input_error_is_one_line_and_a_bug_is_not():
    from ray.exceptions import RayTaskError
    from ray.train.v2.api.exceptions import WorkerGroupError

    from hexray.config import load_config
    from hexray.errors import InputError
    from hexray.train.launch import _failure_message

    cfg = load_config(None, [])
    bad_batch = InputError("step 1 (epoch 1): view1 has 3 channels but backbone.in_channels is 1")
    err = WorkerGroupError("rank 0 failed", {0: RayTaskError("train_fn", "Traceback ...", bad_batch)})
    assert _failure_message(err, cfg) == str(bad_batch)
    bug = ValueError("an invariant inside a method broke")
    assert _failure_message(WorkerGroupError("rank 0 failed", {0: RayTaskError("train_fn", "...", bug)}), cfg) is None


def test_a_batch_that_does_not_fit_the_config_names_the_setting():
    import torch

    from hexray.errors import InputError
    from hexray.losses import HexConfig
    from hexray.methods import MethodConfig, build_method
    from hexray.models import BackboneConfig, SEMConfig

    m = build_method(MethodConfig(), BackboneConfig(in_channels=1, width=8), HexConfig(enabled=False), SEMConfig(),
                     max_epochs=2)
    with pytest.raises(InputError, match="backbone.in_channels is 1"):
        m(torch.zeros(4, 3, 16, 16), torch.zeros(4, 3, 16, 16), epoch=0)
