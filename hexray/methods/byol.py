"""BYOL (Grill et al. 2020): an online predictor regresses the momentum target's projection of the other view.

    L_BYOL = ½·[‖p̄1 − z̄2'‖² + ‖p̄2 − z̄1'‖²] = ½·[(2 − 2cos(p1, z2')) + (2 − 2cos(p2, z1'))]

(z' from the target network, no gradient). The loss is a per-image mean, so each worker's local mean averages to
the global one under DDP. With HEX enabled: L = α·L_HEX(z1, z2) + (1 − α)·L_BYOL on the online projections.
"""

from __future__ import annotations

from hexray.losses import LossOutput, cosine_regression_loss
from hexray.methods.base import SSLMethod
from hexray.methods.registry import register_method
from hexray.models import prediction_mlp, projection_mlp


@register_method("byol")
class BYOL(SSLMethod):
    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.sem, dim = self.make_sem()
        self.projector = projection_mlp(dim, method.proj_hidden_dim, method.proj_output_dim, 2)
        dim = method.proj_output_dim
        self.predictor = prediction_mlp(dim, method.pred_hidden_dim, dim, 2)
        self.add_target("backbone", "target_backbone")
        self.add_target("projector", "target_projector")
        if self.sem is not None:
            self.add_target("sem", "target_sem")

    def compute(self, view1, view2, *, epoch, superclass) -> LossOutput:
        e1, z1 = self.project_online(view1)
        _, z2 = self.project_online(view2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = self.encode_target(view1), self.encode_target(view2)
        loss = (cosine_regression_loss(p1, t2) + cosine_regression_loss(p2, t1)) / 2
        base = LossOutput(loss=loss, terms={"loss/byol": loss.detach()}, features=e1)
        return self.with_hex_auxiliary(base, z1, z2, epoch=epoch, superclass=superclass)
