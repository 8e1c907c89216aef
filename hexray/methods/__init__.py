"""SSL methods, one file each, registered by name: simclr, moco, nnclr, byol, simsiam, vicreg, barlow, dino.

    from hexray.methods import MethodConfig, build_method
    from hexray.models import BackboneConfig, SEMConfig
    from hexray.losses import HexConfig
    method = build_method(MethodConfig(name="simclr"), BackboneConfig(), HexConfig(), SEMConfig(), max_epochs=100)
    out = method(view1, view2, epoch=0)          # out.loss, out.terms
"""

from hexray.methods import barlow, byol, dino, moco, nnclr, simclr, simsiam, vicreg  # noqa: F401  (registers them)
from hexray.methods.base import SSLMethod, momentum_at
from hexray.methods.registry import METHODS, build_method, register_method
from hexray.methods.settings import MethodConfig

__all__ = ["METHODS", "MethodConfig", "SSLMethod", "build_method", "momentum_at", "register_method"]
