"""SimCLR (Chen et al. 2020): NT-Xent between the projections of two views over the global batch.

With HEX enabled the NT-Xent denominator is replaced by HEX's local/global decomposition (design/HEX.md).
With SEM: backbone → SEM (view 1 at τ_online, view 2 at τ_target) → projector → loss.
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
        self.sem, dim = self.make_sem()
        self.projector = projection_mlp(dim, method.proj_hidden_dim, method.proj_output_dim, 2)
        self.embed_dim = method.proj_output_dim

    def compute(self, view1, view2, *, epoch, superclass) -> LossOutput:
        e1, z1 = self.project_online(view1, "online")
        _, z2 = self.project_online(view2, "target")  # SEM: the second view at τ_target (the SEM code's SimCLR)
        out = self.global_pairs(z1, z2, epoch=epoch, superclass=superclass)
        out.features = e1
        return out
