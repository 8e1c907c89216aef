"""Barlow Twins (Zbontar et al. 2021): drive the cross-correlation of the two views' embeddings to the identity.

Embeddings are gathered with gradient, so the batch normalisation and the correlation matrix are those of the
global batch; every worker computes the same global loss. With HEX enabled (reference code: α = 0.1):
L = α·L_HEX(z1, z2) + (1 − α)·L_Barlow.
"""

from __future__ import annotations

from hexray.distributed import gather_with_grad
from hexray.losses import LossOutput, barlow_twins_loss
from hexray.methods.base import SSLMethod
from hexray.methods.registry import register_method
from hexray.models import projection_mlp


@register_method("barlow")
class BarlowTwins(SSLMethod):
    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.sem, dim = self.make_sem()
        self.projector = projection_mlp(dim, method.proj_hidden_dim, method.proj_output_dim, 3)
        self.embed_dim = method.proj_output_dim

    def compute(self, view1, view2, *, epoch, superclass) -> LossOutput:
        e1, z1 = self.project_online(view1)
        _, z2 = self.project_online(view2)
        base = barlow_twins_loss(gather_with_grad(z1), gather_with_grad(z2), self.cfg.barlow_lambda)
        base.features = e1
        return self.with_hex_auxiliary(base, z1, z2, epoch=epoch, superclass=superclass)
