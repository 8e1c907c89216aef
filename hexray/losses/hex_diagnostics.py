"""What H(i) holds, measured against labels the loss never trains on: the share of H(i) that has the anchor's class
and superclass, next to the same share among all its negatives (the chance level of a random H(i) of that size).

HEX's premise is that H(i) collects samples of the anchor's semantic group; these numbers say whether it does.
Labels < 0 are unknown and count nowhere. Diagnostics only: computed without gradient.
"""

from __future__ import annotations

import torch


def _shared(mask: torch.Tensor, labels_a: torch.Tensor, labels_c: torch.Tensor) -> torch.Tensor:
    """Pooled share of the pairs in `mask` whose two labels are known and equal."""
    known = mask & (labels_a >= 0).unsqueeze(1) & (labels_c >= 0).unsqueeze(0)
    same = known & (labels_a.unsqueeze(1) == labels_c.unsqueeze(0))
    return same.sum().float() / known.sum().clamp(min=1).float()


@torch.no_grad()
def hierarchy_diagnostics(h: torch.Tensor, negatives: torch.Tensor, classes: tuple[torch.Tensor, torch.Tensor],
                          superclasses: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """`h` ⊆ `negatives` (N×M bool); label pairs are (anchors', candidates'). Keys: `hex/purity_class`,
    `hex/chance_class`, and with superclasses `hex/purity_superclass`, `hex/chance_superclass`."""
    out = {"hex/purity_class": _shared(h, *classes), "hex/chance_class": _shared(negatives, *classes)}
    if superclasses is not None:
        out["hex/purity_superclass"] = _shared(h, *superclasses)
        out["hex/chance_superclass"] = _shared(negatives, *superclasses)
    return out
