"""Named datasets → a shard root, written on first use into a cache and reused afterwards.

`prepare_dataset("fashion-mnist")` reads the Debian package's IDX files (`dataset-fashion-mnist`, installed under
/usr/share/datasets/fashion-mnist) or downloads them with torchvision into the cache; `imagenet` and `folder`
shard an ImageFolder tree; `synthetic-hierarchy` renders the generator in `synthetic.py`.
Cache: `data.cache_dir`, `$HEXRAY_CACHE` or `~/.cache/hexray`; shards go to `<cache>/shards/<name>[-<options>]`.
The cache may be a URI (s3://bucket/cache): the driver then writes the shards there once and every node reads
them from there. `data.root` skips all of this and reads a folder `hexray shard` wrote (`dataset_root`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hexray import storage
from hexray.data.manifest import MANIFEST_NAME, load_manifest
from hexray.data.sources import Source, folder_source, idx_source, synthetic_source
from hexray.data.synthetic import GENERATOR_VERSION, SyntheticSpec
from hexray.errors import DataError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt", "Sandal", "Sneaker",
                         "Bag", "Ankle boot"]
FASHION_MNIST_SUPERCLASSES = {
    "tops": ["T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"],
    "bottoms": ["Trouser"],
    "footwear": ["Sandal", "Sneaker", "Ankle boot"],
    "bags": ["Bag"],
}


def cache_root(cache_dir: str | None = None) -> str:
    """The cache location: a local directory or a URI, as given."""
    return storage.normalize(cache_dir or os.environ.get("HEXRAY_CACHE") or str(Path.home() / ".cache" / "hexray"))


def local_cache_root(cache_dir: str | None = None) -> Path:
    """Where downloads go: the cache when it is local, else the default local cache."""
    root = cache_root(cache_dir)
    return Path(root) if not storage.is_remote(root) else Path.home() / ".cache" / "hexray"


def attach_hierarchy(source: Source, groups: dict[str, list[str]]) -> Source:
    from hexray.data.hierarchy import parse_hierarchy

    pairs = [(c, s) for s, classes in groups.items() for c in classes]
    source.superclass_names, source.class_to_superclass = parse_hierarchy(pairs, source.class_names, "hierarchy")
    source.description = {**source.description, "hierarchy": groups}
    return source


def _fashion_mnist_files(cache: Path) -> Path:
    for d in FASHION_MNIST_DIRS:
        if Path(d, "train-images-idx3-ubyte.gz").is_file() or Path(d, "train-images-idx3-ubyte").is_file():
            return Path(d)
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(cache / "downloads"), train=True, download=True)
    FashionMNIST(str(cache / "downloads"), train=False, download=True)
    return cache / "downloads" / "FashionMNIST" / "raw"


def _fashion_mnist(path: str | None, cache: Path, options: dict[str, Any]) -> Source:
    _no_options("fashion-mnist", options)
    source = idx_source(path or _fashion_mnist_files(cache), FASHION_MNIST_CLASSES)
    source.description = {"kind": "idx", "dataset": "fashion-mnist"}  # location-independent: cache keys stay valid
    return attach_hierarchy(source, FASHION_MNIST_SUPERCLASSES)


def _folder(name: str) -> Callable[[str | None, Path, dict[str, Any]], Source]:
    def build(path: str | None, cache: Path, options: dict[str, Any]) -> Source:
        if not path:
            raise DataError(f"dataset {name!r} needs path= (a directory with train/ and val/ class folders)")
        channels = int(options.pop("channels", 3))
        hierarchy = options.pop("hierarchy", None)
        _no_options(name, options)
        source = folder_source(path, channels=channels)
        if hierarchy:
            from hexray.data.hierarchy import load_hierarchy

            source.superclass_names, source.class_to_superclass = load_hierarchy(hierarchy, source.class_names)
            source.description = {**source.description, "hierarchy": str(hierarchy)}
        return source

    return build


def _synthetic(path: str | None, cache: Path, options: dict[str, Any]) -> Source:
    try:
        spec = SyntheticSpec(**options)
    except TypeError as err:
        allowed = sorted(SyntheticSpec.__dataclass_fields__)
        raise DataError(f"synthetic-hierarchy: unknown option in {sorted(options)}; allowed: {allowed}") from err
    return synthetic_source(spec)


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise DataError(f"dataset {name!r} takes no options {sorted(options)}")


DATASETS: dict[str, Callable[[str | None, Path, dict[str, Any]], Source]] = {
    "fashion-mnist": _fashion_mnist,
    "imagenet": _folder("imagenet"),
    "folder": _folder("folder"),
    "synthetic-hierarchy": _synthetic,
}


CACHE_VERSIONS = {"synthetic-hierarchy": GENERATOR_VERSION}


def build_source(name: str, *, path: str | None = None, cache_dir: str | None = None, **options: Any) -> Source:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name](path, local_cache_root(cache_dir), dict(options))


def shard_dir_name(name: str, path: str | None, options: dict[str, Any]) -> str:
    """`<name>` or `<name>-<hash of path and options>`: different inputs never share a cache entry (nor do
    different versions of a generator: shards of an older synthetic-hierarchy are never reused)."""
    if name in CACHE_VERSIONS:
        options = {**options, "generator_version": CACHE_VERSIONS[name]}
    if not path and not options:
        return name
    key = json.dumps({"path": str(Path(path).resolve()) if path else None, **options}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def prepare_dataset(name: str, *, path: str | None = None, cache_dir: str | None = None, progress: bool = True,
                    **options: Any) -> str:
    """Shard root for dataset `name`: written on first use (or finished, if interrupted), reused afterwards."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    root = storage.join(cache_root(cache_dir), "shards", shard_dir_name(name, path, options))
    if storage.is_file(storage.join(root, MANIFEST_NAME)):
        try:
            load_manifest(root)
            return root
        except ValueError:
            pass  # a damaged manifest: the writer re-checks every shard's checksum and rewrites the manifest
    from hexray.data.writer import write_shards

    source = build_source(name, path=path, cache_dir=cache_dir, **options)
    write_shards(source, root, progress=progress)
    return root


def dataset_root(data: Any) -> str:
    """The shard root a run reads (`data` is a DataConfig): `data.root` as given (written by `hexray shard`,
    local or on object storage), else the named dataset's cached shards, written on first use."""
    if data.root:
        return storage.normalize(data.root)
    return prepare_dataset(data.dataset, path=data.path, cache_dir=data.cache_dir, **dict(data.options or {}))


def dataset_splits(data: Any) -> list[str]:
    """The split names a run of `data` (a DataConfig) would find, without writing anything: from the shard manifest
    when there is one (`data.root`, or the named dataset's cache), else from the source files — an image folder's
    split sub-folders are listed, not its images, so this stays quick on ImageNet. Missing inputs raise an error
    that names them."""
    if data.root:
        root = storage.normalize(data.root)
        if not storage.is_file(storage.join(root, MANIFEST_NAME)):
            raise FileNotFoundError(f"data.root: {root} holds no {MANIFEST_NAME} (write the shards with "
                                    f"`hexray shard SRC {root}`)")
        return sorted(load_manifest(root).splits)
    options = dict(data.options or {})
    cached = storage.join(cache_root(data.cache_dir), "shards", shard_dir_name(data.dataset, data.path, options))
    if storage.is_file(storage.join(cached, MANIFEST_NAME)):
        try:
            return sorted(load_manifest(cached).splits)
        except ValueError:
            pass  # damaged: the run rewrites it; judge by the source instead
    if data.dataset in ("imagenet", "folder"):
        from hexray.data.sources import SPLIT_CODES

        folder = Path(data.path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"data.path: {folder} is not a directory (data.dataset {data.dataset!r} reads "
                                    "<path>/<split>/<class>/<image>)")
        found = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name in SPLIT_CODES)
        return found or ["train"]
    if data.dataset == "fashion-mnist":  # the IDX files' two splits (read, or downloaded, by the run itself)
        _no_options("fashion-mnist", options)
        return ["test", "train"]
    return [split.name for split in build_source(data.dataset, path=data.path, cache_dir=data.cache_dir,
                                                 **options).splits]


def check_splits(data: Any, splits: list[str]) -> str:
    """The split the run scores on (`data.eval_split`, or the dataset's val/validation/test); a named split that
    the dataset lacks is an error listing the ones it has."""
    eval_split = data.validation_split(splits)
    for key, split in (("data.train_split", data.train_split), ("data.eval_split", eval_split)):
        if split not in splits:
            raise DataError(f"{key}: split {split!r} is not in dataset {data.root or data.dataset!r} "
                             f"(it has {', '.join(sorted(splits))})")
    return eval_split
