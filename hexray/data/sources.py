"""Where shard rows come from: IDX files, an ImageFolder tree, or the synthetic generator.

A `Source` lists every split's samples (labels, stable ids, and how to get each sample's encoded bytes) without
reading image data, so the writer can plan shards up front and encode them in parallel.
Stable ids: `split_code << 40 | index`, where index is the sample's position in the source's sorted listing.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hexray.data.synthetic import SyntheticSpec
from hexray.errors import DataError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
SPLIT_CODES = {"train": 0, "test": 1, "val": 2}
IDX_SPLITS = {"train": "train", "t10k": "test"}


def stable_ids(split: str, count: int) -> np.ndarray:
    code = SPLIT_CODES.get(split, 3 + sum(map(ord, split)) % 1000)
    return (np.int64(code) << np.int64(40)) + np.arange(count, dtype=np.int64)


@dataclass
class SplitSource:
    """One split: `labels[i]`, `ids[i]`, and the payload that yields sample i's bytes (one of the three)."""

    name: str
    labels: np.ndarray
    ids: np.ndarray
    arrays: np.ndarray | None = None  # N×H×W or N×H×W×C uint8, PNG-encoded by the writer
    paths: list[str] | None = None  # encoded image files, stored as found
    synthetic: SyntheticSpec | None = None  # rendered by index, then PNG-encoded

    @property
    def count(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Source:
    kind: str
    description: dict[str, Any]
    class_names: list[str]
    channels: int
    image_size: int | None
    splits: list[SplitSource]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    superclass_names: list[str] = field(default_factory=list)
    class_to_superclass: list[int] | None = None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise DataError(f"IDX file {path} is truncated (shorter than its header)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"IDX file {path} has magic {data[:4].hex()}: expected unsigned-byte IDX (0x0000 08 nn)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"IDX file {path} holds {body.size} bytes of data but its header says {dims}")
    return body.reshape(dims)


def _find_idx(root: Path, prefix: str, kind: str) -> Path | None:
    for name in (f"{prefix}-{kind}-ubyte", f"{prefix}-{kind}-ubyte.gz"):
        if (root / name).is_file():
            return root / name
    return None


def is_idx_dir(root: str | Path) -> bool:
    return Path(root).is_dir() and _find_idx(Path(root), "train", "images-idx3") is not None


def idx_source(root: str | Path, class_names: list[str] | None = None) -> Source:
    """MNIST-style IDX files (`train-*`, `t10k-*`, optionally .gz) → splits `train` and `test`."""
    root = Path(root)
    splits: list[SplitSource] = []
    for prefix, split in IDX_SPLITS.items():
        images_path = _find_idx(root, prefix, "images-idx3")
        labels_path = _find_idx(root, prefix, "labels-idx1")
        if images_path is None and labels_path is None:
            continue
        if images_path is None or labels_path is None:
            missing = f"{prefix}-images-idx3-ubyte" if images_path is None else f"{prefix}-labels-idx1-ubyte"
            raise FileNotFoundError(f"IDX source {root}: {missing}[.gz] is missing")
        images, labels = _read_idx(images_path), _read_idx(labels_path).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"IDX source {root}: {images_path.name} {images.shape} and {labels_path.name} "
                             f"{labels.shape} disagree (expected N×H×W images and N labels)")
        splits.append(SplitSource(split, labels, stable_ids(split, len(labels)), arrays=images))
    if not splits:
        raise FileNotFoundError(f"no IDX files (train-images-idx3-ubyte[.gz], ...) in {root}")
    num_classes = int(max(s.labels.max() for s in splits)) + 1
    names = class_names or [str(i) for i in range(num_classes)]
    if len(names) < num_classes:
        raise DataError(f"IDX source {root} has {num_classes} classes but {len(names)} class names were given")
    train = splits[0].arrays.astype(np.float32) / 255.0
    return Source(
        kind="idx", description={"kind": "idx", "path": str(root.resolve())}, class_names=list(names), channels=1,
        image_size=int(splits[0].arrays.shape[1]), splits=splits,
        mean=[round(float(train.mean()), 4)], std=[round(float(train.std()), 4)],
    )


def _list_images(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def folder_source(root: str | Path, channels: int = 3) -> Source:
    """ImageFolder: `root/<split>/<class>/*.jpg` (splits train/val/test) or `root/<class>/*` (split `train`).
    A split folder holding images directly (ImageNet's flat `val/`) takes its labels from ImageNet's ground-truth
    files (`hexray.data.imagenet_val`); without them it is an error, never a silently dropped split."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    split_dirs = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and d.name in SPLIT_CODES}
    if not split_dirs:
        split_dirs = {"train": root}
    class_names = sorted({c.name for d in split_dirs.values() for c in d.iterdir() if c.is_dir()})
    if not class_names:
        raise DataError(f"image folder {root} has no class sub-directories (expected <split>/<class>/<image>)")
    splits = []
    for split, split_dir in split_dirs.items():
        paths: list[str] = []
        labels: list[int] = []
        for label, name in enumerate(class_names):
            files = _list_images(split_dir / name) if (split_dir / name).is_dir() else []
            paths.extend(os.fspath(p) for p in files)
            labels.extend([label] * len(files))
        flat = sorted(p for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if flat and split_dir != root:  # ImageNet's val/: images without class folders, labels in a side file
            from hexray.data.imagenet_val import flat_val_labels

            labels.extend(flat_val_labels(root, split_dir, flat, class_names))
            paths.extend(os.fspath(p) for p in flat)
        if paths:
            splits.append(SplitSource(split, np.asarray(labels, dtype=np.int64), stable_ids(split, len(paths)),
                                      paths=paths))
    if not splits:
        raise DataError(f"image folder {root} holds no images with extensions {sorted(IMAGE_EXTENSIONS)}")
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ([0.5], [0.5])
    return Source(kind="folder", description={"kind": "folder", "path": str(root.resolve()), "channels": channels},
                  class_names=class_names, channels=channels, image_size=None, splits=splits, mean=mean, std=std)


def synthetic_source(spec: SyntheticSpec) -> Source:
    """The synthetic hierarchy (splits `train` and `test`), with its superclasses attached; the description (the
    manifest's `source`) records the generator's nuisance ranges and the raw-pixel neighbour check."""
    from hexray.data.synthetic import generator_description, raw_pixel_neighbours, render

    splits = []
    for split, per_class in spec.split_counts().items():
        if per_class:
            labels = spec.split_labels(split)
            splits.append(SplitSource(split, labels, stable_ids(split, len(labels)), synthetic=spec))
    sample = np.stack([render(spec, "train", int(l), i) for i, l in enumerate(splits[0].labels[::7][:256])])
    sample = sample.astype(np.float32) / 255.0
    return Source(
        kind="synthetic-hierarchy",
        description={"kind": "synthetic-hierarchy", **spec.__dict__, **generator_description(),
                     "raw_pixel_neighbours": raw_pixel_neighbours(spec)},
        class_names=spec.class_names(), channels=3, image_size=spec.image_size, splits=splits,
        mean=[round(float(m), 4) for m in sample.mean((0, 1, 2))],
        std=[round(float(s), 4) for s in sample.std((0, 1, 2))],
        superclass_names=spec.superclass_names(), class_to_superclass=spec.class_to_superclass(),
    )
