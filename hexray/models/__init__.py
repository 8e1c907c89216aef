"""Pure-PyTorch encoders and heads: ResNet/convnet backbones, projector/predictor MLPs, the SEM head."""

from hexray.models.backbones import ConvNet, build_backbone
from hexray.models.heads import prediction_mlp, projection_mlp
from hexray.models.sem import SEMHead
from hexray.models.settings import BACKBONE_NAMES, BackboneConfig, SEMConfig

__all__ = [
    "BACKBONE_NAMES", "BackboneConfig", "ConvNet", "SEMConfig", "SEMHead", "build_backbone", "prediction_mlp",
    "projection_mlp",
]
