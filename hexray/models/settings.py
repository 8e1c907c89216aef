"""Typed settings of the backbone and the SEM head (design/HEX.md, "SEM"). Pure data: validated here, trusted inside."""

from __future__ import annotations

from dataclasses import dataclass

BACKBONE_NAMES = ("resnet18", "resnet50", "convnet")


@dataclass
class BackboneConfig:
    """Which encoder maps (B, C, H, W) images to (B, feature_dim) features.

    name: `resnet18` / `resnet50` (torchvision, `fc` removed) or `convnet` (tiny, fast on CPU; the 2-core default).
    in_channels: 1 (grayscale, e.g. Fashion-MNIST) or 3.
    small_stem: for 28–64 px inputs: ResNets get a 3×3 stride-1 first conv and no max-pool (the CIFAR stem);
      the convnet keeps full resolution in its first block instead of starting with a stride-2 conv.
    width: convnet channels of the first block; blocks double it (width, 2·width, 4·width → feature_dim 4·width).
    zero_init_residual: ResNets start each residual block as the identity (last BN's γ = 0; Goyal et al. 2017).
    """

    name: str = "convnet"
    in_channels: int = 3
    small_stem: bool = True
    width: int = 32
    zero_init_residual: bool = False

    def __post_init__(self) -> None:
        if self.name not in BACKBONE_NAMES:
            raise ValueError(f"backbone.name must be one of {BACKBONE_NAMES}, got {self.name!r}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"backbone.in_channels must be 1 or 3, got {self.in_channels!r}")
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"backbone.width must be an integer >= 1, got {self.width!r}")


@dataclass
class SEMConfig:
    """Simplicial embedding head (Lavoie et al. 2023): L softmax simplices of V dims after the projector.

    Defaults from the paper: L = 100, V = 10, τ_online = 0.3, τ_target = 5.0 (target branch of momentum methods).
    """

    enabled: bool = False
    num_simplices: int = 100
    simplex_dim: int = 10
    tau_online: float = 0.3
    tau_target: float = 5.0

    def __post_init__(self) -> None:
        for name in ("num_simplices", "simplex_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"sem.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.simplex_dim < 2:
            raise ValueError(f"sem.simplex_dim must be >= 2 (a 1-dim softmax is constant), got {self.simplex_dim}")
        for name in ("tau_online", "tau_target"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sem.{name} must be > 0, got {getattr(self, name)!r}")

    @property
    def output_dim(self) -> int:
        """L·V, the width of the concatenated simplices."""
        return self.num_simplices * self.simplex_dim
