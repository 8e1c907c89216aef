"""The shape Barlow Twins and VICReg share: one projector (3 layers) on both views, a loss over the *global*
batch's projections, and HEX as an auxiliary term (L = α·L_HEX + (1 − α)·L_method, design/HEX.md).

Embeddings are gathered with gradient, so batch statistics (Barlow's normalisation and correlation, VICReg's
variance and covariance) are those of the global batch, as the official code's FullGatherLayer does; every
worker computes the same global loss. A subclass only says which loss: `pair_loss(z1, z2)`.
"""

from __future__ import annotations

import torch

from hexray.distributed import gather_with_grad
from hexray.losses import LossOutput
from hexray.methods.base import SSLMethod
from hexray.models import projection_mlp


class GatheredPairMethod(SSLMethod):
    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:  # noqa: ANN001
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.sem, dim = self.make_sem()
        self.projector = projection_mlp(dim, method.proj_hidden_dim, method.proj_output_dim, 3)
        self.embed_dim = method.proj_output_dim

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        """The method's loss on the two views' projections of the global batch."""
        raise NotImplementedError

    def compute(self, view1, view2, *, epoch, superclass) -> LossOutput:  # noqa: ANN001
        e1, z1 = self.project_online(view1)
        _, z2 = self.project_online(view2)
        base = self.pair_loss(gather_with_grad(z1), gather_with_grad(z2))
        base.features = e1
        return self.with_hex_auxiliary(base, z1, z2, epoch=epoch, superclass=superclass)
