"""Two augmented views of a decoded uint8 batch, seeded by (seed, epoch, the batch's sample ids).

One function serves both places views can be made (`data.augment_in`): inside Ray Data's map tasks, or on the
training worker after the batch arrives (there it runs on the training device: batched kernels on a GPU, and the
stream carries one uint8 image per row instead of two float32 views).
Pure torch; never imports Ray.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np
import torch

from hexray.data.gpu_augment import RECIPES, local_views, recipe_views


def batch_generator(seed: int, epoch: int, ids: np.ndarray, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from (seed, epoch, ids): the same batch in the same epoch gets the same views."""
    digest = hashlib.blake2b(struct.pack("<qq", seed, epoch) + np.ascontiguousarray(ids, dtype=np.int64).tobytes(),
                             digest_size=8).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


@dataclass(frozen=True)
class ViewMaker:
    """Recipe, output size and normalisation of the two global views (`crop_scale`: their crop scale range instead
    of the recipe's), plus `local_crops` small crops of `local_size` px at `local_scale` for multi-crop methods;
    call it on (uint8 batch, ids, epoch)."""

    recipe: str
    image_size: int
    seed: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    local_crops: int = 0
    local_size: int = 0
    local_scale: tuple[float, float] = (0.05, 0.4)
    crop_scale: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}")
        if self.local_crops < 0 or (self.local_crops and self.local_size < 1):
            raise ValueError(f"local crops need local_crops >= 0 and local_size >= 1, got {self.local_crops} and "
                             f"{self.local_size}")

    def __call__(self, images: torch.Tensor, ids: torch.Tensor | np.ndarray, epoch: int,
                 sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """images: uint8 N×C×H×W (zero-padded when `sizes`, N×2 (h, w), says the images are smaller) → the two
        global views, then the local crops."""
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (decoded, not normalised), got {images.dtype}")
        ids = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        generator = batch_generator(self.seed, epoch, ids, device=images.device)
        pair = recipe_views(images, sizes, self.recipe, output_size=self.image_size, mean=self.mean, std=self.std,
                            generator=generator, crop_scale=self.crop_scale)
        if not self.local_crops:
            return pair
        return (*pair, *local_views(images, sizes, self.recipe, count=self.local_crops, output_size=self.local_size,
                                    scale=self.local_scale, mean=self.mean, std=self.std, generator=generator))
