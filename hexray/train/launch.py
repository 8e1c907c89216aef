"""Driver side of a training run: start (or join) Ray, prepare the dataset, assemble the `TorchTrainer`, fit it,
then score the result against baselines and write `summary.json`.

Run directory = `{run.storage_path}/{run.name}/`: config.yaml, metrics.csv, placement.json, summary.json and Ray's
`checkpoint_epochNNNN/state.pt`. Fitting again with the same storage_path and name resumes from the latest
checkpoint (`ray.train.get_checkpoint()` in the loop), which is what `hexray train --resume RUN_DIR` does.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import ray
import ray.data
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from hexray import storage
from hexray.checkpoint import checkpoint_epoch, find_checkpoints, resolve_checkpoint
from hexray.config import ConfigError, TrainConfig, config_to_dict, save_config
from hexray.data.views import ViewMaker
from hexray.errors import RunFailedError, UserError
from hexray.eval.runs import flatten
from hexray.methods.registry import method_view_spec
from hexray.train.components import cpu_amp_note, cpu_has_native_bf16
from hexray.train.console import LiveConsole, ProgressBoard
from hexray.train.loggers import check_loggers, mlflow_tracking_uri
from hexray.train.loop import train_loop_per_worker
from hexray.train.metrics import LoggerSpec, RunRecorder
from hexray.train.plan import WorkerPlan
from hexray.train.quiet import quiet_console
from hexray.train.worker_hooks import load_worker_hooks, shippable

TRAINING_PLOT = "training_curves.png"
LOCAL_DRIVER_RESOURCE = "hexray_driver"  # = hexray.tune.spec.DRIVER_RESOURCE (train does not import tune)
TRAIN_POLL_S = 0.25  # Train V2 controller poll (s): how long a worker's report can wait to be taken (default 2 s)


@dataclass
class RunResult:
    run_dir: str
    summary: dict[str, Any]


def ensure_ray(verbose: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS, or start a local Ray with at least 4 logical CPUs: Ray Data's
    file-listing task needs one whole free CPU besides the fractional trainers. The workers' logs, from any node,
    are forwarded here (Ray deduplicates repeated lines): into the run's hexray.log, or onto the console with
    `verbose` (or HEXRAY_RAY_LOGS=1), which also shows Ray Data's progress bars (`hexray.train.quiet`)."""
    global _STARTED_RAY
    if ray.is_initialized():
        return
    _STARTED_RAY = True
    verbose = verbose or ray_logs_from_env()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        # Keep the dashboard: Train V2's placement-group cleaner asks it whether the controller is alive, and
        # without it the cleaner removed a live run's placement group (the worker was destroyed mid-run).
        start_local_ray(max(4, os.cpu_count() or 1), log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = verbose


_STARTED_RAY = False


def started_ray() -> bool:
    """Whether `ensure_ray` connected this process to Ray (so it may disconnect; a caller's own Ray stays up)."""
    return _STARTED_RAY and ray.is_initialized()


def start_local_ray(num_cpus: float, **init_kwargs: Any) -> None:
    """`ray.init` of a local Ray whose raylet keeps a warm pool of idle worker processes.

    Ray kills idle workers beyond `num_workers_soft_limit` (default: the CPU count) after 1 s. Next to the trainer
    and Ray Data's actors, that killed and restarted (importing torch each time) the decode tasks' workers all
    through every epoch on a 2-core machine: a 30k-image decode pass took 13.5 s instead of 5 s, and every
    epoch's first batch waited for new processes. RAY_num_workers_soft_limit in the environment wins.

    Ray also renices its worker processes by +15 (`worker_niceness`) to keep a dedicated node's raylet responsive.
    On a shared machine that hands the CPU to anything else running at the default priority (a test suite, a
    browser, another run's driver): next to one busy process a 2-core machine's training worker got ~1/30 of a
    core and an epoch took 10× longer. A local Ray's workers keep the driver's own priority instead (so `nice
    hexray train` still lowers all of it); RAY_worker_niceness in the environment wins.

    Train V2's controller takes a worker's report off the worker's one-slot queue only when it polls, every 2 s by
    default: a run reporting every step waited ~2 s per step, and every run's start and end waited for a poll.
    A local Ray's controller polls every `TRAIN_POLL_S`; RAY_TRAIN_HEALTH_CHECK_INTERVAL_S in the environment wins.
    """
    import ray

    os.environ.setdefault("RAY_num_workers_soft_limit", str(int(2 * num_cpus) + 4))  # read by the raylet at start
    os.environ.setdefault("RAY_worker_niceness", "0")  # an increment: 0 = the driver's niceness
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(TRAIN_POLL_S))  # read by Train's controller
    # The one node is also the "head/CPU node" Tune's trial drivers are pinned to (tune.spec.DRIVER_RESOURCE).
    resources = {LOCAL_DRIVER_RESOURCE: 1000.0, **init_kwargs.pop("resources", {})}
    ray.init(num_cpus=num_cpus, resources=resources, **init_kwargs)


def ray_logs_from_env() -> bool:
    """HEXRAY_RAY_LOGS=1 shows Ray's worker logs and Ray Data's progress bars (noisy; progress comes from the run
    dir otherwise)."""
    return os.environ.get("HEXRAY_RAY_LOGS") == "1"


def auto_cpus_per_worker(num_workers: int) -> float:
    """Whole CPUs on big nodes; a fraction on small machines so the data pipeline's map tasks still run."""
    cpus = os.cpu_count() or 1
    return 1.0 if cpus >= 8 else round(min(0.5, 1.0 / (2 * num_workers)), 3)


def torch_threads(cpus_per_worker: float, num_workers: int) -> int:
    """Intra-op threads per worker. Ray sets OMP_NUM_THREADS=1 for fractional CPUs; on a small local machine a
    lone worker would then use one core of two, so fractional workers share the machine's cores instead."""
    if cpus_per_worker >= 1:
        return int(cpus_per_worker)
    return max(1, (os.cpu_count() or 1) // num_workers)


def augment_in_trainer(cfg: TrainConfig) -> bool:
    """Whether the training worker (not Ray Data) makes the two views. `auto` says yes: on a GPU the batched
    kernels beat a pool of CPU tasks, and the stream carries one uint8 image per row instead of two float32
    views (8× less through the object store and the shuffle buffer). On 2 CPU cores the two placements train
    equally fast (benchmarks/train_throughput.py times both)."""
    if cfg.fast.gpu_augment:
        return True
    return cfg.data.augment_in != "pipeline"


def check_views(cfg: TrainConfig) -> None:
    """Multi-crop views (a method's local crops) are made on the training workers only."""
    if method_view_spec(cfg.method).local_crops and not augment_in_trainer(cfg):
        raise ConfigError(f"method.name: {cfg.method.name} trains on multi-crop views, which the training workers "
                          "make: set data.augment_in: trainer (or auto)")


def default_run_name(cfg: TrainConfig) -> str:
    return f"{cfg.method.name}-{cfg.data.label}-{time.strftime('%Y%m%d-%H%M%S')}"


def resolve_run(cfg: TrainConfig, run_name: str | None, storage_path: str | None) -> tuple[TrainConfig, str]:
    """Fill run.name / run.storage_path (absolute for local paths: Ray needs that; URIs as given) and return the
    run directory."""
    where = storage.normalize(storage_path or cfg.run.storage_path)
    name = run_name or cfg.run.name or default_run_name(cfg)
    cfg = replace(cfg, run=replace(cfg.run, name=name, storage_path=where))
    return cfg, storage.join(where, name)


def _dataset_facts(cfg: TrainConfig) -> tuple[TrainConfig, str, Any]:
    """(cfg with data.eval_split resolved, shard root, manifest); the shards are written here on first use (no Ray
    needed), and a split that is asked for and missing is a ConfigError naming it."""
    from hexray.data.manifest import load_manifest
    from hexray.data.registry import check_splits, dataset_root

    root = dataset_root(cfg.data)
    manifest = load_manifest(root)
    try:
        eval_split = check_splits(cfg.data, sorted(manifest.splits))
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return replace(cfg, data=replace(cfg.data, eval_split=eval_split)), root, manifest


def _report_corrupt(cfg: TrainConfig, manifest: Any) -> None:
    """Say so when sharding left image files out: a run on a damaged copy should not look like a clean one."""
    for split in dict.fromkeys((cfg.data.train_split, cfg.data.eval_split)):
        info = manifest.splits[split]
        if info.corrupt:
            print(f"data: {info.corrupt} corrupt image file(s) of split {split!r} were left out when sharding "
                  f"(e.g. {info.corrupt_examples[0]}; all listed in {storage.join(manifest.root, 'manifest.json')})",
                  flush=True)


def build_trainer(cfg: TrainConfig, *, run_name: str | None = None, storage_path: str | None = None,
                  callbacks: list | None = None, final_eval: bool = False, board: Any = None,
                  worker_hooks: list | None = None) -> TorchTrainer:
    """The TorchTrainer for `cfg`; only `cfg.scaling` differs between 1 CPU, N GPUs and N nodes. With
    `final_eval` the workers compute the end-of-run table after the last epoch and report it (`final/...`).
    `callbacks` are Ray Train's (on the driver); `worker_hooks` run in every worker (hexray.train.worker_hooks;
    None: those `cfg.run.worker_hooks` names)."""
    from hexray.data.pipeline import data_key, decoded_dataset, train_dataset

    cfg, run_dir = resolve_run(cfg, run_name, storage_path)
    cfg, root, manifest = _dataset_facts(cfg)
    check_views(cfg)
    note = cpu_amp_note(cfg.fast, cfg.scaling.use_gpu, cpu_has_native_bf16())
    if note:
        print(note, flush=True)
    d = cfg.data
    train_count = manifest.split(d.train_split).count
    if d.limit_train:
        train_count = min(train_count, d.limit_train)
    if train_count < d.batch_size:
        raise ConfigError(f"data.batch_size ({d.batch_size}) exceeds the {train_count} training images")
    # This process may be a Tune trial, not the driver `ensure_ray` ran in: the dataset copies this context (and
    # runs in Train's split coordinator with it), so without this its progress bars reach `hexray sweep`'s console.
    ray.data.DataContext.get_current().enable_progress_bars = ray_logs_from_env()
    views, first_epoch = None, _first_epoch(cfg, run_dir)
    if augment_in_trainer(cfg):
        train = decoded_dataset(root, split=d.train_split, image_size=d.image_size, seed=cfg.run.seed,
                                limit=d.limit_train, decode_size=d.decode_size, first_epoch=first_epoch)
        crops = method_view_spec(cfg.method)
        views = ViewMaker(d.recipe, d.image_size, cfg.run.seed, tuple(manifest.mean), tuple(manifest.std),
                          local_crops=crops.local_crops, local_size=crops.local_size(d.image_size),
                          local_scale=crops.local_scale, crop_scale=d.crop_scale)
    else:
        train = train_dataset(root, split=d.train_split, recipe=d.recipe, image_size=d.image_size,
                              seed=cfg.run.seed, limit=d.limit_train, first_epoch=first_epoch,
                              crop_scale=d.crop_scale)
    datasets = {"train": train}
    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker or auto_cpus_per_worker(s.num_workers), **s.resources_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    hooks = shippable(load_worker_hooks(cfg.run.worker_hooks) if worker_hooks is None else worker_hooks)
    storage.make_dirs(run_dir)
    if not storage.is_file(storage.join(run_dir, "config.yaml")):
        save_config(cfg, storage.join(run_dir, "config.yaml"))
    plan = WorkerPlan(cfg=cfg, root=root, num_classes=manifest.num_classes,
                      class_to_superclass=manifest.class_to_superclass, train_count=train_count, run_dir=run_dir,
                      corrupt_key=data_key(root, d.train_split), views=views, worker_hooks=hooks,
                      torch_threads=torch_threads(resources["CPU"], s.num_workers), final_eval=final_eval,
                      progress_board=board)
    loggers = LoggerSpec(names=tuple(cfg.run.loggers), run_name=cfg.run.name, params=flatten(config_to_dict(cfg)),
                         mlflow_uri=mlflow_tracking_uri(cfg.run.loggers))
    score = cfg.checkpoint.metric
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"plan": plan},
        torch_config=TorchConfig(timeout_s=s.collective_timeout_s),
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources,
                                     placement_strategy=s.placement_strategy),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=cfg.run.storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep, checkpoint_score_attribute=score,
                                               checkpoint_score_order=cfg.checkpoint.mode),
            failure_config=FailureConfig(max_failures=cfg.checkpoint.max_failures),
            callbacks=[RunRecorder(run_dir, cfg.run.epochs, loggers=loggers, final_eval=final_eval,
                                   monitor_every=cfg.probe.knn_every_epochs),
                       *(callbacks or [])],
        ),
        datasets=datasets,
        dataset_config=ordered_ingest(),
    )


def _first_epoch(cfg: TrainConfig, run_dir: str) -> int:
    """The epoch this trainer's first pass over the data will be: the run's latest checkpoint (a resumed run),
    else the checkpoint it starts from (`checkpoint.init_from`, PBT), else 0."""
    found = find_checkpoints(run_dir) if storage.is_dir(run_dir) else []
    if found:
        return checkpoint_epoch(found[-1])
    if cfg.checkpoint.init_from:
        try:
            return checkpoint_epoch(resolve_checkpoint(cfg.checkpoint.init_from))
        except (OSError, ValueError):  # not a checkpoint_epochNNNN directory: the loop reads its epoch instead
            return 0
    return 0


def ordered_ingest() -> DataConfig:
    """Train's data config with `preserve_order`: blocks reach the workers in the order the seeded file shuffle
    put them, not in the order parallel tasks happen to finish. With the seeded local shuffle buffer and views
    seeded by (seed, epoch, ids), two runs with one `run.seed` then see the same batches (a paired comparison,
    whatever their method or HEX settings) on one worker; with several, Ray's split hands blocks to whichever
    worker asks first, so the global batches can differ between runs."""
    options = copy.deepcopy(ray.data.DataContext.get_current().execution_options)  # Train's default: the context's
    options.preserve_order = True
    return DataConfig(execution_options={"train": options})


def _placement(run_dir: str) -> list[dict[str, Any]]:
    path = storage.join(run_dir, "placement.json")
    return json.loads(storage.read_text(path)) if storage.is_file(path) else []


# Words that place a timeout inside torch.distributed: the backend, the op, or the module it was raised from
# (Ray truncates long worker tracebacks, so whichever part survives must be enough).
_COLLECTIVE_MARKS = ("gloo", "nccl", "collective", "watchdog", "all_gather", "allreduce", "all_reduce", "broadcast",
                     "pair closure", "torch/distributed", "torch.distributed", "torch/nn/parallel")


def worker_exceptions(err: BaseException) -> list[BaseException]:
    """The workers' own exceptions inside Ray Train's error (`WorkerGroupError.worker_failures`, rank order), each
    followed by its causes (Ray's RayTaskError keeps the original in `.cause`)."""
    found: list[BaseException] = []
    failures = getattr(err, "worker_failures", None) or {}
    for _, exc in sorted(failures.items()):
        while isinstance(exc, BaseException) and not any(exc is seen for seen in found):
            found.append(exc)
            exc = exc.__cause__ or getattr(exc, "cause", None)
    return found


def _failure_message(err: Exception, cfg: TrainConfig) -> str | None:
    """A one-line user message out of Ray's wrapped worker error: a UserError a worker raised (the NaN guard's, a
    batch that does not fit the config; found by type in the workers' failures), or a collective that timed out
    (torch raises those as plain RuntimeErrors: by text). Anything else is a bug and keeps its traceback."""
    for exc in worker_exceptions(err):
        if isinstance(exc, UserError):
            return str(exc)
    lowered = str(err).lower()
    if ("timed out" in lowered or "timeout" in lowered) and any(w in lowered for w in _COLLECTIVE_MARKS):
        return (f"a collective operation (all-gather of negatives or all-reduce of gradients) waited longer than "
                f"scaling.collective_timeout_s = {cfg.scaling.collective_timeout_s} s: another worker stalled or "
                "died (its log above says why). Raise scaling.collective_timeout_s if ranks legitimately wait "
                "that long (slow storage, a long rank-0 step)")
    return None


def _completed_epochs(run_dir: str, result: Any) -> int:
    """Epochs finished so far: from the newest checkpoint's name (the last epoch is always checkpointed)."""
    from hexray.checkpoint import checkpoint_epoch, find_checkpoints

    found = find_checkpoints(run_dir)
    return checkpoint_epoch(found[-1]) if found else 0


def _interrupted(run_dir: str) -> None:
    from hexray.checkpoint import find_checkpoints

    found = find_checkpoints(run_dir) if storage.is_dir(run_dir) else []
    where = (f"the last checkpoint is {storage.basename(found[-1])}" if found
             else "no epoch had finished, so no checkpoint exists")
    print(f"\ninterrupted; {where}. Continue with:  hexray train --resume {run_dir}", flush=True)
    raise KeyboardInterrupt


def run_training(cfg: TrainConfig, *, resume_dir: str | None = None, final_eval: bool = True,
                 verbose: bool = False, worker_hooks: list | None = None) -> RunResult:
    """Train (or continue the run in `resume_dir`), then write and return the summary. `worker_hooks` run inside
    every training worker (hexray.train.worker_hooks), after those `cfg.run.worker_hooks` names.

    With `resume_dir`, the run keeps its name and storage path, so Ray hands the loop its latest checkpoint.
    Ray's own console output goes to `<run dir>/hexray.log` unless `verbose`.
    """

    if resume_dir is not None:
        path = storage.normalize(resume_dir)
        if not storage.is_file(storage.join(path, "config.yaml")):
            raise FileNotFoundError(f"--resume: {path} is not a run directory (no config.yaml)")
        run_name, where = storage.basename(path), storage.parent(path)
    else:
        run_name, where = None, None
    check_loggers(cfg.run.loggers)
    check_views(cfg)
    hooks = [*load_worker_hooks(cfg.run.worker_hooks), *(worker_hooks or [])]  # a bad hook fails before Ray starts
    cfg, _, manifest = _dataset_facts(cfg)  # names, paths, splits, the shards on first use: all before Ray starts
    _report_corrupt(cfg, manifest)
    cfg, run_dir = resolve_run(cfg, run_name, where)
    storage.make_dirs(run_dir)  # an unwritable run.storage_path fails here, naming it, not inside Ray
    print(f"hexray train: run directory {run_dir}", flush=True)
    with quiet_console(run_dir, verbose=verbose):
        return _train_and_summarise(cfg, run_dir, manifest, final_eval=final_eval, verbose=verbose,
                                    worker_hooks=hooks)


def _train_and_summarise(cfg: TrainConfig, run_dir: str, manifest: Any, *, final_eval: bool,
                         verbose: bool, worker_hooks: list) -> RunResult:
    if not ray.is_initialized():
        print("starting Ray ...", flush=True)
    ensure_ray(verbose)
    started = time.time()
    board = ProgressBoard.remote() if cfg.run.progress else None
    trainer = build_trainer(cfg, run_name=cfg.run.name, storage_path=cfg.run.storage_path, final_eval=final_eval,
                            board=board, worker_hooks=worker_hooks)
    console = None
    if board is not None:
        console = LiveConsole(board, total_epochs=cfg.run.epochs, log_every=cfg.run.log_every_steps)
        console.start()
    try:
        result = trainer.fit()
    except (KeyboardInterrupt, SystemExit):  # Ray's own SIGINT handler aborts the run and calls sys.exit
        _interrupted(run_dir)
    except Exception as err:  # Ray wraps worker errors; the NaN guard's or a timeout's message is for the user
        message = _failure_message(err, cfg)
        if message:
            raise RunFailedError(message) from err
        raise
    finally:
        if console is not None:
            console.stop()
        if board is not None:
            ray.kill(board)
    if result.error is not None:
        raise result.error
    if _completed_epochs(run_dir, result) < cfg.run.epochs:
        _interrupted(run_dir)  # aborted (Ctrl-C) before the last epoch: fit() returns without an error
    train_seconds = time.time() - started
    summary: dict[str, Any] = {"run_dir": run_dir, "final_metrics": _plain(result.metrics or {}),
                               "workers": _placement(run_dir), "train_seconds": round(train_seconds, 1)}
    if result.checkpoint is not None:
        summary["checkpoint"] = result.checkpoint.path
    summary["epochs"] = _completed_epochs(run_dir, result)
    if final_eval:
        summary["evaluation"] = _final_table(run_dir)
    summary["plot"] = _training_plot(run_dir, manifest, cfg)
    summary["driver_peak_rss_mb"] = _peak_rss_mb()
    summary["wall_seconds"] = round(time.time() - started, 1)
    storage.write_text(storage.join(run_dir, "summary.json"), json.dumps(summary, indent=1))
    return RunResult(run_dir=run_dir, summary=summary)


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))
            and not k.startswith(("worker/", "final/")) and k != "final_eval"}


def _final_table(run_dir: str) -> dict[str, dict[str, float]]:
    """The end-of-run table the workers reported, as the run recorder saved it (the driver only prints it: it
    reads no images)."""
    from hexray.train.final_eval import from_metrics
    from hexray.train.metrics import FINAL_EVAL_FILE

    path = storage.join(run_dir, FINAL_EVAL_FILE)
    results = from_metrics(json.loads(storage.read_text(path))) if storage.is_file(path) else {}
    if not results:
        raise RuntimeError(f"the workers reported no end-of-run table ({path} is missing); see the log above")
    return results


def _training_plot(run_dir: str, manifest: Any, cfg: TrainConfig) -> str | None:
    """`training_curves.png` in the run directory (None when nothing was logged per epoch)."""
    from hexray.eval.plots import plot_run_curves
    from hexray.eval.runs import read_metrics

    chance = superclass_chance(manifest, cfg.data.train_split)
    path = plot_run_curves(read_metrics(run_dir), storage.join(run_dir, TRAINING_PLOT), purity_chance=chance)
    return None if path is None else str(path)


def superclass_chance(manifest: Any, split: str) -> float | None:
    """The purity a random H(i) would have: the chance that another training image shares the anchor's
    superclass, Σ_s p_s² over the split's superclass frequencies (None without a hierarchy)."""
    c2s, counts = manifest.class_to_superclass, manifest.splits[split].class_counts
    if not c2s or not counts or sum(counts) == 0:
        return None
    per_super: dict[int, int] = {}
    for cls, n in enumerate(counts):
        per_super[c2s[cls]] = per_super.get(c2s[cls], 0) + n
    total = sum(per_super.values())
    return sum((n / total) ** 2 for n in per_super.values())


def _peak_rss_mb() -> float:
    """This (driver) process's peak resident memory: it must not grow with the dataset (tests/ check it)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
