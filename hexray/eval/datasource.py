"""Capped, class-covering eval image sets straight from a run's Parquet shards (no Ray: offline eval of a small
run should take seconds, and a seeded random subset beats `limit`'s first-N rows, which may be class-sorted).

Images get the eval view of the data contract: resize the short side, centre-crop to `image_size`, scale to
[0, 1] and normalise with the manifest's mean/std. Undecodable images are skipped and counted.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hexray.eval.offline import EvalData

DEFAULT_MAX_TRAIN = 5000
DEFAULT_MAX_TEST = 2000


def decode_image(data: bytes, *, channels: int, image_size: int) -> np.ndarray:
    """Encoded bytes → uint8 (C, image_size, image_size): short side resized to image_size, centre crop."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        w, h = img.size
        if min(w, h) != image_size:
            scale = image_size / min(w, h)
            img = img.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))),
                             Image.BILINEAR)
            w, h = img.size
        left, top = (w - image_size) // 2, (h - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
        array = np.asarray(img, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def read_split(root: str, split: str, *, image_size: int, max_samples: int | None, seed: int = 0,
               manifest: Any | None = None) -> tuple[Tensor, Tensor, int]:
    """(images float32 (N, C, S, S) normalised, labels int64 (N,), skipped-corrupt count) of a seeded random
    subset of at most `max_samples` rows of `split` (all rows when None)."""
    import pyarrow.parquet as pq

    from hexray.data.manifest import filesystem, load_manifest

    m = manifest or load_manifest(root)
    paths = m.shard_paths(split)
    if not paths:
        raise ValueError(f"split {split!r} of {root} has no shards")
    fs, _ = filesystem(root)
    fs_paths = [p.split("://", 1)[1] if "://" in p else p for p in paths]
    labels_per_shard = [pq.read_table(p, columns=["label"], filesystem=fs)["label"].to_numpy() for p in fs_paths]
    total = sum(len(x) for x in labels_per_shard)
    if total == 0:
        raise ValueError(f"split {split!r} of {root} is empty")
    rng = np.random.default_rng(seed)
    chosen = np.arange(total) if max_samples is None or max_samples >= total else np.sort(
        rng.choice(total, size=max_samples, replace=False))
    images, labels, corrupt = [], [], 0
    offset = 0
    for path, shard_labels in zip(fs_paths, labels_per_shard, strict=True):
        rows = chosen[(chosen >= offset) & (chosen < offset + len(shard_labels))] - offset
        offset += len(shard_labels)
        if rows.size == 0:
            continue
        column = pq.read_table(path, columns=["image"], filesystem=fs)["image"]
        for r in rows.tolist():
            try:
                images.append(decode_image(column[r].as_py(), channels=m.channels, image_size=image_size))
            except Exception:  # a corrupt image is dropped and counted, as in the training pipeline
                corrupt += 1
                continue
            labels.append(int(shard_labels[r]))
    if not images:
        raise ValueError(f"no decodable images in split {split!r} of {root}")
    x = torch.from_numpy(np.stack(images)).float().div_(255.0)
    mean = torch.tensor(m.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(m.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std, torch.tensor(labels, dtype=torch.long), corrupt


def load_shard_eval_data(root: str, *, train_split: str, test_split: str, image_size: int,
                         max_train: int | None = DEFAULT_MAX_TRAIN, max_test: int | None = DEFAULT_MAX_TEST,
                         seed: int = 0) -> EvalData:
    """Train (probe/kNN memory) and test sets from a shard root, with the manifest's class hierarchy."""
    from hexray.data.manifest import load_manifest

    m = load_manifest(root)
    train_x, train_y, _ = read_split(root, train_split, image_size=image_size, max_samples=max_train, seed=seed,
                                     manifest=m)
    test_x, test_y, _ = read_split(root, test_split, image_size=image_size, max_samples=max_test, seed=seed + 1,
                                   manifest=m)
    return EvalData(
        train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y,
        num_classes=m.num_classes, class_to_superclass=m.class_to_superclass, class_names=list(m.class_names),
        superclass_names=list(m.superclass_names),
    )


def load_run_eval_data(cfg: Any, *, max_train: int | None = DEFAULT_MAX_TRAIN,
                       max_test: int | None = DEFAULT_MAX_TEST, seed: int = 0) -> EvalData:
    """The eval sets of the dataset a run trained on (cfg.data: dataset, path, options, splits, image size)."""
    from hexray.data.registry import prepare_dataset

    d = cfg.data
    root = prepare_dataset(d.dataset, path=d.path, cache_dir=d.cache_dir, **dict(d.options or {}))
    return load_shard_eval_data(root, train_split=d.train_split, test_split=d.eval_split, image_size=d.image_size,
                                max_train=max_train, max_test=max_test, seed=seed)
