"""Typed settings of an SSL method (heads, temperature, momentum, queue, per-loss coefficients)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MethodConfig:
    """One SSL method and its head sizes. Fields a method does not use are ignored by it.

    name: a key of `hexray.methods.registry.METHODS` (simclr, moco, nnclr, byol, simsiam, vicreg, barlow).
    proj_hidden_dim / proj_output_dim: projector MLP widths (layer counts follow each method's paper).
    pred_hidden_dim: predictor MLP hidden width (moco, nnclr, byol, simsiam).
    temperature: InfoNCE τ of simclr/moco/nnclr when HEX is off (HEX uses `hex.temperature`).
    momentum_base → momentum_final: EMA coefficient of the target network, cosine schedule over training
      progress (BYOL eq. in §3.2; MoCo v3 §4).
    queue_size: NNCLR support-set size.
    vicreg_*: VICReg λ, μ, ν. barlow_lambda: Barlow Twins off-diagonal weight λ.
    options: the method's own settings, declared by its class (`SSLMethod.Options`, a dataclass in the method's
      file; e.g. dino's local_crops); unknown keys and bad values are named when the config is loaded.
    """

    name: str = "simclr"
    proj_hidden_dim: int = 512
    proj_output_dim: int = 128
    pred_hidden_dim: int = 512
    temperature: float = 0.1
    momentum_base: float = 0.99
    momentum_final: float = 1.0
    queue_size: int = 4096
    vicreg_sim_coeff: float = 25.0
    vicreg_var_coeff: float = 25.0
    vicreg_cov_coeff: float = 1.0
    barlow_lambda: float = 5e-3
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"method.name must be a non-empty string, got {self.name!r}")
        for name in ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim", "queue_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"method.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not self.temperature > 0:
            raise ValueError(f"method.temperature must be > 0, got {self.temperature!r}")
        if not 0.0 <= self.momentum_base <= 1.0:
            raise ValueError(f"method.momentum_base must be in [0, 1], got {self.momentum_base!r}")
        if not self.momentum_base <= self.momentum_final <= 1.0:
            raise ValueError(
                f"method.momentum_final must be in [momentum_base={self.momentum_base}, 1], got {self.momentum_final!r}"
            )
        for name in ("vicreg_sim_coeff", "vicreg_var_coeff", "vicreg_cov_coeff", "barlow_lambda"):
            if getattr(self, name) < 0:
                raise ValueError(f"method.{name} must be >= 0, got {getattr(self, name)!r}")
