"""Worker hooks: user code that runs inside every training worker at fixed points of each step.

A hook is any object with some of `on_batch(info)` (a batch has arrived, before the forward pass) and
`on_loss(info, out)` (the method's LossOutput, before the NaN guard reads it; a hook may change it). Hooks come
from `run.worker_hooks` ("module:name" import paths; the name is called with no arguments on the driver) or from
`run_training(..., worker_hooks=[...])`. They are built on the driver and shipped to the workers with their
module's code (cloudpickle by value), so the module need not be installed on the cluster's nodes; what it imports
must be. Uses: profiling or logging one step, and fault injection in hexray's own tests (tests/fault_hooks.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ray import cloudpickle

from hexray.config import ConfigError


@dataclass(frozen=True)
class StepInfo:
    """Where the loop is: `epoch` 0-based, `index` the batch's position in the epoch, `step` the 1-based global
    step this batch makes, `start_epoch` the epoch this worker group started (or resumed) at."""

    rank: int
    world: int
    epoch: int
    start_epoch: int
    index: int
    step: int
    run_dir: str


def load_worker_hooks(paths: Sequence[str]) -> list[Any]:
    """Import and build each "module:name" of `run.worker_hooks`; a bad entry is a ConfigError naming it."""
    hooks = []
    for path in paths:
        module_name, _, attr = path.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"run.worker_hooks: cannot load {path!r}: {err}") from err
        hooks.append(factory())
    return hooks


def shippable(hooks: Iterable[Any]) -> list[Any]:
    """The hooks, with their modules marked to travel by value (hexray's own modules are on every node)."""
    hooks = list(hooks)
    for hook in hooks:
        module = importlib.import_module(type(hook).__module__)
        if not module.__name__.startswith(("hexray.", "builtins", "__main__")):
            cloudpickle.register_pickle_by_value(module)
        if not (hasattr(hook, "on_batch") or hasattr(hook, "on_loss")):
            raise ConfigError(f"worker hook {hook!r} has neither on_batch(info) nor on_loss(info, out)")
    return hooks


class HookRunner:
    """Calls every hook's `on_batch` / `on_loss` in order; free when there are none."""

    def __init__(self, hooks: Sequence[Any], *, rank: int, world: int, start_epoch: int, run_dir: str) -> None:
        self._batch = [h.on_batch for h in hooks if hasattr(h, "on_batch")]
        self._loss = [h.on_loss for h in hooks if hasattr(h, "on_loss")]
        self._where = {"rank": rank, "world": world, "start_epoch": start_epoch, "run_dir": run_dir}

    def info(self, epoch: int, index: int, step: int) -> StepInfo | None:
        if not (self._batch or self._loss):
            return None
        return StepInfo(epoch=epoch, index=index, step=step, **self._where)

    def on_batch(self, info: StepInfo | None) -> None:
        for call in self._batch:
            call(info)

    def on_loss(self, info: StepInfo | None, out: Any) -> None:
        for call in self._loss:
            call(info, out)
