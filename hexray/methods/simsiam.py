"""SimSiam (Chen & He 2021): BYOL without a momentum encoder; the stop-gradient alone prevents collapse.

    L = ½·[D(p1, sg(z2)) + D(p2, sg(z1))],  D(p, z) = 2 − 2cos(p, z)  (an affine rescaling of SimSiam's −cos)

With HEX enabled: L = α·L_HEX(z1, z2) + (1 − α)·L_SimSiam on the projections.
"""

from __future__ import annotations

from hexray.losses import LossOutput, cosine_regression_loss
from hexray.methods.base import SSLMethod
from hexray.methods.registry import register_method
from hexray.models import prediction_mlp, projection_mlp


@register_method("simsiam")
class SimSiam(SSLMethod):
    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.sem, dim = self.make_sem()
        self.projector = projection_mlp(dim, method.proj_hidden_dim, method.proj_output_dim, 3, last_bn=True)
        dim = method.proj_output_dim
        self.predictor = prediction_mlp(dim, method.pred_hidden_dim, dim, 2)

    def compute(self, view1, view2, *, epoch, superclass) -> LossOutput:
        e1, z1 = self.project_online(view1)
        _, z2 = self.project_online(view2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = (cosine_regression_loss(p1, z2.detach()) + cosine_regression_loss(p2, z1.detach())) / 2
        base = LossOutput(loss=loss, terms={"loss/simsiam": loss.detach()}, features=e1)
        return self.with_hex_auxiliary(base, z1, z2, epoch=epoch, superclass=superclass)
