"""Encoders: torchvision ResNet-18/50 (optionally with the small-image stem) and a tiny convnet for CPUs and tests."""

from __future__ import annotations

import torch
from torch import nn

from hexray.models.settings import BACKBONE_NAMES, BackboneConfig

_RESNETS = ("resnet18", "resnet50")


def _resnet(cfg: BackboneConfig) -> tuple[nn.Module, int]:
    """torchvision ResNet with `fc` = Identity, so its state dict loads into torchvision's model minus `fc`.

    The small stem (3×3 stride-1 conv, no max-pool) keeps 28–64 px inputs from shrinking 4× before the first
    block, as in the CIFAR ResNets of SimCLR/solo-learn. Parameter names stay torchvision's.
    """
    import torchvision  # here, not at the top: importing it costs every process 2-3 s (it imports torch._dynamo)

    model = getattr(torchvision.models, cfg.name)(weights=None, zero_init_residual=cfg.zero_init_residual)
    if cfg.small_stem:
        model.conv1 = nn.Conv2d(cfg.in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif cfg.in_channels != 3:
        model.conv1 = nn.Conv2d(cfg.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    return model, feature_dim


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvNet(nn.Module):
    """Three conv-BN-ReLU blocks of width w, 2w, 4w (the last two stride 2), global average pool → 4w features.

    With `small_stem` the first block runs at full resolution (28–64 px); without it the first block has stride 2,
    which quarters the cost for larger inputs. Small enough to train hundreds of images/s on two CPU cores.
    """

    def __init__(self, in_channels: int, width: int, small_stem: bool) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w, 1 if small_stem else 2),
            *_conv_bn_relu(w, 2 * w, 2),
            *_conv_bn_relu(2 * w, 4 * w, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 4 * w
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build_backbone(cfg: BackboneConfig) -> tuple[nn.Module, int]:
    """Build the encoder named by `cfg.name`; returns (module mapping (B, C, H, W) → (B, F), F)."""
    if cfg.name in _RESNETS:
        return _resnet(cfg)
    if cfg.name == "convnet":
        net = ConvNet(cfg.in_channels, cfg.width, cfg.small_stem)
        return net, net.feature_dim
    raise ValueError(f"backbone.name must be one of {BACKBONE_NAMES}, got {cfg.name!r}")
