"""`synthetic-hierarchy`: small colour images with a known two-level hierarchy, generated deterministically.

Superclass = shape family (circle, square, triangle, cross, ring, diamond, x-cross, star): the silhouette, which
covers most of the image. Class = the texture inside the silhouette (stripes across or along, a checkerboard, dots,
concentric rings, plain), a faint brightness pattern with a random phase. Nuisance factors are drawn per image,
independent of both levels: the fill's hue, saturation and brightness, the background colour, the shape's size and
position, the texture's phase, pixel noise.

So raw pixels see the superclass (their top-5 neighbours share it >= 90% of the time) and the class much less (a
texture with a random phase is noise to a pixel distance), while the class survives every SSL augmentation: a flip
keeps a pattern's orientation, a crop keeps part of a pattern that fills the shape, colour jitter scales it. An
encoder that learns what two views share can beat raw pixels on the class, the setting where HEX's adaptive
threshold should find superclass groups (design/HEX.md). `raw_pixel_neighbours` measures the first half;
`hexray shard synthetic-hierarchy` prints it and stores it in the manifest.
Every image is a pure function of (seed, split, index), so shards are reproducible and can be generated in parallel.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass

import numpy as np

from hexray.errors import DataError

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "xcross", "star")
TEXTURES = ("across", "along", "checker", "dots", "rings", "plain")  # every one unchanged by a horizontal flip
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
        if not 1 <= self.classes_per_superclass <= len(TEXTURES):
            raise DataError(f"classes_per_superclass must be in 1..{len(TEXTURES)} (the textures {TEXTURES}), "
                            f"got {self.classes_per_superclass}")
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
        return [f"{SHAPES[s]}-{TEXTURES[v]}" for s in range(self.num_superclasses)
                for v in range(self.classes_per_superclass)]

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

    radius: tuple[float, float] = (0.30, 0.40)       # shape radius, fraction of the image side
    jitter: float = 0.06                             # centre offset, ± fraction of the image side
    hue: tuple[float, float] = (0.55, 0.65)          # fill colour: in a band the SSL colour jitter (±0.1 hue) spans;
    saturation: tuple[float, float] = (0.55, 0.65)   # colour that tells two images apart is a shortcut SimCLR takes
    #                                                  instead of shape (v2-v4 scored below a random-init network)
    value: tuple[float, float] = (0.7, 0.8)          # the fill's mean brightness; the texture swings around it
    background: tuple[float, float] = (0.05, 0.15)   # grey level of the background (one value for all channels)
    noise_std: float = 0.03
    texture_contrast: float = 0.25                   # the class's texture: brightness × (1 ± this)
    texture_period: float = 0.45                     # ... with this period, a fraction of r (4-6 px at 32 px)


NUISANCE = Nuisance()
MIN_TEXTURE_PERIOD_PX = 3.0  # below this a 16-px test image's texture aliases into noise
GENERATOR_VERSION = 5  # 1: class = colour/stripes shared across superclasses (the hierarchy was upside down);
# 2: any hue (SSL learned the colour shortcut); 3: wide saturation/background ranges (still below random init);
# 4: class = a notch at one of K heights (raw pixels saw it at 98% kNN; crops cut it away, so SimCLR scored 25%);
# 5: class = texture, grey background (v4's per-channel background colour told images apart)


def generator_description() -> dict:
    """What the manifest records about how images were made."""
    return {"generator_version": GENERATOR_VERSION, "class_factor": "texture inside the shape",
            "textures": list(TEXTURES),
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


def texture(kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, period: float,
            phase: np.ndarray) -> np.ndarray:
    """Class `kind`'s brightness pattern in [-1, 1]: a square wave of `period` pixels shifted by `phase` (2 values
    in [0, 1)), so its position in the image is nuisance and only its kind is the class."""

    def wave(u: np.ndarray, shift: float) -> np.ndarray:
        return np.where(((u / period + shift) % 1.0) < 0.5, 1.0, -1.0)

    if kind == "across":
        return wave(yy, phase[0])
    if kind == "along":
        return wave(xx, phase[1])
    if kind == "checker":
        return wave(yy, phase[0]) * wave(xx, phase[1])
    if kind == "dots":
        fy, fx = (yy / period + phase[0]) % 1.0 - 0.5, (xx / period + phase[1]) % 1.0 - 0.5
        return np.where(fy**2 + fx**2 <= 0.3**2, 1.0, -1.0)
    if kind == "rings":
        return wave(np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2), phase[0])
    return np.zeros_like(yy)


def render(spec: SyntheticSpec, split: str, label: int, index: int) -> np.ndarray:
    """One H×W×3 uint8 image of class `label`; `index` is the sample's index within its split."""
    rng = np.random.default_rng((spec.seed, _SPLIT_CODE[split], index))
    n, size = NUISANCE, spec.image_size
    sup, variant = divmod(label, spec.classes_per_superclass)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = size * rng.uniform(*n.radius)
    cy, cx = size / 2 + rng.uniform(-n.jitter, n.jitter, size=2) * size
    mask = _shape_mask(SHAPES[sup], yy, xx, cy, cx, r)
    colour = np.array(colorsys.hsv_to_rgb(rng.uniform(*n.hue), rng.uniform(*n.saturation), rng.uniform(*n.value)),
                      dtype=np.float32)
    period = max(n.texture_period * r, MIN_TEXTURE_PERIOD_PX)
    pattern = texture(TEXTURES[variant], yy, xx, cy, cx, period, rng.uniform(0.0, 1.0, size=2))
    fill = colour * (1.0 + n.texture_contrast * pattern[..., None])
    background = np.full(3, rng.uniform(*n.background), dtype=np.float32)
    image = np.where(mask[..., None], fill, background) + rng.normal(0.0, n.noise_std, size=(size, size, 3))
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
