"""The Ray Data pipeline: Parquet shards → decode → two augmented views (train) or a centre crop (eval).

- Reading: `read_parquet` over the manifest's shard files, local or on any pyarrow filesystem (s3://, gs://).
  Train reads shuffle the *file order* every epoch: a `FileShuffleConfig(seed)` reseeded with Ray's execution
  index, i.e. once per pass over the dataset (tested), counted from the run's epoch at the Dataset's first pass
  (`epoch_shuffle.EpochFileShuffle`: a resumed run continues the same stream). Rows inside a shard were permuted once
  at write time. For row-level mixing across shards the CONSUMER adds a local shuffle buffer:
  `shard.iter_torch_batches(batch_size=..., local_shuffle_buffer_size=LOCAL_SHUFFLE_BUFFER)` (config:
  `data.shuffle_buffer`); it costs memory on the training worker, not in the object store.
- Decode + augment run batch-wise in `map_batches` tasks on CPU with a small fractional CPU request, so training
  workers holding 0.25–0.5 CPU on a 2-core machine can always be scheduled beside them. Each batch: decode every
  image (corrupt ones dropped and counted), stack, then `views.ViewMaker` (two `gpu_augment.augment_view` calls
  on the whole batch, the recipes of design/HEX.md, normalised with the manifest's mean/std; grey stays 1 channel).
- Or decode only (`decoded_dataset`, for `data.augment_in: trainer`): rows carry the uint8 image on a fixed square
  canvas (`decode_canvas`) and the training worker makes the views on its own device with the same `ViewMaker`.
- Determinism: each batch's generator is seeded from (seed, epoch, the batch's ids), so a given seed reproduces
  the same views for the same batch composition (fixed by the shard layout when shards hold ≥ batch_size rows).
- Memory: Ray Data streams with backpressure; batch rows are capped so one output block stays ~32 MB.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from hexray import storage
from hexray.data.manifest import Manifest, join, load_manifest, verify_shards

LOCAL_SHUFFLE_BUFFER = 4096
COUNTERS_NAME = "hexray-data-counters"
COUNTERS_NAMESPACE = "hexray"
_BLOCK_BYTES = 32 * 2**20
COLUMNS = ["id", "image", "label", "superclass"]


def data_key(root: str, split: str) -> str:
    """The key under which corrupt samples of (root, split) are counted; pass it to `corrupt_count`."""
    return f"{root.rstrip('/')}::{split}"


@functools.cache
def _counters_class():
    import ray

    @ray.remote(num_cpus=0)
    class DataCounters:
        """Counts dropped samples per dataset key, across all map tasks of all pipelines."""

        def __init__(self) -> None:
            self.counts: dict[str, int] = {}

        def add(self, key: str, n: int) -> int:
            self.counts[key] = self.counts.get(key, 0) + n
            return self.counts[key]

        def get(self, key: str) -> int:
            return self.counts.get(key, 0)

    return DataCounters


_HANDLES: dict[str, Any] = {}


def _counters_actor():
    """The named counters actor; this process keeps its handle, since Ray kills an actor nobody holds."""
    import ray

    cluster = ray.get_runtime_context().gcs_address
    if cluster not in _HANDLES:
        _HANDLES[cluster] = _counters_class().options(
            name=COUNTERS_NAME, namespace=COUNTERS_NAMESPACE, get_if_exists=True).remote()
    return _HANDLES[cluster]


def _record_corrupt(key: str, n: int) -> None:
    import ray

    ray.get(_counters_actor().add.remote(key, n))


def corrupt_count(key: str) -> int:
    """Samples dropped so far as undecodable under `key` (see `data_key`); 0 when none were."""
    import ray

    try:
        actor = ray.get_actor(COUNTERS_NAME, namespace=COUNTERS_NAMESPACE)
    except ValueError:
        return 0
    return int(ray.get(actor.get.remote(key)))


def _epoch() -> int:
    """This pass's index over the dataset (Ray's execution index, carried to tasks in the DataContext)."""
    import ray.data

    return int(getattr(ray.data.DataContext.get_current(), "_execution_idx", 0))


def _kept(batch: dict[str, np.ndarray], ok: np.ndarray, key: str) -> dict[str, np.ndarray]:
    dropped = int((~ok).sum())
    if dropped:
        _record_corrupt(key, dropped)
    return {k: np.asarray(batch[k])[ok].astype(np.int64) for k in ("label", "superclass", "id")}


def two_view_batch(batch: dict[str, np.ndarray], *, key: str, channels: int, recipe: str, image_size: int,
                   seed: int, mean: list[float], std: list[float], first_epoch: int = 0,
                   crop_scale: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """map_batches UDF: encoded rows → `view1`, `view2` (float32 N×C×S×S), `label`, `superclass`, `id`."""
    import torch

    from hexray.data.decode import decode_batch
    from hexray.data.gpu_augment import pad_to_batch
    from hexray.data.views import ViewMaker

    images, ok = decode_batch(batch["image"], channels)
    out = _kept(batch, ok, key)
    if not images:
        empty = np.zeros((0, channels, image_size, image_size), dtype=np.float32)
        return {"view1": empty, "view2": empty.copy(), **out}
    if all(im.shape == images[0].shape for im in images):
        x, sizes = torch.stack(images), None
    else:
        x, sizes = pad_to_batch(images)
    maker = ViewMaker(recipe, image_size, seed, tuple(mean), tuple(std), crop_scale=crop_scale)
    view1, view2 = maker(x, out["id"], first_epoch + _epoch(), sizes)
    return {"view1": view1.numpy(), "view2": view2.numpy(), **out}


def decoded_batch(batch: dict[str, np.ndarray], *, key: str, channels: int, canvas: int) -> dict[str, np.ndarray]:
    """map_batches UDF: encoded rows → `image` (uint8 N×C×canvas×canvas), `label`, `superclass`, `id`."""
    import torch

    from hexray.data.decode import decode_batch, fit_canvas

    images, ok = decode_batch(batch["image"], channels)
    out = _kept(batch, ok, key)
    if not images:
        return {"image": np.zeros((0, channels, canvas, canvas), dtype=np.uint8), **out}
    return {"image": torch.stack([fit_canvas(im, canvas) for im in images]).numpy(), **out}


def eval_batch(batch: dict[str, np.ndarray], *, key: str, channels: int, image_size: int, crop_fraction: float,
               mean: list[float], std: list[float]) -> dict[str, np.ndarray]:
    """map_batches UDF: encoded rows → `image` (float32 N×C×S×S, resized + centre-cropped), labels, ids."""
    import torch

    from hexray.data.decode import decode_batch, resize_center_crop

    images, ok = decode_batch(batch["image"], channels)
    out = _kept(batch, ok, key)
    if not images:
        return {"image": np.zeros((0, channels, image_size, image_size), dtype=np.float32), **out}
    x = torch.stack([resize_center_crop(im, image_size, crop_fraction) for im in images]) / 255.0
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return {"image": ((x - m) / s).numpy(), **out}


def _rows_per_batch(channels: int, image_size: int, views: int, bytes_per_value: int = 4,
                    most: int = 256) -> int:
    per_row = views * channels * image_size * image_size * bytes_per_value
    return int(max(8, min(most, _BLOCK_BYTES // per_row)))


def decode_canvas(manifest: Manifest, image_size: int, decode_size: int | None = None) -> int:
    """Side of the square uint8 canvas decoded images are stored on when the trainer augments.

    `decode_size` when given; else the dataset's own size when all its images share one (Fashion-MNIST, CIFAR,
    synthetic: decoding is then exact); else image_size × 8/7 (256 for 224, the usual resize-then-crop ratio):
    random resized crops are then taken from the centre square of each image, resized so its short side is that.
    """
    if decode_size:
        return int(decode_size)
    if manifest.image_size:
        return int(manifest.image_size)
    return max(image_size, round(image_size * 8 / 7))


def _read(manifest: Manifest, split: str, *, shuffle_seed: int | None, read_cpus: float, first_epoch: int = 0):
    import ray.data

    from hexray.data.epoch_shuffle import EpochFileShuffle

    fs, base = storage.resolve(manifest.root)
    paths = [join(base, s.file) for s in manifest.split(split).shards]
    shuffle = None if shuffle_seed is None else EpochFileShuffle(seed=shuffle_seed, first_epoch=first_epoch)
    # Ray's DataSourceV2 Parquet reader lists files and reads every footer again at the start of each
    # execution, through a fresh pool of 32 actor processes: 4 s per epoch on a 2-core machine (1 s with one
    # actor), all of it idle trainer time. The manifest already holds every shard's rows and checksum, so the
    # V1 reader, which resolves files and metadata once when the Dataset is built, starts an epoch in 0.5 s.
    context = ray.data.DataContext.get_current()
    previous, context.use_datasource_v2 = context.use_datasource_v2, False
    try:
        ds = ray.data.read_parquet(paths, filesystem=fs, shuffle=shuffle, num_cpus=read_cpus)
    finally:
        context.use_datasource_v2 = previous
    return ds.select_columns(COLUMNS)


def _open(root: str | Manifest, split: str, verify: str) -> Manifest:
    manifest = root if isinstance(root, Manifest) else load_manifest(root)
    verify_shards(manifest, split, verify)
    return manifest


def _encoded_rows(root: str | Manifest, split: str, verify: str, key: str | None, *, shuffle_seed: int | None,
                  num_cpus: float, limit: int | None, first_epoch: int = 0) -> tuple[Manifest, str, Any]:
    """The checked manifest, the corrupt-count key and the (optionally limited) Dataset of encoded rows."""
    manifest = _open(root, split, verify)
    key = key or data_key(manifest.root, split)
    _counters_actor()  # created by the driver, so it lives as long as the run
    ds = _read(manifest, split, shuffle_seed=shuffle_seed, read_cpus=num_cpus, first_epoch=first_epoch)
    return manifest, key, (ds.limit(limit) if limit is not None else ds)


def train_dataset(root: str | Manifest, *, split: str = "train", recipe: str = "simclr", image_size: int,
                  seed: int, limit: int | None = None, num_cpus: float = 0.5, batch_rows: int | None = None,
                  verify: str = "rows", key: str | None = None, first_epoch: int = 0,
                  crop_scale: tuple[float, float] | None = None) -> Any:
    """Two-view training dataset (`ray.data.Dataset`) over a shard root; checks the shards before returning.

    verify: "size" (stat each shard), "rows" (also Parquet footers, the default), "checksum" (also sha256).
    Corrupt images are dropped and counted under `key` (default `data_key(root, split)`). `first_epoch`: the
    run's epoch at this Dataset's first pass (a resumed run's completed epochs), so that file order and views
    continue the uninterrupted run's (hexray.data.epoch_shuffle).
    """
    from hexray.data.gpu_augment import RECIPES

    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    manifest, key, ds = _encoded_rows(root, split, verify, key, shuffle_seed=seed, num_cpus=num_cpus, limit=limit,
                                      first_epoch=first_epoch)
    kwargs = dict(key=key, channels=manifest.channels, recipe=recipe, image_size=image_size, seed=seed,
                  mean=list(manifest.mean), std=list(manifest.std), first_epoch=first_epoch, crop_scale=crop_scale)
    rows = batch_rows or _rows_per_batch(manifest.channels, image_size, views=2)
    return ds.map_batches(two_view_batch, fn_kwargs=kwargs, batch_size=rows, batch_format="numpy",
                          num_cpus=num_cpus)


def decoded_dataset(root: str | Manifest, *, split: str = "train", image_size: int, seed: int,
                    limit: int | None = None, num_cpus: float = 0.5, decode_size: int | None = None,
                    verify: str = "rows", key: str | None = None, first_epoch: int = 0) -> Any:
    """Decode-only training dataset (`data.augment_in: trainer`): shuffled like `train_dataset` (`first_epoch`
    likewise), rows hold the uint8 `image` on a `decode_canvas` square; make the views on the worker with
    `views.ViewMaker`."""
    manifest, key, ds = _encoded_rows(root, split, verify, key, shuffle_seed=seed, num_cpus=num_cpus, limit=limit,
                                      first_epoch=first_epoch)
    canvas = decode_canvas(manifest, image_size, decode_size)
    rows = _rows_per_batch(manifest.channels, canvas, views=1, bytes_per_value=1, most=1024)
    return ds.map_batches(decoded_batch, fn_kwargs=dict(key=key, channels=manifest.channels, canvas=canvas),
                          batch_size=rows, batch_format="numpy", num_cpus=num_cpus)


def eval_dataset(root: str | Manifest, *, split: str, image_size: int, limit: int | None = None,
                 num_cpus: float = 0.5, crop_fraction: float | None = None, verify: str = "rows",
                 key: str | None = None) -> Any:
    """Eval dataset: `image` resized and centre-cropped (crop fraction 0.875 from 64 px up, else 1), in file order."""
    manifest, key, ds = _encoded_rows(root, split, verify, key, shuffle_seed=None, num_cpus=num_cpus, limit=limit)
    fraction = crop_fraction if crop_fraction is not None else (0.875 if image_size >= 64 else 1.0)
    kwargs = dict(key=key, channels=manifest.channels, image_size=image_size, crop_fraction=fraction,
                  mean=list(manifest.mean), std=list(manifest.std))
    rows = _rows_per_batch(manifest.channels, image_size, views=1)
    return ds.map_batches(eval_batch, fn_kwargs=kwargs, batch_size=rows, batch_format="numpy", num_cpus=num_cpus)
