"""DINO (Caron et al. 2021): a student matches a momentum teacher's centred, sharpened distribution over K
prototypes, across views: every student crop (2 global + `local_crops` local) against each teacher global crop
other than itself.

    L = mean over pairs (g, v), g ∈ global, v ≠ g:  −Σ_k q_g,k · log softmax(s_v / τ_s)_k,
    q_g = softmax((t_g − c) / τ_t),   c ← m_c·c + (1 − m_c)·mean_batch(t)   (centring; t from the teacher)

Logged: `dino/teacher_entropy` and `dino/kl` (their sum is the loss), the two numbers that tell DINO's collapse
modes apart. Its own settings (`method.options`: local crops, K, teacher temperatures, centre momentum) are
`DINOOptions` below. τ_t rises linearly from `teacher_temperature_start` to `teacher_temperature` over the first
`teacher_temperature_warmup_epochs`; the teacher is an EMA of the student (`on_after_step`). With HEX enabled:
L = α·L_HEX(z1, z2) + (1 − α)·L_DINO on the student's bottleneck embeddings of the two global crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hexray.distributed import gather_no_grad
from hexray.losses import LossOutput
from hexray.methods.base import SSLMethod, ViewSpec
from hexray.methods.registry import register_method


@dataclass
class DINOOptions:
    """`method.options` of dino. local_crops: small crops besides the two global ones (multi-crop); out_dim:
    prototypes K; teacher_temperature_start → teacher_temperature, linear over teacher_temperature_warmup_epochs;
    center_momentum: EMA of the teacher's mean output. The student's temperature is `method.temperature`, the
    head's hidden/bottleneck widths `method.proj_hidden_dim` / `method.proj_output_dim`."""

    local_crops: int = 6
    out_dim: int = 4096
    teacher_temperature_start: float = 0.04
    teacher_temperature: float = 0.07
    teacher_temperature_warmup_epochs: int = 30
    center_momentum: float = 0.9

    def __post_init__(self) -> None:
        for name in ("local_crops", "teacher_temperature_warmup_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.out_dim, int) or self.out_dim < 1:
            raise ValueError(f"out_dim must be an integer >= 1, got {self.out_dim!r}")
        for name in ("teacher_temperature_start", "teacher_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.center_momentum < 1.0:
            raise ValueError(f"center_momentum must be in [0, 1), got {self.center_momentum!r}")


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
    Options = DINOOptions

    @classmethod
    def view_spec(cls, method) -> ViewSpec:  # noqa: ANN001
        return ViewSpec(local_crops=cls.options_of(method).local_crops)

    def __init__(self, method, backbone, hex, sem, max_epochs) -> None:
        super().__init__(method, backbone, hex, sem, max_epochs)
        self.sem, dim = self.make_sem()
        o = self.options
        self.projector = DINOHead(dim, method.proj_hidden_dim, method.proj_output_dim, o.out_dim)
        self.add_target("backbone", "target_backbone")
        self.add_target("projector", "target_projector")
        if self.sem is not None:
            self.add_target("sem", "target_sem")
        self.register_buffer("center", torch.zeros(1, o.out_dim))
        self.max_epochs = max_epochs

    def teacher_temperature(self, epoch: int) -> float:
        c = self.options
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
                m = self.options.center_momentum
                self.center.mul_(m).add_(gather_no_grad(teacher).mean(0, keepdim=True), alpha=1.0 - m)
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
