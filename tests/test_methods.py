"""The seven SSL methods: forward/backward, learning on a tiny synthetic set, HEX/SEM integration, momentum
targets and queues, checkpoint round-trips, and errors that name the bad argument."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hexray.losses import HexConfig, cosine_regression_loss, nt_xent
from hexray.methods import METHODS, MethodConfig, build_method, momentum_at
from hexray.models import BackboneConfig, SEMConfig

NAMES = ["simclr", "moco", "nnclr", "byol", "simsiam", "vicreg", "barlow", "dino"]
TARGETED = ["moco", "byol", "dino"]


def make(name: str, *, hex_on: bool = False, sem: bool = False, seed: int = 0, channels: int = 3, **hex_kw):
    torch.manual_seed(seed)
    return build_method(
        MethodConfig(name=name, proj_hidden_dim=64, proj_output_dim=32, pred_hidden_dim=32, queue_size=128,
                     options={"local_crops": 0, "out_dim": 64} if name == "dino" else {}),  # test_dino.py: crops
        BackboneConfig(name="convnet", in_channels=channels, width=8),
        HexConfig(enabled=hex_on, **({"warmup_epochs": 0} | hex_kw)),
        SEMConfig(enabled=sem, num_simplices=8, simplex_dim=4),
        max_epochs=10,
    )


def views(b: int = 8, size: int = 16, channels: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, channels, size, size, generator=g), torch.randn(b, channels, size, size, generator=g)


def test_registry_holds_every_method():
    assert set(NAMES) <= set(METHODS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hex_on, sem", [(False, False), (True, False), (True, True)])
def test_forward_backward(name, hex_on, sem):
    m = make(name, hex_on=hex_on, sem=sem)
    v1, v2 = views()
    out = m(v1, v2, epoch=0, superclass=torch.tensor([0, 1, 0, 1, 2, 2, -1, 0]),
            label=torch.tensor([0, 2, 1, 3, 4, 5, 6, 0]))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.features.shape == (8, m.feature_dim) and out.features.requires_grad
    for key, value in out.terms.items():
        assert "/" in key and value.dim() == 0 and not value.requires_grad and torch.isfinite(value), key
    if hex_on:
        assert {"loss/hex", "hex/epsilon", "hex/h_size", "hex/purity", "hex/local_denominator",
                "hex/global_denominator"} <= set(out.terms)
        queue = name in ("moco", "nnclr")  # candidates from a queue carry no labels: no H(i) class diagnostics
        assert queue != ({"hex/purity_class", "hex/chance_class", "hex/chance_superclass"} <= set(out.terms))
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.backbone.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in m.backbone.parameters())


def _data(n: int = 64, size: int = 16):
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(4, 3, size, size, generator=g)
    return protos[torch.arange(n) % 4] + 0.5 * torch.randn(n, 3, size, size, generator=g)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], 1, 1, 1, generator=g) < 0.5
    x = torch.where(flip, x.flip(3), x)
    return x * (1 + 0.2 * torch.randn(x.shape[0], 1, 1, 1, generator=g)) + 0.3 * torch.randn(x.shape, generator=g)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hex_on", [False, True])
def test_loss_falls_over_50_steps(name, hex_on):
    m = make(name, hex_on=hex_on)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x, g = _data(), torch.Generator().manual_seed(1)
    losses = []
    for step in range(50):
        idx = torch.randperm(x.shape[0], generator=g)[:32]
        out = m(_augment(x[idx], g), _augment(x[idx], g), epoch=0)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        m.on_after_step(step / 50)
        # DINO's loss is teacher entropy + KL: the entropy climbs while the centre catches up with a random
        # teacher (a known start-up phase), so what must fall is the KL, the student matching its teacher
        losses.append(out.terms["dino/kl"].item() if name == "dino" else out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, (first, last)


@pytest.mark.parametrize("name", ["simclr", "moco", "nnclr"])
def test_hex_with_unit_weights_and_no_hardness_equals_infonce(name):
    """HEX replaces InfoNCE in contrastive methods: with w_h = w_g = 1, β = 0 (same τ) nothing may change."""
    v1, v2 = views()
    plain = make(name).eval()
    hexed = make(name, hex_on=True, variant="decomposed", local_weight=1.0, global_weight=1.0, beta=0.0,
                 temperature=0.1).eval()
    a, b = plain(v1, v2, epoch=3), hexed(v1, v2, epoch=3)
    assert "loss/infonce" in a.terms and b.terms["hex/active"] == 1
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-5)


def test_simclr_is_nt_xent_on_normalised_projections():
    m = make("simclr").eval()
    v1, v2 = views()
    with torch.no_grad():
        z1, z2 = (F.normalize(m.projector(m.backbone(v)), dim=1) for v in (v1, v2))
        expected = nt_xent(z1, z2, temperature=0.1).loss
    torch.testing.assert_close(m(v1, v2, epoch=0).loss.detach(), expected)


def test_byol_regresses_the_target_projection():
    m = make("byol").eval()
    v1, v2 = views()
    with torch.no_grad():
        p1, p2 = (m.predictor(m.projector(m.backbone(v))) for v in (v1, v2))
        t1, t2 = (m.target_projector(m.target_backbone(v)) for v in (v1, v2))
        expected = (cosine_regression_loss(p1, t2) + cosine_regression_loss(p2, t1)) / 2
    torch.testing.assert_close(m(v1, v2, epoch=0).loss.detach(), expected)


@pytest.mark.parametrize("name", ["byol", "simsiam", "vicreg", "barlow"])
def test_auxiliary_hex_mixes_alpha_and_respects_warmup(name):
    v1, v2 = views()
    plain = make(name).eval()(v1, v2, epoch=5).loss
    zero = make(name, hex_on=True, alpha=0.0).eval()(v1, v2, epoch=5)
    torch.testing.assert_close(zero.loss, plain)
    warm = make(name, hex_on=True, alpha=0.5, warmup_epochs=10).eval()(v1, v2, epoch=5)
    torch.testing.assert_close(warm.loss, plain)
    assert warm.terms["hex/active"] == 0
    half = make(name, hex_on=True, alpha=0.5).eval()(v1, v2, epoch=5)
    torch.testing.assert_close(half.loss, 0.5 * half.terms["loss/hex"] + 0.5 * plain.detach())


def _record_sem_branches(m):
    seen = []
    for name, mod in m.named_modules():
        if type(mod).__name__ == "SEMHead":
            mod.register_forward_hook(lambda mod, args, kwargs, out, name=name: seen.append(
                (name, kwargs.get("branch", args[1] if len(args) > 1 else "online"), tuple(args[0].shape),
                 tuple(out.shape))), with_kwargs=True)
    return seen


def test_sem_sits_between_backbone_and_projector():
    # SEM paper: backbone → SEM embedder → projector; the online probe reads the SEM embedding
    m = make("simclr", sem=True)
    assert m.sem is not None and m.probe_dim == 32  # L·V = 8·4
    assert m.projector[0].in_features == 32 and m.sem.linear.in_features == m.feature_dim
    seen = _record_sem_branches(m)
    v1, v2 = views()
    out = m(v1, v2, epoch=0)
    # SimCLR: view 1 at τ_online, view 2 at τ_target (as the SEM code's SimCLR); input = backbone features
    assert [(b, i, o) for _, b, i, o in seen] == [("online", (8, m.feature_dim), (8, 32)),
                                                  ("target", (8, m.feature_dim), (8, 32))]
    assert out.features.shape == (8, 32)
    torch.testing.assert_close(out.features.view(8, 8, 4).sum(-1), torch.ones(8, 8))
    probe_in = m.embedder().eval()(v1)
    assert probe_in.shape == (8, 32)


@pytest.mark.parametrize("name", ["byol", "moco"])
def test_sem_momentum_methods_use_the_target_temperature_on_the_target_branch(name):
    m = make(name, sem=True)
    seen = _record_sem_branches(m)
    m(*views(), epoch=0)
    assert {(n.startswith("target"), b) for n, b, _, _ in seen} == {(False, "online"), (True, "target")}


def test_sem_gradient_reaches_the_embedder_and_the_backbone():
    m = make("simclr", sem=True, hex_on=True).double()
    v1, v2 = (v.double() for v in views())
    out = m(v1, v2, epoch=0)
    out.loss.backward()
    assert m.sem.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters() if p.ndim > 1)
    # and the embedder's own gradient is its analytic one (finite differences, float64)
    head = m.sem.eval()
    x = torch.randn(4, m.feature_dim, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: head(t, "online"), (x,))


def test_momentum_schedule():
    assert momentum_at(0.0, 0.99, 1.0) == pytest.approx(0.99)
    assert momentum_at(0.5, 0.99, 1.0) == pytest.approx(0.995)
    assert momentum_at(1.0, 0.99, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="progress"):
        momentum_at(1.5, 0.99, 1.0)


@pytest.mark.parametrize("name", TARGETED)
def test_momentum_update_moves_target_towards_online(name):
    m = make(name)
    assert all(not p.requires_grad for p in m.target_backbone.parameters())
    before = [p.clone() for p in m.target_backbone.parameters()]
    torch.testing.assert_close(before, list(m.backbone.parameters()))  # starts as a copy
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    out = m(*views(), epoch=0)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert all(p.grad is None for p in m.target_backbone.parameters())
    online = [p.detach().clone() for p in m.backbone.parameters()]
    m.momentum_update(0.0)  # m = 0.99
    after = list(m.target_backbone.parameters())
    for b, o, a in zip(before, online, after, strict=True):
        torch.testing.assert_close(a, 0.99 * b + 0.01 * o)
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    frozen = [p.clone() for p in m.target_backbone.parameters()]
    m.momentum_update(1.0)  # m = momentum_final = 1: no change
    torch.testing.assert_close(frozen, list(m.target_backbone.parameters()))


def test_nnclr_queue_advances_and_wraps():
    m = make("nnclr")
    v1, v2 = views(b=48)
    old = m.queue.clone()
    m(v1, v2, epoch=0)
    assert int(m.queue_ptr) == 48
    assert not torch.equal(m.queue[:48], old[:48]) and torch.equal(m.queue[48:], old[48:])
    torch.testing.assert_close(m.queue[:48].norm(dim=1), torch.ones(48))
    m(v1, v2, epoch=0)
    m(v1, v2, epoch=0)
    assert int(m.queue_ptr) == (3 * 48) % 128
    m.eval()
    frozen = m.queue.clone()
    m(v1, v2, epoch=0)
    assert torch.equal(frozen, m.queue)  # evaluation does not write the queue


def test_nnclr_positive_is_the_nearest_queue_entry():
    m = make("nnclr")
    z = F.normalize(torch.randn(5, 32), dim=1)
    m.queue[:5] = z
    torch.testing.assert_close(m.nearest_neighbour(z), z)


@pytest.mark.parametrize("name", ["moco", "nnclr", "byol", "dino"])
def test_state_dict_round_trip_keeps_targets_and_queue(name):
    m = make(name)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    for step in range(2):
        out = m(*views(b=16, seed=step), epoch=0)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        m.momentum_update(0.1)
    state = m.state_dict()
    if name == "nnclr":
        assert "queue" in state and "queue_ptr" in state
    else:
        assert any(k.startswith("target_backbone.") for k in state)
    fresh = make(name, seed=123)
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    m.eval(), fresh.eval()
    v1, v2 = views()
    torch.testing.assert_close(fresh(v1, v2, epoch=0).loss, m(v1, v2, epoch=0).loss)


def test_unknown_method_names_the_key():
    with pytest.raises(ValueError, match="method.name"):
        build_method(MethodConfig(name="swav"), BackboneConfig(width=8), HexConfig(), SEMConfig(), max_epochs=1)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"temperature": 0.0}, "method.temperature"), ({"queue_size": 0}, "method.queue_size"),
     ({"momentum_base": 1.5}, "method.momentum_base"), ({"momentum_final": 0.5}, "method.momentum_final"),
     ({"barlow_lambda": -1.0}, "method.barlow_lambda"), ({"proj_output_dim": 0}, "method.proj_output_dim")],
)
def test_method_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        MethodConfig(**kwargs)


def test_bad_inputs_name_the_argument():
    m = make("simclr")
    v1, v2 = views()
    with pytest.raises(ValueError, match="view1"):
        m(v1[:, :1], v2, epoch=0)
    with pytest.raises(ValueError, match="view2"):
        m(v1, v2[:4], epoch=0)
    with pytest.raises(ValueError, match="view2"):
        m(v1, v2.flatten(1), epoch=0)
    with pytest.raises(ValueError, match="epoch"):
        m(v1, v2, epoch=-1)
    with pytest.raises(ValueError, match="superclass"):
        m(v1, v2, epoch=0, superclass=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_epochs"):
        build_method(MethodConfig(), BackboneConfig(width=8), HexConfig(), SEMConfig(), max_epochs=0)
