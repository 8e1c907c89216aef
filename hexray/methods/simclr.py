"""SimCLR (Chen et al. 2020): NT-Xent between the projections of two views over the global batch.

With HEX enabled the NT-Xent denominator is replaced by HEX's local/global decomposition (design/HEX.md).
"""

from __future__ import annotations

from hexray.losses import LossOutput
from hexray.methods.base import SSLMethod
from hexray.methods.registry import register_method
from hexray.models import projection_mlp


@register_method("simclr")
class SimCLR(SSLMethod):
    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.projector = projection_mlp(self.feature_dim, method.proj_hidden_dim, method.proj_output_dim, 2)
        self.sem, self.embed_dim = self.make_sem(method.proj_output_dim)

    def embed(self, x):
        h = self.backbone(x)
        z = self.projector(h)
        return h, (z if self.sem is None else self.sem(z, "online"))

    def compute(self, view1, view2, *, epoch, superclass) -> LossOutput:
        h1, z1 = self.embed(view1)
        _, z2 = self.embed(view2)
        out = self.global_pairs(z1, z2, epoch=epoch, superclass=superclass)
        out.features = h1
        return out
