"""`manifest.json`: what a shard root holds (classes, hierarchy, splits, shards with sizes and checksums).

Why a manifest: readers must know the class names and the class→superclass map without scanning the data, and
must detect a missing, truncated or replaced shard *before* training starts, naming the file.
Roots may be local directories or any URI pyarrow's filesystems accept (s3://, gs://).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.fs as pafs

from hexray import storage
from hexray.errors import DataError

MANIFEST_NAME = "manifest.json"
FORMAT = "hexray-shards/1"
_CHUNK = 1 << 22


@dataclass(frozen=True)
class ShardInfo:
    """One Parquet file: path relative to the root, row count, size in bytes, sha256 of its bytes."""

    file: str
    count: int
    bytes: int
    sha256: str


@dataclass
class SplitInfo:
    count: int
    shards: list[ShardInfo]
    class_counts: list[int] = field(default_factory=list)
    corrupt: int = 0  # source files that failed to decode and were left out (not counted in `count`)
    corrupt_examples: list[str] = field(default_factory=list)  # the first few of them


@dataclass
class Manifest:
    """The parsed `manifest.json`; `class_to_superclass[c]` is the superclass index of class c (None: no hierarchy)."""

    class_names: list[str]
    superclass_names: list[str]
    class_to_superclass: list[int] | None
    channels: int
    image_size: int | None
    mean: list[float]
    std: list[float]
    splits: dict[str, SplitInfo]
    source: dict[str, Any] = field(default_factory=dict)
    root: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise DataError(f"split {name!r} is not in {self.root}/{MANIFEST_NAME}; it has {sorted(self.splits)}")
        return self.splits[name]

    def shard_paths(self, split: str) -> list[str]:
        return [join(self.root, s.file) for s in self.split(split).shards]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("root")
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], root: str = "") -> Manifest:
        where = f"{root}/{MANIFEST_NAME}" if root else MANIFEST_NAME
        if d.get("format") != FORMAT:
            raise DataError(f"{where}: format must be {FORMAT!r}, got {d.get('format')!r}")
        try:
            splits = {
                name: SplitInfo(
                    count=int(s["count"]),
                    shards=[ShardInfo(**sh) for sh in s["shards"]],
                    class_counts=list(s.get("class_counts", [])),
                    corrupt=int(s.get("corrupt", 0)),
                    corrupt_examples=list(s.get("corrupt_examples", [])),
                )
                for name, s in d["splits"].items()
            }
            return cls(
                class_names=list(d["class_names"]),
                superclass_names=list(d.get("superclass_names") or []),
                class_to_superclass=d.get("class_to_superclass"),
                channels=int(d["channels"]),
                image_size=d.get("image_size"),
                mean=list(d["mean"]),
                std=list(d["std"]),
                splits=splits,
                source=dict(d.get("source") or {}),
                root=root,
            )
        except (KeyError, TypeError) as err:
            raise DataError(f"{where} is malformed: {err!r}") from err


def join(root: str, rel: str) -> str:
    return rel if not root else f"{root.rstrip('/')}/{rel}"


def load_manifest(root: str) -> Manifest:
    """Read `<root>/manifest.json`; the error names the file when it is missing or malformed."""
    fs, base = storage.resolve(root)
    path = join(base, MANIFEST_NAME)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"no shard manifest at {join(root, MANIFEST_NAME)} (run `hexray shard` first)")
    with fs.open_input_stream(path) as f:
        try:
            d = json.loads(f.read().decode("utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{join(root, MANIFEST_NAME)} is not valid JSON: {err}") from err
    return Manifest.from_dict(d, storage.normalize(root))


def sha256_file(fs: pafs.FileSystem, path: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_shards(manifest: Manifest, split: str, level: str = "rows") -> None:
    """Check the split's shards against the manifest, cheapest first; raise naming the first bad file.

    level "size": each shard exists with the recorded byte size (one stat per file);
    "rows": also the Parquet footer's row count (one small read per file); "checksum": also sha256 of the bytes.
    """
    if level not in ("none", "size", "rows", "checksum"):
        raise ValueError(f"verify must be one of none, size, rows, checksum; got {level!r}")
    info = manifest.split(split)
    if info.count == 0 or not info.shards:
        raise DataError(f"split {split!r} of {manifest.root} is empty: no samples to read")
    if level == "none":
        return
    fs, base = storage.resolve(manifest.root)
    paths = [join(base, s.file) for s in info.shards]
    for shard, path, stat in zip(info.shards, paths, fs.get_file_info(paths), strict=True):
        shown = join(manifest.root, shard.file)
        if stat.type != pafs.FileType.File:
            raise FileNotFoundError(f"shard {shown} listed in the manifest is missing")
        if stat.size != shard.bytes:
            raise DataError(f"shard {shown} has {stat.size} bytes but the manifest says {shard.bytes}: "
                             "it was truncated or replaced; re-run `hexray shard`")
        if level in ("rows", "checksum"):
            import pyarrow.parquet as pq

            with fs.open_input_file(path) as f:
                try:
                    rows = pq.ParquetFile(f).metadata.num_rows
                except Exception as err:  # noqa: BLE001 - any footer error means the file is not a shard
                    raise DataError(f"shard {shown} is not a readable Parquet file: {err}") from err
            if rows != shard.count:
                raise DataError(f"shard {shown} holds {rows} rows but the manifest says {shard.count}")
        if level == "checksum" and sha256_file(fs, path) != shard.sha256:
            raise DataError(f"shard {shown} fails its sha256 checksum: its bytes changed since it was written")
    if sum(s.count for s in info.shards) != info.count:
        raise DataError(f"{manifest.root}/{MANIFEST_NAME}: split {split!r} count {info.count} != sum of its shards")
