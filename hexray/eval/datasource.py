"""Capped, class-covering eval image sets straight from a run's Parquet shards (no Ray: offline eval of a small
run should take seconds, and a seeded random subset beats `limit`'s first-N rows, which may be class-sorted).

Images get the eval view of the data pipeline (`hexray.data.decode`, same resize/centre-crop), scaled to
[0, 1] and normalised with the manifest's mean/std. Undecodable images are skipped and counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from hexray.eval.offline import EvalData

DEFAULT_MAX_TRAIN = 5000
DEFAULT_MAX_TEST = 2000


def eval_view(data: bytes, *, channels: int, image_size: int) -> Tensor | None:
    """Encoded bytes → float (C, S, S) in [0, 255], exactly the training pipeline's eval view
    (`hexray.data.decode`: short side resized to S/crop_fraction, centre crop; crop 0.875 from 64 px up);
    None when the bytes do not decode."""
    from hexray.data.decode import decode_image, resize_center_crop

    image = decode_image(data, channels)
    if image is None:
        return None
    return resize_center_crop(image, image_size, 0.875 if image_size >= 64 else 1.0)


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
            image = eval_view(column[r].as_py(), channels=m.channels, image_size=image_size)
            if image is None:  # a corrupt image is dropped and counted, as in the training pipeline
                corrupt += 1
                continue
            images.append(image)
            labels.append(int(shard_labels[r]))
    if not images:
        raise ValueError(f"no decodable images in split {split!r} of {root}")
    x = torch.stack(images).div_(255.0)
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
