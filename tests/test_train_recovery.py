"""Failures with a clear message: a NaN loss stops the run naming the step and the term; a stalled worker fails the
collective naming the timeout. (A worker killed mid-run and restored in full from its checkpoint, then `--resume`:
tests/test_storage_s3.py, end to end on object storage.)"""

from __future__ import annotations

import pytest
from fault_hooks import PoisonLoss, StallLastRank
from test_train_e2e import synthetic_overrides

from hexray.errors import RunFailedError


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
