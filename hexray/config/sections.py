"""The orchestration sections of a training config (data, optimizer, scaling, checkpoints, probes, fast path, run).

Model/method/HEX sections live next to the code that uses them (`hexray.methods.settings`,
`hexray.models.settings`, `hexray.losses.settings`); `TrainConfig` in `hexray.config` stacks them all. Each section
checks its own values in `__post_init__`; the messages name the dotted key and the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hexray.config.binding import choice_message

DATASET_NAMES = ("fashion-mnist", "imagenet", "folder", "synthetic-hierarchy")  # = hexray.data.registry.DATASETS
LOGGER_NAMES = ("tensorboard", "mlflow")  # what hexray.train.loggers.build_loggers builds
PATH_DATASETS = ("imagenet", "folder")  # registry names that read the user's files and need `data.path`


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _non_negative(section: str, obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(value is None or value >= 0, f"{section}.{name} must be >= 0, got {value!r}")


def _positive(section: str, obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(value is None or value > 0, f"{section}.{name} must be > 0, got {value!r}")


@dataclass
class DataConfig:
    """Which dataset, how it is augmented and batched.

    dataset: a `hexray.data.registry` name (fashion-mnist, imagenet, folder, synthetic-hierarchy); `path` is the
    user's files for imagenet/folder; `options` go to `prepare_dataset` (e.g. synthetic-hierarchy's sizes).
    Its shards are written on first use into `cache_dir` (default ~/.cache/hexray; a URI such as s3://b/cache
    puts them where every node can read them).
    eval_split: where kNN monitors and the final table score; None = the dataset's validation split (`val`,
    else `validation`, else `test`: `validation_split`).
    root: instead of dataset/path/options, a folder `hexray shard` wrote — local, file://, s3://, gs:// — read
    directly by whichever node runs the read (no local copy); its manifest names the classes and hierarchy.
    batch_size is the GLOBAL batch over all workers (each worker gets batch_size / scaling.num_workers), because
    contrastive losses gather negatives over the whole global batch.
    augment_in: where the two views are made. `pipeline`: Ray Data's CPU map tasks decode and augment, the
    trainer receives float views. `trainer`: Ray Data only decodes (uint8 rows on a square canvas of side
    `decode_size`; default: the dataset's own size when uniform, else image_size × 8/7) and each training worker
    augments its batch on its own device. `auto`: trainer (see `hexray.train.launch.augment_in_trainer`).
    crop_scale: [low, high] of both global views' random-resized crop, instead of the recipe's (simclr:
    [0.08, 1]); null = the recipe's.
    """

    dataset: str = "fashion-mnist"
    path: str | None = None
    cache_dir: str | None = None
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    image_size: int = 28
    recipe: Literal["simclr", "byol", "simclr_small", "dino"] = "simclr"  # = data.gpu_augment.RECIPES (tested)
    batch_size: int = 256
    train_split: str = "train"
    eval_split: str | None = None
    limit_train: int | None = None
    limit_eval: int | None = None
    shuffle_buffer: int = 4096
    augment_in: Literal["auto", "pipeline", "trainer"] = "auto"
    decode_size: int | None = None
    crop_scale: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _require(bool(self.dataset), "data.dataset must name a dataset, got ''")
        _require(self.crop_scale is None or 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0,
                 f"data.crop_scale must be [low, high] with 0 < low <= high <= 1, got {self.crop_scale!r}")
        _require(bool(self.root) or self.dataset in DATASET_NAMES,
                 choice_message("data.dataset", self.dataset, DATASET_NAMES))
        _require(not (self.root and self.path),
                 "data.root and data.path exclude each other: root is a folder of shards (`hexray shard` output), "
                 "path the images of data.dataset; give one")
        _require(
            bool(self.root) or self.dataset not in PATH_DATASETS or bool(self.path),
            f"data.path is required for data.dataset={self.dataset!r} (the directory holding its images)",
        )
        _positive("data", self, "image_size", "batch_size", "limit_train", "limit_eval", "decode_size")
        _non_negative("data", self, "shuffle_buffer")
        _require(bool(self.train_split), "data.train_split must be set")
        _require(self.eval_split is None or bool(self.eval_split), "data.eval_split must name a split or be null")

    def validation_split(self, splits: Any) -> str:
        """`eval_split`, or the dataset's validation split among `splits` (names in its manifest)."""
        if self.eval_split:
            return self.eval_split
        for name in ("val", "validation", "test"):
            if name in splits:
                return name
        raise ValueError(f"data.eval_split: the dataset has no val/validation/test split (it has "
                         f"{', '.join(sorted(splits))}); name the split to score on")

    @property
    def label(self) -> str:
        """What a run trains on, in run names and messages: the dataset, or the shard root's last folder."""
        from hexray.storage import basename

        return basename(self.root) if self.root else self.dataset


@dataclass
class OptimConfig:
    """Optimizer and schedule: linear warm-up then cosine decay to `lr × min_lr_ratio`.

    lr is the base rate per 256 images; the train loop uses lr × batch_size / 256 (Goyal et al. scaling rule; like
    the reference, the accumulation factor is not in it).
    exclude_bias_and_norm: no weight decay (and no LARS adaptation) for biases and norm parameters.
    lars_eta / clip_lr: LARS trust coefficient η and the reference's trust-ratio clipping (ratio ≤ lr).
    accumulate_steps: k micro-batches of data.batch_size per optimizer step; each micro-batch's loss is computed on
      its own batch (its own negatives and ε, as the reference), gradients are averaged over the k.
    """

    name: Literal["lars", "sgd", "adamw"] = "lars"
    lr: float = 0.3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    exclude_bias_and_norm: bool = True
    lars_eta: float = 0.02
    clip_lr: bool = True
    accumulate_steps: int = 1

    def __post_init__(self) -> None:
        _positive("optim", self, "lr", "grad_clip", "lars_eta", "accumulate_steps")
        _non_negative("optim", self, "weight_decay", "warmup_epochs")
        _require(0.0 <= self.momentum < 1.0, f"optim.momentum must be in [0, 1), got {self.momentum!r}")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")


@dataclass
class ModelSection:
    """Whole-model switches that are neither the backbone's nor a head's.

    sync_bn: BatchNorm statistics over the global batch (torch SyncBatchNorm on GPU, hexray's own on CPU/gloo):
      `auto` = on when there is more than one worker, as the reference (SyncBN) runs.
    """

    sync_bn: Literal["auto", "on", "off"] = "auto"

    def enabled(self, world_size: int) -> bool:
        return self.sync_bn == "on" or (self.sync_bn == "auto" and world_size > 1)


@dataclass
class ScalingSection:
    """Where training runs: the only section that changes between 1 CPU, N GPUs and N nodes (Ray ScalingConfig).

    cpus_per_worker: None = auto (a fraction of a CPU on small machines, so Ray Data keeps CPUs for decoding).
    resources_per_worker: extra custom Ray resources, e.g. {"accelerator_type:H100": 0.001}.
    placement_strategy: Ray placement-group strategy for the workers.
    collective_timeout_s: how long a rank waits in a collective (NCCL/gloo all-gather of negatives, all-reduce of
      gradients) before the run fails with a message naming this key, instead of hanging on a dead or stalled peer.
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 1.0
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    collective_timeout_s: int = 1800

    def __post_init__(self) -> None:
        _positive("scaling", self, "num_workers", "cpus_per_worker", "gpus_per_worker", "collective_timeout_s")
        for key, amount in self.resources_per_worker.items():
            _require(amount >= 0, f"scaling.resources_per_worker.{key} must be >= 0, got {amount!r}")


@dataclass
class CheckpointSection:
    """Checkpoints every `every_epochs` to run.storage_path, keeping the best `keep` by `metric` (None = keep all).

    max_failures: worker failures survived by restarting from the latest checkpoint (-1 = unlimited, as in Ray).
    init_from: a checkpoint directory to start a NEW run from (weights, optimizer, epoch and step), with this
    config's learning rate re-applied; used by PBT to exploit another trial. A run's own latest checkpoint (a
    restart after a failure, or --resume) always wins over it.
    """

    every_epochs: int = 1
    keep: int | None = 2
    metric: str = "knn/top1"
    mode: Literal["max", "min"] = "max"
    max_failures: int = 0
    init_from: str | None = None

    def __post_init__(self) -> None:
        _positive("checkpoint", self, "every_epochs", "keep")
        _require(bool(self.metric), "checkpoint.metric must name a reported metric, e.g. 'knn/top1' or 'loss'")
        _require(self.max_failures >= -1, f"checkpoint.max_failures must be >= -1, got {self.max_failures!r}")


@dataclass
class ProbeSection:
    """Online monitors: a detached linear head trained alongside (fine labels, and superclasses when known) and a
    kNN monitor (cosine, temperature-weighted, k = knn_k) over the eval split every `knn_every_epochs` (0 = off).
    """

    online: bool = True
    online_lr: float = 0.1
    knn_every_epochs: int = 1
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_train_limit: int | None = 10000
    knn_eval_limit: int | None = 2000

    def __post_init__(self) -> None:
        _positive("probe", self, "online_lr", "knn_k", "knn_temperature", "knn_train_limit", "knn_eval_limit")
        _non_negative("probe", self, "knn_every_epochs")


@dataclass
class EvalSection:
    """The end-of-run table: kNN@20 and a linear probe on the pretrained backbone, a random-init copy and raw pixels.

    The training workers compute it in parallel, each over its share of the sample (whole shards, round-robin);
    rank 0 scores the gathered features; the driver only prints the numbers. Memory therefore scales with these
    caps, never with the dataset: bank_size training images form the kNN bank and the probe's training set
    (100k by default, as kNN evaluations of ImageNet usually use; None = the whole split, also capped by
    data.limit_train), query_size eval-split images are scored (None = all, also capped by data.limit_eval).
    probe_train_size: of the bank, how many train the linear probe (None = all of it).
    raw_pixels_side: raw-pixel features are average-pooled to at most this side (28-px Fashion-MNIST stays as is;
      a 224-px ImageNet image becomes 32×32×3, not 150 528 values per image).
    """

    bank_size: int | None = 100_000
    query_size: int | None = None
    probe_train_size: int | None = None
    probe_epochs: int = 30
    raw_pixels_side: int = 32

    def __post_init__(self) -> None:
        _positive("eval", self, "bank_size", "query_size", "probe_train_size", "probe_epochs", "raw_pixels_side")


@dataclass
class FastPathSection:
    """Speed switches; `auto` picks what the worker's hardware runs fastest (on a CPU with AVX512-BF16/AMX, bf16
    + channels_last made the 2-core convnet step ~2× faster than float32; docs/default-recipe.md).

    amp: mixed precision: `bf16` autocast, `fp16` autocast with a GradScaler (dynamic loss scaling), `auto` = bf16
    on GPU and on a CPU with native bf16, off on other CPUs; losses and evaluation stay float32. channels_last:
    NHWC memory format for convolutions (`auto` = on, GPU and CPU); compile: torch.compile (off by
    default: compiling costs more than it saves in short runs); fused_optimizer: fused/foreach optimizer kernels;
    gpu_augment: the older spelling of `data.augment_in: trainer` (true = decode on Ray Data's CPUs, augment
    batched on the training device); kept so configs written with it still load.
    """

    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: Literal["auto", "on", "off"] = "off"
    fused_optimizer: bool = True
    gpu_augment: bool = False


@dataclass
class RunSection:
    """Run identity and loop control.

    epochs: 100 by default here (paper-scale runs); the embedded default.yaml sets a short CPU run.
    name: the run directory under storage_path (None = generated from method, dataset and time).
    storage_path: a local directory or a cloud URI (s3://, gs://) shared by all nodes.
    log_every_steps: also report metrics every N steps (0 = once per epoch); the console's plain-text progress
      (output that is not a terminal) prints a line as often.
    loggers: metric sinks besides metrics.csv: `tensorboard` (event files in <run dir>/tensorboard) and/or
      `mlflow` (the `mlflow` extra; MLFLOW_TRACKING_URI names the server).
    on_nan: a NaN/inf loss `stop`s the run naming the step and term, or `skip`s the step (at most max_nan_skips).
    worker_hooks: "module:name" import paths of objects run inside every training worker at each step
      (hexray.train.worker_hooks: `on_batch(info)`, `on_loss(info, out)`); `name` is called with no arguments.
    arm: the experimental arm this run belongs to (a sweep's `arms:` sets it); `hexray report` groups runs by it and
      pairs each arm with the arm named `base` by seed. A label only: it changes nothing in training.
    """

    name: str | None = None
    storage_path: str = "~/hexray_runs"
    epochs: int = 100
    seed: int = 0
    log_every_steps: int = 50
    on_nan: Literal["stop", "skip"] = "stop"
    max_nan_skips: int = 10
    progress: bool = True
    loggers: tuple[str, ...] = ("tensorboard",)
    worker_hooks: tuple[str, ...] = ()
    arm: str | None = None

    def __post_init__(self) -> None:
        _positive("run", self, "epochs")
        for path in self.worker_hooks:
            module, _, name = path.partition(":")
            _require(bool(module) and name.isidentifier(),
                     f"run.worker_hooks: {path!r} is not a 'module:name' import path (e.g. 'mypkg.hooks:Timer')")
        for name in self.loggers:
            _require(name in LOGGER_NAMES, choice_message("run.loggers[]", name, LOGGER_NAMES))
        _require(len(set(self.loggers)) == len(self.loggers), f"run.loggers: {list(self.loggers)} repeats a name")
        _non_negative("run", self, "log_every_steps", "max_nan_skips")
        _require(bool(self.storage_path), "run.storage_path must be a directory or URI")
        _require(self.name is None or (bool(self.name) and "/" not in self.name),
                 f"run.name must be a non-empty directory name without '/', got {self.name!r}")
