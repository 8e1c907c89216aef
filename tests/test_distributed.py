"""gather_with_grad / gather_no_grad: identity without torch.distributed; on 2 gloo processes the global loss and
the DDP-averaged gradients of every method equal the single-process ones on the concatenated batch."""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hexray import distributed as hd
from hexray.losses import HexConfig
from hexray.methods import MethodConfig, build_method
from hexray.models import BackboneConfig, SEMConfig

NAMES = ["simclr", "moco", "nnclr", "byol", "simsiam", "vicreg", "barlow"]
PER_RANK = 6


def test_single_process_is_identity():
    x = torch.randn(4, 3, requires_grad=True)
    assert hd.rank() == 0 and hd.world_size() == 1
    assert hd.gather_with_grad(x) is x
    y = hd.gather_no_grad(x)
    assert torch.equal(y, x) and not y.requires_grad


def _method(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(
        MethodConfig(name=name, proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=16, queue_size=64),
        BackboneConfig(name="convnet", in_channels=1, width=4),
        HexConfig(enabled=True, threshold="adaptive", warmup_epochs=0),
        SEMConfig(),
        max_epochs=10,
    ).double().eval()  # eval: BatchNorm uses running statistics, identical on every rank (no SyncBN needed)


def _batch():
    g = torch.Generator().manual_seed(7)
    n = 2 * PER_RANK
    v1 = torch.randn(n, 1, 12, 12, generator=g, dtype=torch.float64)
    v2 = torch.randn(n, 1, 12, 12, generator=g, dtype=torch.float64)
    return v1, v2, torch.arange(n) % 3


def _step(name: str, v1, v2, superclass):
    m = _method(name)
    out = m(v1, v2, epoch=1, superclass=superclass)
    out.loss.backward()
    grads = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    return out, grads


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {}
        v1, v2, sc = _batch()
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        for name in NAMES:
            out, grads = _step(name, v1[mine], v2[mine], sc[mine])
            loss = out.loss.detach().clone()
            dist.all_reduce(loss)  # mean over ranks, as a DDP run reports it
            for g in grads.values():
                dist.all_reduce(g)  # what DDP does: average the parameter gradients
                g /= 2
            results[name] = {"loss": loss / 2, "rank_loss": out.loss.detach(), "grads": grads,
                             "epsilon": out.terms["hex/epsilon"]}
        # uneven per-rank sizes: rank 0 holds 2 rows, rank 1 holds 3
        x = torch.arange(5, dtype=torch.float64).view(5, 1)[:2] if rank == 0 else torch.arange(5.0).double()[2:, None]
        x.requires_grad_(True)
        gathered = hd.gather_with_grad(x * 1.0)
        (gathered.pow(2).sum() * (rank + 1)).backward()
        results["uneven"] = {"gathered": gathered.detach(), "grad": x.grad, "labels": hd.gather_no_grad(x[:, 0].long())}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", NAMES)
def test_global_loss_and_gradients_match_single_process(two_rank_results, name):
    v1, v2, sc = _batch()
    ref, ref_grads = _step(name, v1, v2, sc)
    for r in range(2):
        got = two_rank_results[r][name]
        torch.testing.assert_close(got["loss"], ref.loss.detach(), rtol=1e-6, atol=1e-6)
        assert set(got["grads"]) == set(ref_grads)
        for k, g in got["grads"].items():
            torch.testing.assert_close(g, ref_grads[k], rtol=1e-5, atol=1e-7, msg=f"{name}: grad of {k}")
    if name in ("simclr", "moco", "nnclr", "vicreg", "barlow"):
        # every rank computes the same global loss: HEX's ε is the global batch's ε on each rank
        for r in range(2):
            torch.testing.assert_close(two_rank_results[r][name]["rank_loss"], ref.loss.detach())
            torch.testing.assert_close(two_rank_results[r][name]["epsilon"], ref.terms["hex/epsilon"])


@pytest.mark.timeout(240)
def test_uneven_gather_and_gradient_slices(two_rank_results):
    full = torch.arange(5, dtype=torch.float64).view(5, 1)
    for r in range(2):
        got = two_rank_results[r]["uneven"]
        torch.testing.assert_close(got["gathered"], full)
        assert torch.equal(got["labels"], full[:, 0].long())
    # loss_r = (r+1)·Σ x², so each rank's rows get Σ_r (r+1)·2x = 6x (the all-reduced gradient, its own slice)
    torch.testing.assert_close(two_rank_results[0]["uneven"]["grad"], 6 * full[:2])
    torch.testing.assert_close(two_rank_results[1]["uneven"]["grad"], 6 * full[2:])


def _bn_net() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5), torch.nn.BatchNorm1d(5)).double()


def _bn_batch():
    g = torch.Generator().manual_seed(11)
    return torch.randn(10, 1, 8, 8, generator=g, dtype=torch.float64) * 3 + 1


def _bn_loss(y: torch.Tensor) -> torch.Tensor:
    return (y * torch.arange(1.0, 6.0, dtype=y.dtype)).pow(2).sum()  # a sum over samples: Σ_r L_r = L


def _sync_bn_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        net = hd.convert_sync_batchnorm(_bn_net(), "cpu").train()
        x = _bn_batch()[rank * 4 : (rank + 1) * 4 + rank * 2]  # uneven: rank 0 holds 4 images, rank 1 holds 6
        for _ in range(2):  # two steps, so the running statistics compound
            net.zero_grad()
            y = net(x)
            _bn_loss(y).backward()
        grads = {k: p.grad.clone() for k, p in net.named_parameters()}
        for g in grads.values():
            dist.all_reduce(g)  # Σ_r ∂L_r/∂θ = ∂L/∂θ
        torch.save({"y": y.detach(), "grads": grads, "state": net.state_dict()}, os.path.join(out_dir, f"bn{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_sync_batchnorm_two_gloo_workers_equal_one_worker_on_the_joint_batch(tmp_path):
    mp.spawn(_sync_bn_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"bn{r}.pt") for r in range(2)]
    net = _bn_net().train()
    x = _bn_batch()
    for _ in range(2):
        net.zero_grad()
        y = net(x)
        _bn_loss(y).backward()
    torch.testing.assert_close(torch.cat([ranks[0]["y"], ranks[1]["y"]]), y.detach())
    for r in range(2):
        for key, value in net.state_dict().items():  # running mean / var / count of every BN layer
            torch.testing.assert_close(ranks[r]["state"][key], value, msg=key)
        for key, p in net.named_parameters():
            torch.testing.assert_close(ranks[r]["grads"][key], p.grad, msg=key)
    assert not torch.allclose(ranks[0]["y"], _bn_net().train()(x[:4]).detach())  # local BN would differ


def test_converted_batchnorm_is_plain_batchnorm_without_a_process_group():
    net, ref = hd.convert_sync_batchnorm(_bn_net(), "cpu"), _bn_net()
    assert any(isinstance(m, hd.CrossWorkerBatchNorm) for m in net.modules())
    x = _bn_batch()
    torch.testing.assert_close(net(x), ref(x))
    assert set(net.state_dict()) == set(ref.state_dict())


def test_conversion_keeps_the_parameters_an_optimizer_already_holds():
    net = _bn_net()
    before = {id(p) for p in net.parameters()}
    assert {id(p) for p in hd.convert_sync_batchnorm(net, "cpu").parameters()} == before


def _simclr(negatives: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(MethodConfig(name="simclr", proj_hidden_dim=32, proj_output_dim=16),
                        BackboneConfig(name="convnet", in_channels=1, width=4),
                        HexConfig(warmup_epochs=0, negatives=negatives), SEMConfig(), max_epochs=10).double().eval()


def _negatives_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        v1, v2, _ = _batch()
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        losses = {neg: _simclr(neg)(v1[mine], v2[mine], epoch=1).loss.detach() for neg in ("local", "global")}
        torch.save(losses, os.path.join(out_dir, f"neg{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_local_negatives_see_only_the_workers_own_batch(tmp_path):
    # the reference code does not gather: each device's loss is over its own images
    mp.spawn(_negatives_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    v1, v2, _ = _batch()
    joint = _simclr("global")(v1, v2, epoch=1).loss
    for r in range(2):
        got = torch.load(tmp_path / f"neg{r}.pt")
        mine = slice(r * PER_RANK, (r + 1) * PER_RANK)
        torch.testing.assert_close(got["local"], _simclr("local")(v1[mine], v2[mine], epoch=1).loss.detach())
        torch.testing.assert_close(got["global"], joint.detach())
        assert not torch.allclose(got["local"], joint.detach())
