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

from hexray.errors import DataError
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

    from hexray import storage
    from hexray.data.manifest import join, load_manifest

    m = manifest or load_manifest(root)
    paths = m.shard_paths(split)
    if not paths:
        raise DataError(f"split {split!r} of {root} has no shards")
    fs, base = storage.resolve(m.root)
    fs_paths = [join(base, s.file) for s in m.split(split).shards]
    labels_per_shard = [pq.read_table(p, columns=["label"], filesystem=fs)["label"].to_numpy() for p in fs_paths]
    total = sum(len(x) for x in labels_per_shard)
    if total == 0:
        raise DataError(f"split {split!r} of {root} is empty")
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
        raise DataError(f"no decodable images in split {split!r} of {root}")
    return _normalized(images, m, image_size), torch.tensor(labels, dtype=torch.long), corrupt


def _normalized(images: list[Tensor], m: Any, image_size: int) -> Tensor:
    """Eval views (C, S, S) in [0, 255] → one (N, C, S, S) batch scaled to [0, 1] and normalised with the
    manifest's mean/std, as training sees them; an empty list gives an empty batch of the right shape."""
    size = (0, m.channels, image_size, image_size)
    x = torch.stack(images).div_(255.0) if images else torch.empty(size)
    mean = torch.tensor(m.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(m.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def share_plan(manifest: Any, split: str, max_rows: int | None, seed: int) -> list[tuple[str, int]]:
    """A seeded sample of at most `max_rows` rows of `split` as (shard file, rows taken from its start): whole
    shards in a seeded order, the last one cut. A `hexray shard` shard is already a uniform random subset of its
    split (the writer permutes samples before cutting shards), so this is a random sample that reads only the
    rows it keeps — what makes a 100k-image bank of ImageNet cheap — and it does not depend on the worker count."""
    shards = manifest.split(split).shards
    order = np.random.default_rng(seed).permutation(len(shards))
    plan, left = [], max_rows if max_rows is not None else sum(s.count for s in shards)
    for i in order:
        if left <= 0:
            break
        take = min(shards[i].count, left)
        plan.append((shards[i].file, take))
        left -= take
    return plan


def read_share(root: str, split: str, *, image_size: int, max_rows: int | None, seed: int = 0, rank: int = 0,
               world: int = 1, manifest: Any | None = None) -> dict[str, Tensor]:
    """Worker `rank` of `world`'s share of `share_plan`'s sample (whole shards, round-robin), decoded with the eval
    view and normalised: {"image", "label", "superclass", "corrupt" (count of undecodable images skipped)}.
    Each worker holds only its share; together they hold the sample once."""
    import pyarrow.parquet as pq

    from hexray import storage
    from hexray.data.manifest import join, load_manifest

    m = manifest or load_manifest(root)
    fs, base = storage.resolve(m.root)
    images, labels, superclasses, corrupt = [], [], [], 0
    for file, take in share_plan(m, split, max_rows, seed)[rank::world]:
        with fs.open_input_file(join(base, file)) as f:
            left = take
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024, columns=["image", "label", "superclass"]):
                rows = batch.slice(0, left).to_pydict()
                for data, label, superclass in zip(rows["image"], rows["label"], rows["superclass"], strict=True):
                    image = eval_view(data, channels=m.channels, image_size=image_size)
                    if image is None:
                        corrupt += 1
                        continue
                    images.append(image)
                    labels.append(int(label))
                    superclasses.append(int(superclass))
                left -= batch.num_rows
                if left <= 0:
                    break
    return {"image": _normalized(images, m, image_size), "label": torch.tensor(labels, dtype=torch.long),
            "superclass": torch.tensor(superclasses, dtype=torch.long), "corrupt": corrupt}


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
    from hexray.data.registry import dataset_root

    d = cfg.data
    root = dataset_root(d)
    from hexray.data.manifest import load_manifest

    test_split = d.eval_split or d.validation_split(load_manifest(root).splits)
    return load_shard_eval_data(root, train_split=d.train_split, test_split=test_split, image_size=d.image_size,
                                max_train=max_train, max_test=max_test, seed=seed)
