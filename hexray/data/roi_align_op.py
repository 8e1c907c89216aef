"""torchvision's compiled `roi_align` kernel, loaded without importing the torchvision package.

Why: importing torchvision (any of it) imports torch._dynamo through torchvision.ops, 2-3 s of CPU in every process
that augments a batch: every Ray Train worker of every run and every sweep trial. The kernel called here is the one
`torchvision.ops.roi_align` calls for a float tensor, so the views are bit for bit the same. Where torchvision keeps
its library under another name (another version or platform), this falls back to importing the package.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
from collections.abc import Callable

import torch

_LIBRARY_NAMES = ("_C_stable", "_C")  # torchvision 0.2x's name for its op library, then the older one


def _registered() -> bool:
    try:
        torch.ops.torchvision.roi_align  # noqa: B018 (resolving the op is the check)
    except (AttributeError, RuntimeError):
        return False
    return True


def _library_paths() -> list[str]:
    spec = importlib.util.find_spec("torchvision")  # finds the package without running its __init__
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return [os.path.join(folder, name + suffix) for folder in folders for name in _LIBRARY_NAMES
            for suffix in importlib.machinery.EXTENSION_SUFFIXES]


@functools.cache
def _kernel() -> Callable[..., torch.Tensor]:
    for path in _library_paths():
        if _registered():
            break
        if os.path.isfile(path):
            try:
                torch.ops.load_library(path)
            except OSError:
                continue
    if not _registered():
        import torchvision.ops  # noqa: F401  (loads the library the package's own way)
    return torch.ops.torchvision.roi_align


def roi_align(images: torch.Tensor, rois: torch.Tensor, output_size: int, *, sampling_ratio: int,
              aligned: bool) -> torch.Tensor:
    """`torchvision.ops.roi_align(images, rois, output_size, 1.0, sampling_ratio, aligned)` for a float batch and
    K×5 rois (batch index, x1, y1, x2, y2)."""
    if torch.are_deterministic_algorithms_enabled() and images.device.type != "cpu":
        from torchvision.ops import roi_align as deterministic  # torchvision's own path for deterministic GPU runs

        return deterministic(images, rois, output_size, 1.0, sampling_ratio, aligned)
    return _kernel()(images, rois, 1.0, output_size, output_size, sampling_ratio, aligned)
