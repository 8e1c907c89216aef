"""DINO (Caron et al. 2021): a student matches a momentum teacher's centred, sharpened distribution over K
prototypes, across views: every student crop (2 global + `local_crops` local) against each teacher global crop
other than itself.

    L = mean over pairs (g, v), g ∈ global, v ≠ g:  −Σ_k q_g,k · log softmax(s_v / τ_s)_k,
    q_g = softmax((t_g − c) / τ_t),   c ← m_c·c + (1 − m_c)·mean_batch(t)   (centring; t from the teacher)

Logged: `dino/teacher_entropy` and `dino/kl` (their sum is the loss), the two numbers that tell DINO's collapse
modes apart. τ_t rises linearly from `teacher_temperature_start` to `teacher_temperature` over the first
`teacher_temperature_warmup_epochs`; the teacher is an EMA of the student (`on_after_step`). With HEX enabled:
L = α·L_HEX(z1, z2) + (1 − α)·L_DINO on the student's bottleneck embeddings of the two global crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hexray.distributed import gather_no_grad
from hexray.losses import LossOutput
from hexray.methods.base import SSLMethod, ViewSpec
from hexray.methods.registry import register_method


class DINOHead(nn.Module):
    """3-layer MLP (GELU) to an L2-normalised bottleneck, then a weight-normalised linear layer onto K prototypes
    whose norms stay 1 (DINO's `norm_last_layer`)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        self.prototypes = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.prototypes.parametrizations.weight.original0
        gain.data.fill_(1.0)
        gain.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bottleneck embedding z, prototype logits)."""
        z = self.mlp(x)
        return z, self.prototypes(F.normalize(z, dim=-1))


@register_method("dino")
class DINO(SSLMethod):
    @classmethod
    def view_spec(cls, method) -> ViewSpec:  # noqa: ANN001
        return ViewSpec(local_crops=method.local_crops)

    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.sem, dim = self.make_sem()
        self.projector = DINOHead(dim, method.proj_hidden_dim, method.proj_output_dim, method.out_dim)
        self.add_target("backbone", "target_backbone")
        self.add_target("projector", "target_projector")
        if self.sem is not None:
            self.add_target("sem", "target_sem")
        self.register_buffer("center", torch.zeros(1, method.out_dim))
        self.max_epochs = max_epochs

    def teacher_temperature(self, epoch: int) -> float:
        c = self.cfg
        warm = min(c.teacher_temperature_warmup_epochs, self.max_epochs)
        if epoch >= warm:
            return c.teacher_temperature
        return c.teacher_temperature_start + (c.teacher_temperature - c.teacher_temperature_start) * epoch / warm

    def compute(self, view1, view2, *, epoch, superclass, local_views=()) -> LossOutput:
        b = view1.shape[0]
        e_global = self.encode(torch.cat([view1, view2]))
        z_global, s_global = self.projector(e_global)
        student = list(s_global.split(b))
        if local_views:
            student += list(self.projector(self.encode(torch.cat(list(local_views))))[1].split(b))
        with torch.no_grad():
            teacher = self.encode_target(torch.cat([view1, view2]))[1]
            tau_t = self.teacher_temperature(epoch)
            q = F.softmax((teacher - self.center) / tau_t, dim=-1).split(b)
            if self.training:  # like NNCLR's queue: evaluation leaves the state alone
                self.center.mul_(self.cfg.center_momentum).add_(
                    gather_no_grad(teacher).mean(0, keepdim=True), alpha=1.0 - self.cfg.center_momentum)
        log_p = [F.log_softmax(s / self.cfg.temperature, dim=-1) for s in student]
        pairs = [(g, v) for g in range(2) for v in range(len(log_p)) if v != g]
        loss = sum(-(q[g] * log_p[v]).sum(-1).mean() for g, v in pairs) / len(pairs)
        # loss = mean H(q_g) + mean KL(q_g ‖ p_v): a teacher entropy near log K with KL near 0 is the uniform
        # collapse, entropy near 0 the one-prototype collapse (DINO §5.3); early on the entropy rises while the
        # centre catches up with a random teacher, so the KL is the term that shows the student learning
        entropy = torch.stack([-(qg * qg.clamp_min(1e-12).log()).sum(-1).mean() for qg in q]).mean()
        base = LossOutput(loss=loss, features=e_global[:b], terms={
            "loss/dino": loss.detach(), "dino/teacher_temperature": torch.tensor(tau_t, device=loss.device),
            "dino/teacher_entropy": entropy, "dino/kl": loss.detach() - entropy})
        z1, z2 = z_global.split(b)
        return self.with_hex_auxiliary(base, z1, z2, epoch=epoch, superclass=superclass)
