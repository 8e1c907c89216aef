"""The Ray Data pipeline: round trip, per-epoch shuffling across 2 workers, seeded views, bad data."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hexray import storage
from hexray.data.manifest import load_manifest, sha256_file
from hexray.data.pipeline import corrupt_count, decoded_dataset, eval_dataset, train_dataset
from hexray.data.sources import synthetic_source
from hexray.data.synthetic import SyntheticSpec
from hexray.data.writer import write_shards

pytestmark = [pytest.mark.ray]
SPEC = SyntheticSpec(seed=2, num_superclasses=2, classes_per_superclass=2, images_per_class=25, image_size=12)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("shards") / "syn"
    write_shards(synthetic_source(SPEC), out, min_shards=5, workers=1, progress=False)  # 5 shards of 16 train rows
    return str(out)


def by_id(ds, column: str) -> dict[int, np.ndarray]:
    out = {}
    for batch in ds.iter_batches(batch_size=None):
        for i, value in zip(batch["id"], batch[column], strict=True):
            out[int(i)] = np.asarray(value)
    return out


@pytest.mark.timeout(240)
def test_eval_view_round_trips_pixels_labels_and_superclasses(ray_session, shards):
    manifest = load_manifest(shards)
    ds = eval_dataset(shards, split="train", image_size=12)
    rows = {}
    for batch in ds.iter_batches(batch_size=None):
        for k, i in enumerate(batch["id"]):
            rows[int(i)] = (batch["image"][k], int(batch["label"][k]), int(batch["superclass"][k]))
    assert len(rows) == manifest.splits["train"].count
    mean, std = np.array(manifest.mean)[:, None, None], np.array(manifest.std)[:, None, None]
    for path in manifest.shard_paths("train"):
        for r in pq.read_table(path).to_pylist():
            image, label, superclass = rows[r["id"]]
            original = np.asarray(Image.open(io.BytesIO(r["image"]))).transpose(2, 0, 1)
            np.testing.assert_allclose(image * std + mean, original / 255.0, atol=1e-5)
            assert label == r["label"] and superclass == label // 2


@pytest.mark.timeout(240)
def test_decode_only_rows_hold_the_original_uint8_pixels_in_shuffled_order(ray_session, shards):
    """data.augment_in: trainer — Ray Data only decodes; every sample arrives once with its exact pixels."""
    manifest = load_manifest(shards)
    ds = decoded_dataset(shards, image_size=8, seed=0)
    rows = by_id(ds, "image")
    assert len(rows) == manifest.splits["train"].count
    labels = by_id(ds, "label")
    for path in manifest.shard_paths("train"):
        for r in pq.read_table(path).to_pylist():
            original = np.asarray(Image.open(io.BytesIO(r["image"]))).transpose(2, 0, 1)
            assert rows[r["id"]].dtype == np.uint8 and np.array_equal(rows[r["id"]], original)
            assert labels[r["id"]] == r["label"]
    orders = [[int(i) for b in ds.iter_batches(batch_size=None) for i in b["id"]] for _ in range(2)]
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1], "shard order reshuffled per epoch"


def _run_epochs(ds, epochs: int) -> list[list[list[int]]]:
    """ids seen by each of 2 consumers, per epoch, read concurrently like 2 training workers."""
    splits = ds.streaming_split(2, equal=True)  # as Ray Train splits datasets
    seen: list[list[list[int]]] = []
    for _ in range(epochs):
        per_worker: list[list[int]] = [[], []]

        def consume(rank: int, out=per_worker) -> None:
            for batch in splits[rank].iter_batches(batch_size=8):
                out[rank].extend(int(i) for i in batch["id"])

        threads = [threading.Thread(target=consume, args=(r,)) for r in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
        seen.append(per_worker)
    return seen


@pytest.mark.timeout(300)
def test_order_changes_per_epoch_and_no_sample_is_lost_or_duplicated_across_two_workers(ray_session, shards):
    expected = sorted(int(i) for p in load_manifest(shards).shard_paths("train") for i in pq.read_table(p)["id"])
    ds = train_dataset(shards, image_size=8, seed=0, batch_rows=8)
    epochs = _run_epochs(ds, 3)
    for workers in epochs:
        assert all(workers), "each worker gets a share"
        assert sorted(workers[0] + workers[1]) == expected
    orders = [w[0] + w[1] for w in epochs]
    assert orders[0] != orders[1] and orders[1] != orders[2]


@pytest.mark.timeout(240)
def test_views_are_seeded_differ_per_epoch_and_keep_the_manifest_channels(ray_session, shards):
    a = train_dataset(shards, image_size=8, seed=7, batch_rows=8)
    first, second = by_id(a, "view1"), by_id(a, "view1")
    view2 = by_id(train_dataset(shards, image_size=8, seed=7, batch_rows=8), "view2")
    assert not any(np.array_equal(first[i], view2[i]) for i in first), "the two views differ"
    again = by_id(train_dataset(shards, image_size=8, seed=7, batch_rows=8), "view1")
    other = by_id(train_dataset(shards, image_size=8, seed=8, batch_rows=8), "view1")
    assert next(iter(first.values())).shape == (3, 8, 8) and next(iter(first.values())).dtype == np.float32
    assert all(np.array_equal(first[i], again[i]) for i in first), "same seed, same epoch → same views"
    assert not any(np.array_equal(first[i], second[i]) for i in first), "a new epoch draws new augmentations"
    assert not any(np.array_equal(first[i], other[i]) for i in first)


@pytest.mark.timeout(240)
def test_grey_images_stay_one_channel(ray_session, tmp_path):
    from hexray.data.sources import idx_source
    from tests.test_data_shard import write_idx

    rng = np.random.default_rng(0)
    write_idx(tmp_path / "idx", "train", rng.integers(0, 256, (20, 10, 10), dtype=np.uint8), np.arange(20) % 2)
    write_shards(idx_source(tmp_path / "idx"), tmp_path / "out", min_shards=2, workers=1, progress=False)
    batch = next(iter(train_dataset(str(tmp_path / "out"), image_size=8, seed=0).iter_batches(batch_size=None)))
    assert batch["view1"].shape[1:] == (1, 8, 8) and batch["view2"].shape[1:] == (1, 8, 8)
    decoded = next(iter(decoded_dataset(str(tmp_path / "out"), image_size=8, seed=0).iter_batches(batch_size=None)))
    assert decoded["image"].shape[1:] == (1, 10, 10) and decoded["image"].dtype == np.uint8


def _replace_shard(root: Path, index: int, table: pa.Table) -> None:
    """Rewrite one shard and patch the manifest so that only the image bytes are bad, not the bookkeeping."""
    manifest = load_manifest(str(root))
    path = manifest.shard_paths("train")[index]
    pq.write_table(table, path)
    d = json.loads((root / "manifest.json").read_text())
    d["splits"]["train"]["shards"][index].update(bytes=Path(path).stat().st_size,
                                                 sha256=sha256_file(storage.resolve(path)[0], path))
    (root / "manifest.json").write_text(json.dumps(d))


@pytest.mark.timeout(240)
def test_corrupt_and_truncated_images_are_dropped_and_counted(ray_session, tmp_path):
    root = tmp_path / "syn"
    write_shards(synthetic_source(SPEC), root, min_shards=5, workers=1, progress=False)
    path = load_manifest(str(root)).shard_paths("train")[0]
    table = pq.read_table(path).to_pydict()
    bad = {table["id"][0], table["id"][1]}
    table["image"][0] = table["image"][0][: len(table["image"][0]) // 2]  # truncated PNG
    table["image"][1] = b"definitely not an image"
    _replace_shard(root, 0, pa.table(table, schema=pq.read_schema(path)))
    total = load_manifest(str(root)).splits["train"].count
    ds = train_dataset(str(root), image_size=8, seed=0, key="corrupt-test", verify="checksum")
    ids = set(by_id(ds, "view1"))
    assert len(ids) == total - 2 and not ids & bad
    assert corrupt_count("corrupt-test") == 2
    assert len(by_id(decoded_dataset(str(root), image_size=8, seed=0, key="corrupt-decoded"), "image")) == total - 2
    assert corrupt_count("corrupt-decoded") == 2
    assert len(by_id(eval_dataset(str(root), split="train", image_size=8, key="corrupt-eval"), "image")) == total - 2
    assert corrupt_count("corrupt-eval") == 2 and corrupt_count("never-used") == 0


@pytest.mark.timeout(60)
def test_bad_shards_stop_the_dataset_before_training(ray_session, tmp_path):
    root = tmp_path / "syn"
    write_shards(synthetic_source(SPEC), root, min_shards=3, workers=1, progress=False)
    paths = load_manifest(str(root)).shard_paths("train")
    Path(paths[1]).unlink()
    with pytest.raises(FileNotFoundError, match=Path(paths[1]).name):
        train_dataset(str(root), image_size=8, seed=0)
    with pytest.raises(ValueError, match="recipe must be one of"):
        train_dataset(str(root), image_size=8, seed=0, recipe="nope")
    d = json.loads((root / "manifest.json").read_text())
    d["splits"]["test"] = {"count": 0, "shards": []}
    (root / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="split 'test' .* is empty"):
        eval_dataset(str(root), split="test", image_size=8)


@pytest.mark.timeout(120)
def test_local_ray_workers_keep_the_drivers_priority(ray_session):
    """Ray renices workers by +15 by default: next to any other busy process they then got ~1/30 of a core (an
    epoch 10× slower). hexray's local Ray keeps them at the driver's niceness."""
    import os

    import ray

    @ray.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote(), timeout=60) == os.nice(0)
