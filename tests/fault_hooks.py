"""Fault injection for the tests, as worker hooks (hexray.train.worker_hooks): a worker that dies, a NaN loss, a
stalled peer. The production loop knows nothing of these; tests pass them to `run_training(worker_hooks=...)` or
name them in `run.worker_hooks` ("fault_hooks:crash_after_epoch_1", with this folder on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from typing import Any

from hexray import storage
from hexray.checkpoint import checkpoint_dir_name


class CrashOnce:
    """Rank 0 kills its process once, on the second batch of epoch `after_epoch` + 1 (0-based `after_epoch`), once
    Ray has registered epoch `after_epoch`'s checkpoint, as a node or process failure would. A flag file (a local
    path or a URI; default: next to the run directory) remembers that it happened, so the restarted worker lives."""

    def __init__(self, after_epoch: int, flag: str | None = None) -> None:
        self.after_epoch, self.flag = after_epoch, flag

    def on_batch(self, info: Any) -> None:
        if info.rank != 0 or info.index != 1 or info.epoch != self.after_epoch:
            return
        flag = self.flag or f"{info.run_dir}.crashed"
        if storage.exists(flag):
            return
        name = checkpoint_dir_name(self.after_epoch)
        snapshot = storage.join(info.run_dir, "checkpoint_manager_snapshot.json")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (storage.is_file(snapshot) and name in storage.read_text(snapshot)):
            time.sleep(0.5)  # Ray's controller polls reports every ~2 s; die only once it has registered the checkpoint
        storage.write_text(flag, f"crashed after {name}\n")
        os._exit(1)


def crash_after_epoch_1() -> CrashOnce:
    """For `run.worker_hooks` on the command line: crash once after epoch 1's checkpoint."""
    return CrashOnce(after_epoch=1)


class PoisonLoss:
    """At global step `step`, the first `loss/` term (and so the loss) turns NaN, as an overflow in the loss would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_loss(self, info: Any, out: Any) -> None:
        if info.step != self.step:
            return
        name = next((k for k in out.terms if k.startswith("loss/")), None) or next(iter(out.terms), None)
        if name is not None:
            out.terms[name] = out.terms[name] * float("nan")
        out.loss = out.loss * float("nan")


class StallLastRank:
    """The last rank (of several) sleeps `seconds` before its first step: a stalled peer; the others time out in
    their next collective."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_batch(self, info: Any) -> None:
        if 0 < info.rank == info.world - 1 and info.index == 0 and info.epoch == info.start_epoch:
            time.sleep(self.seconds)
