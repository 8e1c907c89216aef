"""SSLMethod: backbone + heads + loss, composed. Shared pieces: input checks, embedding, global contrastive loss
(InfoNCE or HEX), the auxiliary HEX term of non-contrastive methods, and momentum (EMA) target networks.

Distributed layout (see hexray/distributed.py): contrastive losses gather the embeddings of all workers with
gradient and every worker computes the *same* global loss, so HEX's threshold, its statistics and the negatives
are those of the global batch, and DDP's averaged gradient equals the single-process gradient.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hexray.distributed import gather_no_grad, gather_with_grad
from hexray.errors import InputError
from hexray.losses import HexConfig, HEXLoss, LossOutput, info_nce
from hexray.methods.settings import MethodConfig
from hexray.models import BackboneConfig, SEMConfig, SEMHead, build_backbone


def momentum_at(progress: float, base: float, final: float) -> float:
    """EMA coefficient m = final − (final − base)·(1 + cos(π·progress))/2 (BYOL §3.2): base at 0, final at 1."""
    if not (isinstance(progress, (int, float)) and 0.0 <= progress <= 1.0):
        raise ValueError(f"progress must be a number in [0, 1], got {progress!r}")
    return final - (final - base) * (1.0 + math.cos(math.pi * progress)) / 2.0


def pair_layout(b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices for cat(z1, z2) as both anchors and candidates: positive of row i is i ± B, self is i."""
    idx = torch.arange(2 * b, device=device)
    return (idx + b) % (2 * b), idx


@dataclass(frozen=True)
class ViewSpec:
    """The views a method trains on: two global crops (the data recipe's pair) and `local_crops` small crops
    (multi-crop, DINO/SwAV) of `local_size_ratio` × the image size, cropped at `local_scale` of the image."""

    local_crops: int = 0
    local_size_ratio: float = 96 / 224
    local_scale: tuple[float, float] = (0.05, 0.4)

    def __post_init__(self) -> None:
        if self.local_crops < 0:
            raise ValueError(f"local_crops must be >= 0, got {self.local_crops!r}")
        if not 0.0 < self.local_size_ratio <= 1.0:
            raise ValueError(f"local_size_ratio must be in (0, 1], got {self.local_size_ratio!r}")
        if not 0.0 < self.local_scale[0] <= self.local_scale[1] <= 1.0:
            raise ValueError(f"local_scale must be 0 < low <= high <= 1, got {self.local_scale!r}")

    def local_size(self, image_size: int) -> int:
        """Side of a local crop for global crops of `image_size` px (96 for 224, 12 for 28)."""
        return max(8, round(image_size * self.local_size_ratio))


class SSLMethod(nn.Module):
    """Base of every method. Subclasses build their heads in `__init__` and implement `compute`.

    A method declares its views with the classmethod `view_spec(method_cfg)` (default: two global crops);
    `forward(view1, view2, *local_views, epoch, superclass=None) -> LossOutput` checks the inputs and calls
    `compute` (with `local_views=[...]` when the method asks for local crops). `on_after_step(progress)` runs after
    each optimizer step (progress = finished share of training); by default it moves every target network
    registered with `add_target` towards its online twin (momentum/EMA); a method may add queues, centring, ...
    """

    Options: ClassVar[type | None] = None  # a dataclass of the method's own settings, filled from `method.options`

    @classmethod
    def options_of(cls, method: MethodConfig) -> Any:
        """`method.options` as this method's `Options` dataclass (None for a method without options); an unknown
        key or a bad value raises ValueError naming `method.options`."""
        if cls.Options is None:
            if method.options:
                raise ValueError(f"method.options: {method.name} takes no options, got {sorted(method.options)}")
            return None
        known = [f.name for f in dataclasses.fields(cls.Options)]
        unknown = sorted(set(method.options) - set(known))
        if unknown:
            raise ValueError(f"method.options: {method.name} has no option {unknown[0]!r}; its options: "
                             f"{', '.join(known)}")
        try:
            return cls.Options(**method.options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"method.options ({method.name}): {err}") from err

    @classmethod
    def view_spec(cls, method: MethodConfig) -> ViewSpec:  # noqa: ARG003 - subclasses read their settings
        """The views this method needs, known before the model is built (the data layer makes them)."""
        return ViewSpec()

    def on_after_step(self, progress: float) -> None:
        """Called by the train loop after every optimizer step."""
        self.momentum_update(progress)

    def __init__(
        self, method: MethodConfig, backbone: BackboneConfig, hex: HexConfig, sem: SEMConfig, max_epochs: int
    ) -> None:
        super().__init__()
        if not isinstance(max_epochs, int) or max_epochs < 1:
            raise ValueError(f"max_epochs must be an integer >= 1, got {max_epochs!r}")
        self.cfg, self.hex_cfg, self.sem_cfg = method, hex, sem
        self.options = self.options_of(method)
        self.local_crops = self.view_spec(method).local_crops  # once: forward checks every batch against it
        self.in_channels = backbone.in_channels
        self.backbone, self.feature_dim = build_backbone(backbone)
        self.sem: SEMHead | None = None
        self.hex_loss = HEXLoss(hex, max_epochs) if hex.enabled else None
        self._targets: list[tuple[str, str]] = []
        self.momentum = method.momentum_base
        self._diagnostic_classes: torch.Tensor | None = None

    # ----------------------------------------------------------------- building blocks for subclasses
    def make_sem(self) -> tuple[SEMHead | None, int]:
        """The optional SEM embedder on the backbone features — backbone → SEM → projector, where the SEM paper
        puts it — and the width the projector (and the online probe, `probe_dim`) then reads."""
        if not self.sem_cfg.enabled:
            return None, self.feature_dim
        head = SEMHead(self.feature_dim, self.sem_cfg)
        return head, head.output_dim

    @property
    def probe_dim(self) -> int:
        """Width of `LossOutput.features`, what the online probe reads: the SEM embedding's when SEM is on."""
        return self.feature_dim if self.sem is None else self.sem.output_dim

    def encode(self, x, branch: str = "online"):  # noqa: ANN001, ANN201
        """Backbone features, through the SEM embedder (temperature of `branch`) when SEM is on: what the projector
        and the probes read."""
        h = self.backbone(x)
        return h if self.sem is None else self.sem(h, branch)

    def project_online(self, x, branch: str = "online"):  # noqa: ANN001, ANN201
        """(embedding e = `encode(x, branch)`, projector output z). Needs the subclass's `self.projector`."""
        e = self.encode(x, branch)
        return e, self.projector(e)

    def embedder(self) -> nn.Module:
        """The online encoder as one module (backbone, then SEM at τ_online when SEM is on): what the online
        probe and the kNN monitor read. Shares the method's weights."""
        return self.backbone if self.sem is None else _BackboneThenSEM(self.backbone, self.sem)

    @torch.no_grad()
    def encode_target(self, x):  # noqa: ANN001, ANN201
        """The momentum branch: target backbone → target SEM (τ_target) → target projector."""
        h = self.target_backbone(x)
        return self.target_projector(h if self.sem is None else self.target_sem(h, "target"))

    def add_target(self, online: str, target: str) -> None:
        """Create `self.<target>` as a frozen copy of `self.<online>`, updated by EMA in `momentum_update`."""
        net = copy.deepcopy(getattr(self, online))
        for p in net.parameters():
            p.requires_grad_(False)
        setattr(self, target, net)
        self._targets.append((online, target))

    @torch.no_grad()
    def momentum_update(self, progress: float) -> None:
        """θ_target ← m·θ_target + (1 − m)·θ_online with m on the cosine schedule; no-op without a target."""
        if not self._targets:
            return
        self.momentum = momentum_at(progress, self.cfg.momentum_base, self.cfg.momentum_final)
        for online, target in self._targets:
            t_params = list(getattr(self, target).parameters())
            o_params = list(getattr(self, online).parameters())
            torch._foreach_lerp_(t_params, o_params, 1.0 - self.momentum)  # fused t += (1 − m)(o − t)

    def contrastive(
        self,
        anchors: torch.Tensor,
        candidates: torch.Tensor,
        positive_index: torch.Tensor,
        self_index: torch.Tensor | None,
        *,
        epoch: int,
        labels_anchor: torch.Tensor | None = None,
        labels_candidates: torch.Tensor | None = None,
        classes: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> LossOutput:
        """HEX when enabled (it falls back to InfoNCE during its warm-up), else InfoNCE with `method.temperature`.
        `classes` (fine labels of anchors and candidates) only feed HEX's diagnostics of what H(i) holds.

        Inputs are built here (F.normalize, generated indices), so the losses' host-syncing checks are skipped.
        """
        if self.hex_loss is not None:
            return self.hex_loss(anchors, candidates, positive_index, self_index, epoch=epoch,
                                 labels_anchor=labels_anchor, labels_candidates=labels_candidates, classes=classes,
                                 validate=False)
        return info_nce(anchors, candidates, positive_index, self_index, self.cfg.temperature, validate=False)

    def global_pairs(
        self, z1: torch.Tensor, z2: torch.Tensor, *, epoch: int, superclass: torch.Tensor | None
    ) -> LossOutput:
        """NT-Xent/HEX over the global batch: normalise, gather with gradient, anchors = candidates = cat(z1, z2).

        With `hex.negatives: local` nothing is gathered: each worker's loss sees its own batch only, as in the
        reference code (DDP then averages the workers' gradients)."""
        gather = (lambda t: t) if self.hex_cfg.negatives == "local" else gather_with_grad
        z = torch.cat([gather(F.normalize(z1, dim=1)), gather(F.normalize(z2, dim=1))])
        pos, self_idx = pair_layout(z.shape[0] // 2, z.device)
        def both_views(labels: torch.Tensor | None) -> torch.Tensor | None:
            if labels is None:
                return None
            g = labels if self.hex_cfg.negatives == "local" else gather_no_grad(labels)
            return torch.cat([g, g])

        labels, fine = both_views(superclass), both_views(self._diagnostic_classes)
        return self.contrastive(z, z, pos, self_idx, epoch=epoch, labels_anchor=labels, labels_candidates=labels,
                                classes=None if fine is None else (fine, fine))

    def with_hex_auxiliary(
        self, base: LossOutput, z1: torch.Tensor, z2: torch.Tensor, *, epoch: int,
        superclass: torch.Tensor | None,
    ) -> LossOutput:
        """L = α·L_HEX + (1 − α)·L_method on the projector outputs (non-contrastive methods, design/HEX.md).

        During HEX's warm-up the method's own loss is used alone (`hex/active` = 0).
        """
        if self.hex_loss is None:
            return base
        if self.hex_cfg.in_warmup(epoch):
            base.terms["hex/active"] = torch.zeros((), device=base.loss.device)
            return base
        aux = self.global_pairs(z1, z2, epoch=epoch, superclass=superclass)
        alpha = self.hex_cfg.alpha
        loss = alpha * aux.loss + (1.0 - alpha) * base.loss
        return LossOutput(loss=loss, terms={**base.terms, **aux.terms}, features=base.features)

    # ----------------------------------------------------------------- the public step
    def forward(
        self, view1: torch.Tensor, view2: torch.Tensor, *local_views: torch.Tensor, epoch: int,
        superclass: torch.Tensor | None = None, label: torch.Tensor | None = None,
    ) -> LossOutput:
        """Loss of one batch of two augmented global views (and the local crops the method declared);
        `features` = view 1's embedding (backbone features, or the SEM embedding when SEM is on; not detached),
        which the online probe reads. `label` (fine classes) reaches the loss only through the
        `superclass_siblings` oracle; with HEX on it measures what H(i) holds (`hex/purity_class`, `hex/chance_*`;
        hexray.losses.hex_diagnostics)."""
        self._check_inputs(view1, view2, epoch, superclass)
        if label is not None and (not isinstance(label, torch.Tensor) or label.shape != (view1.shape[0],)):
            raise InputError(f"label must be a tensor of shape ({view1.shape[0]},), got "
                             f"{getattr(label, 'shape', label)}")
        wanted = self.local_crops
        if len(local_views) != wanted:
            raise InputError(f"{type(self).__name__} takes {wanted} local crop(s), got {len(local_views)}")
        for i, v in enumerate(local_views):
            if not isinstance(v, torch.Tensor) or v.dim() != 4 or v.shape[:2] != view1.shape[:2]:
                raise InputError(f"local view {i} must be (B, C, h, w) like view1 {tuple(view1.shape[:2])}, got "
                                 f"{getattr(v, 'shape', type(v))}")
        extra = {"local_views": list(local_views)} if wanted else {}
        self._diagnostic_classes = label  # read by global_pairs during this call only
        try:
            out = self.compute(view1, view2, epoch=epoch, superclass=superclass, **extra)
        finally:
            self._diagnostic_classes = None
        out.terms = {k: v.detach() for k, v in out.terms.items()}  # logged terms must not keep the graph alive
        return out

    def compute(
        self, view1: torch.Tensor, view2: torch.Tensor, *, epoch: int, superclass: torch.Tensor | None
    ) -> LossOutput:
        raise NotImplementedError

    def _check_inputs(
        self, view1: torch.Tensor, view2: torch.Tensor, epoch: int, superclass: torch.Tensor | None
    ) -> None:
        for name, v in (("view1", view1), ("view2", view2)):
            if not isinstance(v, torch.Tensor) or v.dim() != 4 or not v.is_floating_point():
                raise InputError(f"{name} must be a float tensor of shape (B, C, H, W), got "
                                 f"{getattr(v, 'shape', type(v))}")
            if v.shape[1] != self.in_channels:
                raise InputError(f"{name} has {v.shape[1]} channels but backbone.in_channels is {self.in_channels}")
        if view1.shape[0] != view2.shape[0]:
            raise InputError(f"view2 must hold as many images as view1 ({view1.shape[0]}), got {view2.shape[0]}")
        if view1.shape[0] < 2:
            raise InputError(f"view1 must hold at least 2 images (BatchNorm, negatives), got {view1.shape[0]}")
        if not isinstance(epoch, int) or epoch < 0:
            raise InputError(f"epoch must be an integer >= 0, got {epoch!r}")
        if superclass is not None and (
            not isinstance(superclass, torch.Tensor) or superclass.shape != (view1.shape[0],)
            or superclass.is_floating_point()
        ):
            raise InputError(f"superclass must be an integer tensor of shape ({view1.shape[0]},), got "
                             f"{getattr(superclass, 'shape', superclass)}")


class _BackboneThenSEM(nn.Module):
    def __init__(self, backbone: nn.Module, sem: SEMHead) -> None:
        super().__init__()
        self.backbone, self.sem = backbone, sem

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sem(self.backbone(x), "online")
