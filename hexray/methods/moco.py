"""MoCo v3 (Chen, Xie, He 2021): queries from an online encoder + predictor, keys from a momentum encoder.

    L = ½·[ctr(q1, k2) + ctr(q2, k1)],  ctr(q, k) = InfoNCE of q_i against the global batch of keys, positive k_i

Keys carry no gradient (gathered without it); queries are gathered with gradient, so every worker computes the
same global loss. With HEX enabled, ctr is HEX: H(i) is chosen among the other images' keys.
(MoCo v3 also scales the loss by 2τ to match its learning rates; hexray leaves that to the optimiser settings.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hexray.distributed import gather_no_grad, gather_with_grad
from hexray.losses import LossOutput
from hexray.methods.base import SSLMethod
from hexray.methods.registry import register_method
from hexray.models import prediction_mlp, projection_mlp


@register_method("moco")
class MoCoV3(SSLMethod):
    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.sem, dim = self.make_sem()
        self.projector = projection_mlp(dim, method.proj_hidden_dim, method.proj_output_dim, 3, last_bn=True)
        dim = method.proj_output_dim
        self.predictor = prediction_mlp(dim, method.pred_hidden_dim, dim, 2, last_bn=True)
        self.add_target("backbone", "target_backbone")
        self.add_target("projector", "target_projector")
        if self.sem is not None:
            self.add_target("sem", "target_sem")

    def _query(self, x):
        e, z = self.project_online(x)
        return e, F.normalize(self.predictor(z), dim=1)

    @torch.no_grad()
    def _key(self, x):
        return gather_no_grad(F.normalize(self.encode_target(x), dim=1))

    def _ctr(self, q, k, epoch, labels) -> LossOutput:
        pos = torch.arange(q.shape[0], device=q.device)
        return self.contrastive(q, k, pos, None, epoch=epoch, labels_anchor=labels, labels_candidates=labels)

    def compute(self, view1, view2, *, epoch, superclass) -> LossOutput:
        e1, q1 = self._query(view1)
        _, q2 = self._query(view2)
        k1, k2 = self._key(view1), self._key(view2)
        q1, q2 = gather_with_grad(q1), gather_with_grad(q2)
        labels = None if superclass is None else gather_no_grad(superclass)
        a, b = self._ctr(q1, k2, epoch, labels), self._ctr(q2, k1, epoch, labels)
        terms = {k: (a.terms[k] + b.terms[k]) / 2 for k in a.terms}
        return LossOutput(loss=(a.loss + b.loss) / 2, terms=terms, features=e1)
