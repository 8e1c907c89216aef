"""Write a `Source` as Parquet shards + `manifest.json`, in parallel and resumably.

Plan first (deterministic): samples are permuted with a fixed seed, so every shard mixes all classes (an
ImageFolder listing is sorted by class), then cut into shards of ~`shard_mb` MB (at least `min_shards` per split,
so per-epoch file shuffling has something to shuffle). Each shard is written to a temporary name, renamed, and
followed by a sidecar `<shard>.json` holding its plan fingerprint and sha256: a re-run skips every shard whose
sidecar matches the plan and whose bytes still match the checksum, and rewrites the rest.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hexray import storage
from hexray.data.manifest import MANIFEST_NAME, Manifest, ShardInfo, SplitInfo, sha256_file
from hexray.data.sources import Source, SplitSource
from hexray.errors import DataError

SCHEMA = pa.schema([("id", pa.int64()), ("image", pa.binary()), ("label", pa.int64()), ("superclass", pa.int64())])
PLAN_SEED = 0
CORRUPT_EXAMPLES = 20  # corrupt file names kept in the manifest (the count is always exact)


@dataclass
class ShardTask:
    """Everything one worker needs to write one shard (small: a slice of arrays or a list of paths).

    path: where the shard goes (a local path or a URI); file: the same, relative to the shard root."""

    path: str
    file: str
    fingerprint: str
    ids: np.ndarray
    labels: np.ndarray
    superclasses: np.ndarray
    arrays: np.ndarray | None = None
    paths: list[str] | None = None
    synthetic: object | None = None
    indices: np.ndarray | None = None
    split: str = ""


def encode_png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _sample_bytes(split: SplitSource, i: int) -> bytes:
    if split.arrays is not None:
        return encode_png(split.arrays[i])
    if split.paths is not None:
        return Path(split.paths[i]).read_bytes()
    from hexray.data.synthetic import render

    return encode_png(render(split.synthetic, split.name, int(split.labels[i]), i))


def _estimate_bytes(split: SplitSource) -> float:
    """Estimated encoded size of the whole split: file sizes as found, or a few encoded samples."""
    if split.paths is not None:
        return float(sum(os.path.getsize(p) for p in split.paths))
    probe = range(0, split.count, max(1, split.count // 32))
    sizes = [len(_sample_bytes(split, i)) for i in probe]
    return float(np.mean(sizes)) * split.count


def decodes(data: bytes) -> bool:
    """Whether an encoded image file decodes completely. JPEGs decode at 1/8 scale (`draft`): the whole bitstream
    is still parsed, so truncation and corruption show, at a fraction of a full decode's cost."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
        return True
    except Exception:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBomb)
        return False


def write_shard(task: ShardTask) -> dict:
    """Encode and write one shard; returns its sidecar record. Runs in a worker process. Image files that do not
    decode are left out and listed in the record (`corrupt`: their positions in the task, `corrupt_files`)."""
    images: list[bytes] = []
    corrupt: list[int] = []
    if task.arrays is not None:
        images = [encode_png(a) for a in task.arrays]
    elif task.paths is not None:
        for k, p in enumerate(task.paths):
            data = Path(p).read_bytes()
            if decodes(data):
                images.append(data)
            else:
                corrupt.append(k)
    else:
        from hexray.data.synthetic import render

        images = [encode_png(render(task.synthetic, task.split, int(lbl), int(i)))
                  for lbl, i in zip(task.labels, task.indices, strict=True)]
    keep = np.setdiff1d(np.arange(len(task.ids)), corrupt)
    table = pa.table({"id": task.ids[keep], "image": pa.array(images, pa.binary()), "label": task.labels[keep],
                      "superclass": task.superclasses[keep]}, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none", row_group_size=max(1, min(len(images), 4096)))
    data = buf.getvalue()
    storage.write_bytes(task.path, data)  # all or nothing, locally and on object storage
    record = {"fingerprint": task.fingerprint, "count": len(images), "bytes": len(data),
              "sha256": hashlib.sha256(data).hexdigest(), "corrupt": corrupt,
              "corrupt_files": [task.paths[k] for k in corrupt] if task.paths else []}
    storage.write_text(f"{task.path}.json", json.dumps(record))
    return record


def _finished(task: ShardTask) -> dict | None:
    """The shard's sidecar record if the shard on disk is complete and belongs to this plan, else None."""
    fs, path = storage.resolve(task.path)
    shard, sidecar = fs.get_file_info([path, f"{path}.json"])
    if shard.type != pafs.FileType.File or sidecar.type != pafs.FileType.File:
        return None
    try:
        record = json.loads(storage.read_text(f"{task.path}.json"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if record.get("fingerprint") != task.fingerprint or shard.size != record.get("bytes"):
        return None
    if sha256_file(fs, path) != record.get("sha256"):
        return None
    return record


class LineProgress:
    """tqdm's interface for output that is not a terminal: a plain line at most every `every_s` seconds and at
    the end, no carriage returns or ANSI codes."""

    def __init__(self, *, total: int, desc: str, disable: bool = False, every_s: float = 5.0, **_: object) -> None:
        self.total, self.desc, self.disable, self.every_s = total, desc, disable, every_s
        self.n, self._start = 0, time.monotonic()
        self._last = self._start

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.disable and self.n and not exc[0]:
            self._line()

    def update(self, n: int) -> None:
        self.n += n
        if not self.disable and time.monotonic() - self._last >= self.every_s and self.n < self.total:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        print(f"{self.desc}: {self.n}/{self.total} images ({100 * self.n / max(1, self.total):.0f}%, "
              f"{self._last - self._start:.0f} s)", file=sys.stderr, flush=True)


def plan_shards(source: Source, out: str, shard_mb: float, min_shards: int) -> dict[str, list[ShardTask]]:
    superclass_of = np.asarray(source.class_to_superclass if source.class_to_superclass is not None
                               else [-1] * len(source.class_names), dtype=np.int64)
    plans: dict[str, list[ShardTask]] = {}
    for split in source.splits:
        n = split.count
        num = max(math.ceil(_estimate_bytes(split) / (shard_mb * 2**20)), min_shards)
        num = max(1, min(num, n))
        order = np.random.default_rng(PLAN_SEED).permutation(n)
        tasks = []
        for k, idx in enumerate(np.array_split(order, num)):
            ids = split.ids[idx]
            fp = hashlib.sha256(json.dumps(source.description, sort_keys=True, default=str).encode()
                                + json.dumps(source.class_to_superclass).encode() + ids.tobytes()).hexdigest()
            file = f"{split.name}/part-{k:05d}-of-{num:05d}.parquet"
            tasks.append(ShardTask(
                path=storage.join(out, file), file=file, fingerprint=fp, ids=ids,
                labels=split.labels[idx], superclasses=superclass_of[split.labels[idx]],
                arrays=None if split.arrays is None else split.arrays[idx],
                paths=None if split.paths is None else [split.paths[i] for i in idx],
                synthetic=split.synthetic, indices=idx, split=split.name,
            ))
        plans[split.name] = tasks
    return plans


def write_shards(source: Source, out: str | Path, *, shard_mb: float = 128.0, min_shards: int = 8,
                 workers: int | None = None, progress: bool = True) -> Manifest:
    """Write (or finish writing) `source` under `out`, a local directory or a URI (s3://bucket/prefix);
    returns the manifest, also saved as `out/manifest.json`."""
    from tqdm import tqdm

    if shard_mb <= 0:
        raise DataError(f"shard size must be > 0 MB, got {shard_mb}")
    out = storage.normalize(str(out))
    plans = plan_shards(source, out, shard_mb, max(1, min_shards))
    for split in plans:
        storage.make_dirs(storage.join(out, split))
    tasks = [t for ts in plans.values() for t in ts]
    records: dict[str, dict] = {}
    pending = []
    for task in tasks:
        done = _finished(task)
        if done is None:
            pending.append(task)
        else:
            records[task.path] = done
    workers = max(1, min(workers or os.cpu_count() or 1, len(pending) or 1))
    total = sum(len(t.ids) for t in pending)
    show = progress and bool(pending)
    bar_type = tqdm if sys.stderr.isatty() else LineProgress  # a log file gets lines, not redrawn bars
    with bar_type(total=total, unit="img", desc=f"shard → {out}", disable=not show) as bar:
        if workers == 1:
            for task in pending:
                records[task.path] = write_shard(task)
                bar.update(len(task.ids))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(write_shard, t): t for t in pending}
                for fut in as_completed(futures):
                    records[futures[fut].path] = fut.result()
                    bar.update(len(futures[fut].ids))
    splits = {}
    for name, ts in plans.items():
        labels = np.concatenate([np.delete(t.labels, records[t.path].get("corrupt", [])) for t in ts])
        shards = [ShardInfo(file=t.file, count=records[t.path]["count"],
                            bytes=records[t.path]["bytes"], sha256=records[t.path]["sha256"]) for t in ts]
        counts = np.bincount(labels, minlength=len(source.class_names)).tolist()
        bad = sorted(f for t in ts for f in records[t.path].get("corrupt_files", []))
        splits[name] = SplitInfo(count=int(labels.shape[0]), shards=shards, class_counts=counts, corrupt=len(bad),
                                 corrupt_examples=bad[:CORRUPT_EXAMPLES])
    manifest = Manifest(
        class_names=source.class_names, superclass_names=source.superclass_names,
        class_to_superclass=source.class_to_superclass, channels=source.channels, image_size=source.image_size,
        mean=source.mean, std=source.std, splits=splits, source=source.description, root=out,
    )
    storage.write_text(storage.join(out, MANIFEST_NAME), json.dumps(manifest.to_dict(), indent=1))
    return manifest
