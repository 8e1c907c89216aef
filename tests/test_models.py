"""Backbones (shapes, stems, torchvision state-dict compatibility), projector/predictor layout, SEM head."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from hexray.models import BackboneConfig, SEMConfig, SEMHead, build_backbone, prediction_mlp, projection_mlp


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("small_stem", [True, False])
def test_resnet18_shapes(channels, small_stem):
    torch.manual_seed(0)
    net, dim = build_backbone(BackboneConfig(name="resnet18", in_channels=channels, small_stem=small_stem))
    net.eval()
    assert dim == 512
    for size in (28, 32, 64) if small_stem else (28, 32, 64, 224):  # the small stem is for ≤ 64 px
        with torch.no_grad():
            out = net(torch.randn(1, channels, size, size))
        assert out.shape == (1, 512), size
        assert torch.isfinite(out).all()
    with pytest.raises(RuntimeError):
        net(torch.randn(1, 4 - channels if channels == 1 else 1, 32, 32))


def test_resnet50_shape_and_small_stem_keeps_resolution():
    net, dim = build_backbone(BackboneConfig(name="resnet50", in_channels=1, small_stem=True))
    assert dim == 2048
    assert isinstance(net.maxpool, nn.Identity) and net.conv1.stride == (1, 1) and net.conv1.kernel_size == (3, 3)
    net.eval()
    seen = {}
    net.layer1.register_forward_hook(lambda m, i, o: seen.update(layer1=o.shape))
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32)).shape == (1, 2048)
    assert seen["layer1"][-2:] == (32, 32)  # no 4× downsampling before the first block


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_state_dict_loads_into_torchvision(name):
    ours, _ = build_backbone(BackboneConfig(name=name, in_channels=3, small_stem=False))
    ref = getattr(torchvision.models, name)(weights=None)
    result = ref.load_state_dict(ours.state_dict(), strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and result.unexpected_keys == []
    ref.fc = nn.Identity()
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_small_stem_resnet_keeps_torchvision_names():
    ours, _ = build_backbone(BackboneConfig(name="resnet18", in_channels=1, small_stem=True))
    ref = torchvision.models.resnet18(weights=None)
    ref.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    ref.maxpool = nn.Identity()
    result = ref.load_state_dict(ours.state_dict(), strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and result.unexpected_keys == []


def test_zero_init_residual():
    net, _ = build_backbone(BackboneConfig(name="resnet18", small_stem=False, zero_init_residual=True))
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for layer in (net.layer1, net.layer4) for b in layer)


@pytest.mark.parametrize("size", [16, 28, 32, 64])
@pytest.mark.parametrize("small_stem", [True, False])
def test_convnet_shapes_and_width(size, small_stem):
    net, dim = build_backbone(BackboneConfig(name="convnet", in_channels=1, width=8, small_stem=small_stem))
    assert dim == 32
    out = net(torch.randn(4, 1, size, size))
    assert out.shape == (4, 32)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(
    "kwargs, key",
    [({"name": "vgg"}, "backbone.name"), ({"in_channels": 2}, "backbone.in_channels"),
     ({"width": 0}, "backbone.width")],
)
def test_backbone_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        BackboneConfig(**kwargs)


def test_projection_and_prediction_layout():
    proj = projection_mlp(32, 64, 16, num_layers=3, last_bn=True)
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert proj[-1].affine is False and proj[-2].bias is None and proj[0].bias is None
    pred = prediction_mlp(16, 8, 16)
    assert [type(m).__name__ for m in pred] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert pred[-1].bias is not None
    assert proj(torch.randn(5, 32)).shape == (5, 16) and pred(torch.randn(5, 16)).shape == (5, 16)
    with pytest.raises(ValueError, match="num_layers"):
        projection_mlp(32, 64, 16, num_layers=0)
    with pytest.raises(ValueError, match="hidden_dim"):
        prediction_mlp(16, 0, 16)


@pytest.mark.parametrize("branch", ["online", "target"])
def test_sem_rows_sum_to_one_per_simplex(branch):
    torch.manual_seed(0)
    head = SEMHead(24, SEMConfig(enabled=True, num_simplices=7, simplex_dim=5))
    out = head(torch.randn(6, 24), branch=branch)
    assert out.shape == (6, 35)
    assert (out >= 0).all()
    torch.testing.assert_close(out.view(6, 7, 5).sum(-1), torch.ones(6, 7))


def test_sem_temperatures_and_normalisation():
    torch.manual_seed(0)
    head = SEMHead(16, SEMConfig(enabled=True, num_simplices=4, simplex_dim=6, tau_online=0.3, tau_target=5.0))
    x = torch.randn(32, 16)
    on, tgt = head(x, "online").view(32, 4, 6), head(x, "target").view(32, 4, 6)

    def entropy(p):
        return -(p * p.clamp_min(1e-12).log()).sum(-1).mean()

    assert entropy(tgt) > entropy(on)  # the target's larger τ gives softer simplices
    logits = head.bn(head.linear(x)).view(32, 4, 6)
    torch.testing.assert_close(on, torch.softmax(logits / 0.3, -1))
    assert isinstance(head.bn, nn.BatchNorm1d) and head.linear.bias is None
    with pytest.raises(ValueError, match="branch"):
        head(x, "teacher")


@pytest.mark.parametrize(
    "kwargs, key",
    [({"num_simplices": 0}, "sem.num_simplices"), ({"simplex_dim": 1}, "sem.simplex_dim"),
     ({"tau_online": 0.0}, "sem.tau_online"), ({"tau_target": -1.0}, "sem.tau_target")],
)
def test_sem_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        SEMConfig(**kwargs)
