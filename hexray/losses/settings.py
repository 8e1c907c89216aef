"""Typed settings of the HEX regularizer (design/HEX.md). Pure data: validated here, trusted inside."""

from __future__ import annotations

from dataclasses import dataclass

THRESHOLD_KINDS = ("adaptive", "step", "cosine", "cosine_compound", "superclass", "superclass_siblings",
                   "none")
HEX_VARIANTS = ("released", "decomposed")
QUANTILE_OVER = ("full_row", "negatives")
NEGATIVE_SCOPES = ("global", "local")
WARMUP_MODES = ("exclusive", "inclusive")


@dataclass
class HexConfig:
    """HEX settings. Symbols follow design/HEX.md.

    threshold: how H(i) is chosen — `adaptive` (ε = mean over rows of the row q-quantile, `nearest`),
      `step` / `cosine` / `cosine_compound` (min–max normalised row, δ scheduled over epochs), `superclass`
      (oracle: the anchor's superclass), `superclass_siblings` (oracle: its superclass less its own class, which
      needs fine labels), `none` (H always empty: with `released` this is DCL, i.e. ε = +∞).
    quantile_over: the values the row quantile (adaptive) and the min–max (step, cosine) are taken over:
      `full_row` (the reference code: self s_ii = 1 and the positive included) or `negatives` (an option).
    variant: `released` (the reference code: L_i = −ℓ_ip + log Σ_G e^{ℓ}, positive and H(i) out of the
      denominator) or `decomposed` (the paper's general form with w_g, w_h, β).
    positive_in_denominator: `decomposed` only; keeps e^{ℓ_ip} in the denominator (true: NT-Xent at w = 1, β = 0).
    local_weight (w_h), global_weight (w_g), beta (hardness β), temperature (τ): `decomposed` only.
    negatives: `global` (embeddings gathered over all workers) or `local` (each worker's own batch: the
      reference code, whose effective batch comes from gradient accumulation).
    warmup_epochs / warmup_mode: the plain base loss while epoch < warmup_epochs (`exclusive`) or while
      epoch <= warmup_epochs (`inclusive`: the reference code's `epoch <= warm_epoch`, warmup_epochs + 1 epochs).
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
    variant: str = "released"
    positive_in_denominator: bool = True
    quantile_over: str = "full_row"
    negatives: str = "global"
    warmup_epochs: int = 10
    warmup_mode: str = "inclusive"
    alpha: float = 0.1

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLD_KINDS:
            raise ValueError(f"hex.threshold must be one of {THRESHOLD_KINDS}, got {self.threshold!r}")
        if self.variant not in HEX_VARIANTS:
            raise ValueError(f"hex.variant must be one of {HEX_VARIANTS}, got {self.variant!r}")
        for name, allowed in (("quantile_over", QUANTILE_OVER), ("negatives", NEGATIVE_SCOPES),
                              ("warmup_mode", WARMUP_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"hex.{name} must be one of {allowed}, got {getattr(self, name)!r}")
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

    def in_warmup(self, epoch: int) -> bool:
        """Whether `epoch` (0-based) still uses the plain base loss."""
        if self.warmup_mode == "inclusive":
            return self.warmup_epochs > 0 and epoch <= self.warmup_epochs
        return epoch < self.warmup_epochs

    @property
    def positive_in(self) -> bool:
        """Whether e^{ℓ_ip} is part of the denominator (never for `released`)."""
        return self.variant == "decomposed" and self.positive_in_denominator
