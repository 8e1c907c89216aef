"""VICReg (Bardes, Ponce, LeCun 2022): invariance + variance + covariance on the expander outputs.

Variance and covariance are the global batch's (`GatheredPairMethod`). With HEX enabled:
L = α·L_HEX(z1, z2) + (1 − α)·L_VICReg.
"""

from __future__ import annotations

from hexray.losses import LossOutput, vicreg_loss
from hexray.methods.gathered_pair import GatheredPairMethod
from hexray.methods.registry import register_method


@register_method("vicreg")
class VICReg(GatheredPairMethod):
    def pair_loss(self, z1, z2) -> LossOutput:  # noqa: ANN001
        c = self.cfg
        return vicreg_loss(z1, z2, c.vicreg_sim_coeff, c.vicreg_var_coeff, c.vicreg_cov_coeff)
