"""The one return type shared by every loss and SSL method."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """A differentiable scalar `loss` plus named, detached scalar `terms` for logging.

    Terms are 0-dim tensors (kept on device so logging costs no sync until the loop reads them).
    `features` optionally carries the backbone features of the first view, for online probes.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    features: torch.Tensor | None = None
