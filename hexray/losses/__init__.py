"""Pure-PyTorch SSL losses and the HEX regularizer (design/HEX.md). No Ray, no I/O."""

from hexray.losses.barlow import barlow_twins_loss
from hexray.losses.base import LossOutput
from hexray.losses.byol import cosine_regression_loss
from hexray.losses.hex_loss import HEXLoss
from hexray.losses.infonce import dcl, info_nce, nt_xent
from hexray.losses.settings import HexConfig
from hexray.losses.thresholds import (
    THRESHOLDS,
    AdaptiveQuantileThreshold,
    CompoundCosineThreshold,
    CosineThreshold,
    NoThreshold,
    StepThreshold,
    SuperclassThreshold,
    ThresholdResult,
    build_threshold,
)
from hexray.losses.vicreg import vicreg_loss

__all__ = [
    "THRESHOLDS", "AdaptiveQuantileThreshold", "CompoundCosineThreshold", "CosineThreshold", "HEXLoss", "HexConfig",
    "LossOutput", "NoThreshold",
    "StepThreshold", "SuperclassThreshold", "ThresholdResult", "barlow_twins_loss", "build_threshold",
    "cosine_regression_loss", "dcl", "info_nce", "nt_xent", "vicreg_loss",
]
