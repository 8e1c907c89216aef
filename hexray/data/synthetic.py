"""`synthetic-hierarchy`: small colour images with a known two-level hierarchy, generated deterministically.

Superclass = shape family (coarse: circle, square, triangle, cross, ring, diamond, ...), class = a finer variant of
it (fill colour and stripe pattern). So superclasses differ in global structure and classes only in details, the
setting where HEX's adaptive threshold should find the superclass groups (design/HEX.md). Every image is a pure
function of (seed, split, index), so shards are reproducible and can be generated in parallel.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from hexray.errors import DataError

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "hbar", "vbar")
_SPLIT_CODE = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SyntheticSpec:
    seed: int = 0
    num_superclasses: int = 4
    classes_per_superclass: int = 3
    images_per_class: int = 100
    image_size: int = 32
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.num_superclasses <= len(SHAPES):
            raise DataError(f"num_superclasses must be in 1..{len(SHAPES)}, got {self.num_superclasses}")
        if not 1 <= self.classes_per_superclass <= 12:
            raise DataError(f"classes_per_superclass must be in 1..12, got {self.classes_per_superclass}")
        if self.images_per_class < 1:
            raise DataError(f"images_per_class must be >= 1, got {self.images_per_class}")
        if self.image_size < 8:
            raise DataError(f"image_size must be >= 8, got {self.image_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def num_classes(self) -> int:
        return self.num_superclasses * self.classes_per_superclass

    def class_names(self) -> list[str]:
        return [f"{SHAPES[s]}-{v}" for s in range(self.num_superclasses) for v in range(self.classes_per_superclass)]

    def superclass_names(self) -> list[str]:
        return list(SHAPES[: self.num_superclasses])

    def class_to_superclass(self) -> list[int]:
        return [c // self.classes_per_superclass for c in range(self.num_classes)]

    def split_counts(self) -> dict[str, int]:
        """Images per class in each split (test first: the first `val_fraction` of each class's indices)."""
        test = int(round(self.images_per_class * self.val_fraction))
        return {"train": self.images_per_class - test, "test": test}

    def split_labels(self, split: str) -> np.ndarray:
        """Labels of the split's samples in index order: class-major, `per_class` each."""
        per_class = self.split_counts()[split]
        return np.repeat(np.arange(self.num_classes, dtype=np.int64), per_class)


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
    if shape == "triangle":
        return (dy <= 0.7 * r) & (dy >= -r + 2 * np.abs(dx))
    if shape == "cross":
        return ((np.abs(dy) <= 0.3 * r) & (np.abs(dx) <= r)) | ((np.abs(dx) <= 0.3 * r) & (np.abs(dy) <= r))
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    if shape == "hbar":
        return (np.abs(dy) <= 0.35 * r) & (np.abs(dx) <= 1.1 * r)
    return (np.abs(dx) <= 0.35 * r) & (np.abs(dy) <= 1.1 * r)  # vbar


def _variant_colour(variant: int, count: int) -> np.ndarray:
    hue = (variant / max(count, 1)) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.95), dtype=np.float32)


def render(spec: SyntheticSpec, split: str, label: int, index: int) -> np.ndarray:
    """One H×W×3 uint8 image of class `label`; `index` is the sample's index within its split."""
    rng = np.random.default_rng((spec.seed, _SPLIT_CODE[split], index))
    size = spec.image_size
    sup, variant = divmod(label, spec.classes_per_superclass)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = size * rng.uniform(0.25, 0.38)
    cy, cx = rng.uniform(r * 0.9, size - r * 0.9, size=2)
    mask = _shape_mask(SHAPES[sup], yy, xx, cy, cx, r)
    colour = _variant_colour(variant, spec.classes_per_superclass) * rng.uniform(0.85, 1.0)
    if variant % 2 == 1:  # odd variants are striped: a finer cue inside the same shape family
        stripes = ((yy + xx) // max(2, size // 10)) % 2 == 0
        fill = np.where(stripes[..., None], colour, colour * 0.35)
    else:
        fill = np.broadcast_to(colour, (size, size, 3))
    background = rng.uniform(0.0, 0.25, size=3).astype(np.float32)
    image = np.where(mask[..., None], fill, background)
    image = image + rng.normal(0.0, 0.03, size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
