"""VICReg (Bardes, Ponce, LeCun 2022): invariance + variance + covariance on the expander outputs.

Embeddings are gathered with gradient so variance and covariance are those of the global batch (as the official
code's FullGatherLayer does); every worker computes the same global loss. With HEX enabled:
L = α·L_HEX(z1, z2) + (1 − α)·L_VICReg.
"""

from __future__ import annotations

from hexray.distributed import gather_with_grad
from hexray.losses import LossOutput, vicreg_loss
from hexray.methods.base import SSLMethod
from hexray.methods.registry import register_method
from hexray.models import projection_mlp


@register_method("vicreg")
class VICReg(SSLMethod):
    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.sem, dim = self.make_sem()
        self.projector = projection_mlp(dim, method.proj_hidden_dim, method.proj_output_dim, 3)
        self.embed_dim = method.proj_output_dim

    def compute(self, view1, view2, *, epoch, superclass) -> LossOutput:
        e1, z1 = self.project_online(view1)
        _, z2 = self.project_online(view2)
        c = self.cfg
        base = vicreg_loss(gather_with_grad(z1), gather_with_grad(z2), c.vicreg_sim_coeff, c.vicreg_var_coeff,
                           c.vicreg_cov_coeff)
        base.features = e1
        return self.with_hex_auxiliary(base, z1, z2, epoch=epoch, superclass=superclass)
