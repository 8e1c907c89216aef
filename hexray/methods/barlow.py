"""Barlow Twins (Zbontar et al. 2021): drive the cross-correlation of the two views' embeddings to the identity.

The correlation matrix is the global batch's (`GatheredPairMethod`). With HEX enabled (reference code: α = 0.1):
L = α·L_HEX(z1, z2) + (1 − α)·L_Barlow.
"""

from __future__ import annotations

from hexray.losses import LossOutput, barlow_twins_loss
from hexray.methods.gathered_pair import GatheredPairMethod
from hexray.methods.registry import register_method


@register_method("barlow")
class BarlowTwins(GatheredPairMethod):
    def pair_loss(self, z1, z2) -> LossOutput:  # noqa: ANN001
        return barlow_twins_loss(z1, z2, self.cfg.barlow_lambda)
