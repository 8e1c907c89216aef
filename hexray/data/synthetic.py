"""`synthetic-hierarchy`: small colour images with a known two-level hierarchy, generated deterministically.

Superclass = shape family (circle, square, triangle, cross, ring, diamond, x-cross, star): the silhouette, which
covers most of the image. Class = a variant of that shape: a small notch cut at one of `classes_per_superclass`
heights on the shape's vertical axis (so a horizontal flip keeps the class). Nuisance factors are drawn per image,
independent of both levels: the fill's hue, saturation and brightness, the background colour, the shape's size and
position, pixel noise. So raw pixels
see the superclass (their top-5 neighbours share it > 90% of the time) and the class less (the notch is a few
pixels): the setting where HEX's adaptive threshold should find superclass groups (design/HEX.md).
`raw_pixel_neighbours` measures this; `hexray shard synthetic-hierarchy` prints it and stores it in the manifest.
Every image is a pure function of (seed, split, index), so shards are reproducible and can be generated in parallel.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass

import numpy as np

from hexray.errors import DataError

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "xcross", "star")
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


@dataclass(frozen=True)
class Nuisance:
    """The per-image factors drawn independently of superclass and class (recorded in the manifest)."""

    radius: tuple[float, float] = (0.33, 0.38)       # shape radius, fraction of the image side
    jitter: float = 0.05                             # centre offset, ± fraction of the image side
    hue: tuple[float, float] = (0.5, 0.7)            # fill colour: hue in a band an SSL colour jitter spans (a
    saturation: tuple[float, float] = (0.5, 0.7)     # uniform hue made colour the easiest way to tell images apart:
    #                                                  SimCLR learned colour, not shape, and lost to random init)
    value: tuple[float, float] = (0.8, 0.95)
    background: tuple[float, float] = (0.05, 0.15)   # per-channel background level
    noise_std: float = 0.03
    notch_span: float = 0.6                          # the class's notch: centres spread over ± this fraction of r
    notch_half: float = 0.22                         # ... on the vertical axis; a square of this half-side (of r)


NUISANCE = Nuisance()
GENERATOR_VERSION = 4  # 1: class = colour/stripes shared across superclasses (the hierarchy was upside down);
# 2: any hue (SSL learned the colour shortcut); 3: wide saturation/background ranges (still below random init)


def generator_description() -> dict:
    """What the manifest records about how images were made."""
    return {"generator_version": GENERATOR_VERSION, "class_factor": "notch height on the vertical axis",
            "superclass_factor": "shape", "nuisance": asdict(NUISANCE)}


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
    if shape == "triangle":
        return (dy <= 0.7 * r) & (dy >= -r + 2 * np.abs(dx))
    if shape in ("cross", "xcross"):
        if shape == "xcross":
            dy, dx = (dy + dx) / np.sqrt(2.0), (dy - dx) / np.sqrt(2.0)
        return ((np.abs(dy) <= 0.3 * r) & (np.abs(dx) <= r)) | ((np.abs(dx) <= 0.3 * r) & (np.abs(dy) <= r))
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    angle = np.arctan2(dy, dx)  # star: five lobes
    return np.sqrt(dy**2 + dx**2) <= r * (0.55 + 0.45 * np.cos(2.5 * angle) ** 2)


def notch_offset(variant: int, count: int) -> float:
    """Where class `variant`'s notch sits on the shape's vertical axis, in radii from its centre (top to bottom).
    On the axis, so a horizontal flip (an SSL augmentation) never turns one class into another."""
    if count == 1:
        return 0.0
    return NUISANCE.notch_span * (2 * variant / (count - 1) - 1)


def render(spec: SyntheticSpec, split: str, label: int, index: int) -> np.ndarray:
    """One H×W×3 uint8 image of class `label`; `index` is the sample's index within its split."""
    rng = np.random.default_rng((spec.seed, _SPLIT_CODE[split], index))
    n, size = NUISANCE, spec.image_size
    sup, variant = divmod(label, spec.classes_per_superclass)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = size * rng.uniform(*n.radius)
    cy, cx = size / 2 + rng.uniform(-n.jitter, n.jitter, size=2) * size
    mask = _shape_mask(SHAPES[sup], yy, xx, cy, cx, r)
    ny = cy + notch_offset(variant, spec.classes_per_superclass) * r
    mask &= ~((np.abs(yy - ny) <= n.notch_half * r) & (np.abs(xx - cx) <= n.notch_half * r))
    colour = np.array(colorsys.hsv_to_rgb(rng.uniform(*n.hue), rng.uniform(*n.saturation), rng.uniform(*n.value)),
                      dtype=np.float32)
    background = rng.uniform(*n.background, size=3).astype(np.float32)
    image = np.where(mask[..., None], colour, background) + rng.normal(0.0, n.noise_std, size=(size, size, 3))
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def raw_pixel_neighbours(spec: SyntheticSpec, *, k: int = 5, max_images: int = 2000) -> dict[str, float]:
    """How often a training image's k nearest raw-pixel neighbours (cosine on centred pixels) share its superclass
    and its class, next to chance: the check that the hierarchy is one raw pixels see (superclass >> class)."""
    import torch

    labels = spec.split_labels("train")
    index = np.linspace(0, len(labels) - 1, num=min(max_images, len(labels))).round().astype(int)
    pixels = np.stack([render(spec, "train", int(labels[i]), int(i)).ravel() for i in index]).astype(np.float32)
    x = torch.nn.functional.normalize(torch.from_numpy(pixels - pixels.mean(0)), dim=1)
    sim = x @ x.T
    sim.fill_diagonal_(-2.0)
    nearest = sim.topk(min(k, len(index) - 1), dim=1).indices
    fine = torch.from_numpy(labels[index])
    sup = fine // spec.classes_per_superclass
    return {"k": k, "images": len(index),
            "superclass": round(float((sup[nearest] == sup[:, None]).float().mean()), 4),
            "class": round(float((fine[nearest] == fine[:, None]).float().mean()), 4),
            "chance_superclass": round(1.0 / spec.num_superclasses, 4),
            "chance_class": round(1.0 / spec.num_classes, 4)}
