"""Online monitors trained or evaluated alongside pretraining (never feeding gradients into the backbone).

- `OnlineProbe`: linear heads on *detached* backbone features, one for fine labels and one for superclasses
  (when known), trained with cross-entropy on the training batches (solo-learn's online linear eval).
- `KnnMonitor`: k-NN (cosine, temperature-weighted, k = 20) from a labelled bank to a held-out query set,
  both fixed image tensors, re-embedded with the current backbone each time it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hexray.errors import DataError
from hexray.eval.knn import knn_accuracies, superclass_knn_accuracies


class OnlineProbe(nn.Module):
    """Detached linear heads. `forward(features, labels, superclasses) -> (loss, {name: correct count})`."""

    def __init__(self, feature_dim: int, num_classes: int, num_superclasses: int = 0) -> None:
        super().__init__()
        self.fine = nn.Linear(feature_dim, num_classes)
        self.coarse = nn.Linear(feature_dim, num_superclasses) if num_superclasses > 0 else None

    def forward(self, features: Tensor, labels: Tensor, superclasses: Tensor | None = None) -> Tensor:
        x = features.detach().float()
        loss = F.cross_entropy(self.fine(x), labels)
        if self.coarse is not None and superclasses is not None:
            known = superclasses >= 0
            if known.any():
                loss = loss + F.cross_entropy(self.coarse(x[known]), superclasses[known])
        return loss

    @torch.no_grad()
    def accuracies(self, features: Tensor, labels: Tensor, superclasses: Tensor | None = None) -> dict[str, float]:
        """Held-out accuracy of each head: `probe/online_top1`, `probe/online_superclass`."""
        x = features.float()
        out = {"probe/online_top1": (self.fine(x).argmax(1) == labels).float().mean().item()}
        if self.coarse is not None and superclasses is not None and (superclasses >= 0).any():
            known = superclasses >= 0
            pred = self.coarse(x[known]).argmax(1)
            out["probe/online_superclass"] = (pred == superclasses[known]).float().mean().item()
        return out


@torch.no_grad()
def embed(backbone: nn.Module, images: Tensor, *, batch_size: int = 512, device: torch.device | str = "cpu",
          channels_last: bool = False) -> Tensor:
    """Backbone features of `images` (N, C, H, W) in eval mode, float32 on CPU; the previous mode is restored."""
    was_training = backbone.training
    backbone.eval()
    try:
        chunks = []
        if images.shape[0] == 0:  # a worker whose share is empty still knows the feature width
            return backbone(images.to(device)).float().cpu()
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            chunks.append(backbone(x).float().cpu())
        return torch.cat(chunks)
    finally:
        backbone.train(was_training)


Gather = Callable[[Tensor], "Tensor | None"]


class KnnMonitor:
    """kNN accuracy of the current backbone: bank (train images + labels) → queries (held-out images).

    With `gather` (training on several workers) each worker holds only its share of bank and queries and embeds
    it; `gather` concatenates the features on rank 0 (None elsewhere), which scores them: the work is parallel
    and no worker holds all the images. Every worker must call `evaluate` (it is a collective)."""

    def __init__(self, bank: dict[str, Tensor], queries: dict[str, Tensor], *, num_classes: int,
                 class_to_superclass: Sequence[int] | None, k: int = 20, temperature: float = 0.07,
                 gather: Gather | None = None) -> None:
        self.gather = gather
        self.bank, self.queries = bank, queries
        self.num_classes, self.k, self.temperature = num_classes, k, temperature
        self.class_to_superclass = list(class_to_superclass) if class_to_superclass else None
        if gather is None:
            self._check(bank["label"], queries["label"])

    @staticmethod
    def _check(bank_labels: Tensor, query_labels: Tensor) -> None:
        for name, labels in (("bank", bank_labels), ("queries", query_labels)):
            if labels.shape[0] == 0:
                raise DataError(f"kNN monitor {name} is empty: check data.eval_split / probe.knn_*_limit")

    def evaluate(self, backbone: nn.Module, probe: OnlineProbe | None = None, *, device: torch.device | str = "cpu",
                 channels_last: bool = False) -> dict[str, float]:
        """`knn/top1` (and `knn/superclass`: fine prediction mapped to its superclass) plus the online probe's
        held-out accuracies when a probe is given ({} on workers other than rank 0 when gathering)."""
        bank_x = embed(backbone, self.bank["image"], device=device, channels_last=channels_last)
        query_x = embed(backbone, self.queries["image"], device=device, channels_last=channels_last)
        bank_y, query_y, query_sup = self.bank["label"], self.queries["label"], self.queries.get("superclass")
        if self.gather is not None:
            parts = [None if t is None else self.gather(t) for t in (bank_x, query_x, bank_y, query_y, query_sup)]
            if parts[0] is None:
                return {}
            bank_x, query_x, bank_y, query_y, query_sup = parts
            self._check(bank_y, query_y)
        kw = dict(ks=(self.k,), temperature=self.temperature, num_classes=self.num_classes)
        out: dict[str, float] = {}
        if self.class_to_superclass is not None:
            acc = superclass_knn_accuracies(bank_x, bank_y, query_x, query_y, self.class_to_superclass, **kw)
            out["knn/top1"] = acc["fine"][self.k]
            out["knn/superclass"] = acc["fine_then_map"][self.k]
        else:
            out["knn/top1"] = knn_accuracies(bank_x, bank_y, query_x, query_y, **kw)[self.k]
        if probe is not None:
            p = next(probe.parameters())
            out.update(probe.accuracies(query_x.to(p.device), query_y.to(p.device),
                                        None if query_sup is None else query_sup.to(p.device)))
        return out
