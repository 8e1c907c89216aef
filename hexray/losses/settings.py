"""Typed settings of the HEX regularizer (design/HEX.md). Pure data: validated here, trusted inside."""

from __future__ import annotations

from dataclasses import dataclass

THRESHOLD_KINDS = ("adaptive", "step", "cosine", "superclass")
HEX_VARIANTS = ("decomposed", "released")


@dataclass
class HexConfig:
    """HEX settings. Symbols follow design/HEX.md.

    threshold: how H(i) is chosen — `adaptive` (ε = mean over rows of the row q-quantile of s_ij),
      `step` / `cosine` (min–max normalised row, δ scheduled over epochs), `superclass` (oracle labels).
    local_weight (w_h), global_weight (w_g), beta (hardness β), temperature (τ).
    variant: `decomposed` (the paper's formula) or `released` (public code: H(i) dropped from the denominator).
    warmup_epochs: plain base loss for the first epochs.
    alpha: weight of the auxiliary HEX term for non-contrastive methods, L = α·L_HEX + (1−α)·L_method.
    """

    enabled: bool = True
    threshold: str = "adaptive"
    quantile: float = 0.99
    start: float = 0.9
    end: float = 0.3
    step_down: float = 0.1
    epoch_step: int = 100
    local_weight: float = 1.0
    global_weight: float = 1.0
    beta: float = 1.0
    temperature: float = 0.1
    variant: str = "decomposed"
    warmup_epochs: int = 10
    alpha: float = 0.1

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLD_KINDS:
            raise ValueError(f"hex.threshold must be one of {THRESHOLD_KINDS}, got {self.threshold!r}")
        if self.variant not in HEX_VARIANTS:
            raise ValueError(f"hex.variant must be one of {HEX_VARIANTS}, got {self.variant!r}")
        for name in ("local_weight", "global_weight", "beta", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"hex.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"hex.quantile must be in (0, 1), got {self.quantile!r}")
        for name in ("start", "end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"hex.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.step_down < 0 or self.epoch_step < 1:
            raise ValueError("hex.step_down must be >= 0 and hex.epoch_step >= 1")
        if self.temperature <= 0:
            raise ValueError(f"hex.temperature must be > 0, got {self.temperature!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"hex.alpha must be in [0, 1], got {self.alpha!r}")
