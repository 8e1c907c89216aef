"""NNCLR (Dwibedi et al. 2021): the positive of view 1 is its nearest neighbour in a support queue.

    L = ½·[ctr(NN(z1), p2) + ctr(NN(z2), p1)],  NN(z) = argmax_{q∈Q} z·q,  p = predictor(z)

The queue Q (a buffer, so checkpoints keep it) holds L2-normalised projections of past batches, filled with the
global batch's view-1 projections after each training step. Anchors NN(·) carry no gradient; predictions are
gathered with gradient, so every worker computes the same global loss. With HEX enabled, ctr is HEX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hexray.distributed import gather_no_grad, gather_with_grad
from hexray.losses import LossOutput
from hexray.methods.base import SSLMethod
from hexray.methods.registry import register_method
from hexray.models import prediction_mlp, projection_mlp


@register_method("nnclr")
class NNCLR(SSLMethod):
    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.sem, dim = self.make_sem()
        self.projector = projection_mlp(dim, method.proj_hidden_dim, method.proj_output_dim, 3)
        dim = method.proj_output_dim
        self.predictor = prediction_mlp(dim, method.pred_hidden_dim, dim, 2)
        self.register_buffer("queue", F.normalize(torch.randn(method.queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def nearest_neighbour(self, z: torch.Tensor) -> torch.Tensor:
        """Row i: the queue entry most similar to z_i (z L2-normalised)."""
        return self.queue[(z @ self.queue.T).argmax(dim=1)]

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Write the rows of `z` into the ring buffer at `queue_ptr` (the newest `queue_size` rows if more)."""
        size = self.queue.shape[0]
        z = z[-size:].to(self.queue.dtype)
        idx = (self.queue_ptr + torch.arange(z.shape[0], device=z.device)) % size
        self.queue[idx] = z
        self.queue_ptr.copy_((self.queue_ptr + z.shape[0]) % size)

    def compute(self, view1, view2, *, epoch, superclass) -> LossOutput:
        e1, z1 = self.project_online(view1)
        _, z2 = self.project_online(view2)
        z1n, z2n = F.normalize(z1.detach(), dim=1), F.normalize(z2.detach(), dim=1)
        nn1 = gather_no_grad(self.nearest_neighbour(z1n))
        nn2 = gather_no_grad(self.nearest_neighbour(z2n))
        p1 = gather_with_grad(F.normalize(self.predictor(z1), dim=1))
        p2 = gather_with_grad(F.normalize(self.predictor(z2), dim=1))
        labels = None if superclass is None else gather_no_grad(superclass)
        pos = torch.arange(p1.shape[0], device=p1.device)
        a = self.contrastive(nn1, p2, pos, None, epoch=epoch, labels_anchor=labels, labels_candidates=labels)
        b = self.contrastive(nn2, p1, pos, None, epoch=epoch, labels_anchor=labels, labels_candidates=labels)
        if self.training:
            self.enqueue(gather_no_grad(z1n))
        terms = {k: (a.terms[k] + b.terms[k]) / 2 for k in a.terms}
        return LossOutput(loss=(a.loss + b.loss) / 2, terms=terms, features=e1)
