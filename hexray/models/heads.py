"""Projector and predictor MLPs: [Linear → BN → ReLU] × (layers − 1) → Linear (→ BN without affine)."""

from __future__ import annotations

from torch import nn


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, last_bn: bool, what: str) -> nn.Sequential:
    for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim),
                        ("num_layers", num_layers)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} {name} must be an integer >= 1, got {value!r}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def projection_mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False
) -> nn.Sequential:
    """Projector g(·) on backbone features (SimCLR: 2 layers; MoCo v3, SimSiam, VICReg, Barlow: 3 layers).

    Hidden layers have no bias (BN follows). `last_bn` ends with a non-affine BN, as MoCo v3 and SimSiam do.
    """
    return _mlp(in_dim, hidden_dim, out_dim, num_layers, last_bn, "projector")


def prediction_mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False
) -> nn.Sequential:
    """Predictor q(·) of the online branch (BYOL, SimSiam, MoCo v3, NNCLR): a 2-layer MLP by default."""
    return _mlp(in_dim, hidden_dim, out_dim, num_layers, last_bn, "predictor")
