"""Stop (or skip) a step whose loss is NaN/inf, naming the step and the first bad term."""

from __future__ import annotations

import torch

from hexray.errors import UserError
from hexray.losses.base import LossOutput


class NonFiniteLossError(UserError, RuntimeError):
    """The loss went NaN/inf; the message names the step and the offending term."""


def first_bad_term(output: LossOutput) -> str | None:
    """None while the loss is finite; otherwise the first non-finite term (the culprit), else `loss`.

    Only the loss decides: a diagnostic term may be infinite by design (`hex.threshold: none`, the DCL control,
    reports ε = +∞ because H(i) never forms), and stopping on it stopped a valid run at its first step.
    One device sync on the common path."""
    if bool(torch.isfinite(output.loss.detach()).all()):
        return None
    for name, value in output.terms.items():
        if not bool(torch.isfinite(value.detach()).all()):
            return name
    return "loss"


class NanGuard:
    """Per-step check. policy `stop` raises; `skip` counts the step as skipped, up to `max_skips` in total."""

    def __init__(self, policy: str = "stop", max_skips: int = 10, skipped: int = 0) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"run.on_nan must be 'stop' or 'skip', got {policy!r}")
        self.policy, self.max_skips, self.skipped = policy, max_skips, skipped

    def check(self, output: LossOutput, *, step: int, epoch: int) -> bool:
        """True when the step may proceed; False when it must be skipped; raises when the run must stop."""
        bad = first_bad_term(output)
        if bad is None:
            return True
        value = output.terms.get(bad, output.loss).detach().float().mean().item()
        where = f"non-finite loss at step {step} (epoch {epoch}): term {bad!r} = {value}"
        if self.policy == "stop":
            raise NonFiniteLossError(f"{where}; lower optim.lr, set optim.grad_clip, or run.on_nan=skip")
        self.skipped += 1
        if self.skipped > self.max_skips:
            raise NonFiniteLossError(f"{where}; more than run.max_nan_skips={self.max_skips} skipped steps")
        return False
