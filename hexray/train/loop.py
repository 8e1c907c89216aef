"""`train_loop_per_worker`: the one training function Ray Train runs on every worker — 1 CPU, N GPUs or N nodes.

It receives a plain dict (the config tree plus dataset facts computed once by the driver), builds the method,
restores the latest checkpoint if Ray hands one over, and trains epoch by epoch, reporting metrics with
`ray.train.report` (every `run.log_every_steps` steps and at each epoch end) and a checkpoint every
`checkpoint.every_epochs` epochs.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import socket
import tempfile
import threading
import time
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from hexray.checkpoint import checkpoint_dir_name, load_state, save_state
from hexray.distributed import convert_sync_batchnorm
from hexray.errors import InputError
from hexray.train.components import (
    OptimizerStepper,
    TrainModule,
    build_optimization,
    resolve_fast_path,
    restore_training_state,
    training_state,
)
from hexray.train.console import Poster
from hexray.train.metric_names import monitor_runs_at
from hexray.train.metrics import progress_line
from hexray.train.nan_guard import NanGuard
from hexray.train.plan import WorkerPlan
from hexray.train.probes import KnnMonitor, OnlineProbe
from hexray.train.worker_hooks import HookRunner


def _placement(rank: int) -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {"worker/rank": rank, "worker/node_id": ctx.get_node_id(),
            "worker/node_ip": ray.util.get_node_ip_address(), "worker/hostname": socket.gethostname()}


def _eval_share(root: str, split: str, image_size: int, limit: int | None, seed: int, rank: int,
                world: int) -> dict[str, torch.Tensor]:
    """This worker's share of a fixed, seeded eval sample as CPU tensors, read straight from the shards (no Ray
    Data: a few thousand images decode in seconds, while a Dataset execution costs scheduling rounds on a small
    machine). The sample does not depend on the number of workers; each holds only its share."""
    from hexray.eval.datasource import read_share

    share = read_share(root, split, image_size=image_size, max_rows=limit, seed=seed, rank=rank, world=world)
    return {k: share[k] for k in ("image", "label", "superclass")}


def _gather_on(device: torch.device) -> Any:
    """Features and labels of every worker's share, concatenated on rank 0 (None on the others)."""
    from hexray.distributed import gather_to_first

    def gather(t: torch.Tensor) -> torch.Tensor | None:
        out = gather_to_first(t.to(device))
        return None if out is None else out.cpu()

    return gather


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True if `flag` is true on any rank (so every rank takes the same branch and no collective hangs)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train one worker's share. `config["plan"]`: the WorkerPlan built by `hexray.train.launch.build_trainer`."""
    from hexray.config import config_to_dict
    from hexray.methods.registry import build_method

    plan: WorkerPlan = config["plan"]
    cfg, cfg_dict = plan.cfg, config_to_dict(plan.cfg)  # the dict goes into every checkpoint
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    fast = resolve_fast_path(cfg.fast, device)
    torch.manual_seed(cfg.run.seed + rank)
    if plan.torch_threads:
        torch.set_num_threads(plan.torch_threads)

    poster = Poster(plan.progress_board if rank == 0 else None, log_every=cfg.run.log_every_steps)
    poster.phase(f"{world} worker(s) started; building the model")
    num_classes, c2s = plan.num_classes, plan.class_to_superclass
    num_super = (max(c2s) + 1) if c2s else 0
    per_worker_batch = cfg.data.batch_size // world
    steps_per_epoch = max(1, plan.train_count // cfg.data.batch_size)
    total_steps = steps_per_epoch * cfg.run.epochs

    method = build_method(cfg.method, cfg.backbone, cfg.hex, cfg.sem, max_epochs=cfg.run.epochs)
    probe = OnlineProbe(method.probe_dim, num_classes, num_super) if cfg.probe.online else None
    module = TrainModule(method, probe)
    optimizer, scheduler, base_lr = build_optimization(module, cfg, steps_per_epoch, world)
    stepper = OptimizerStepper(optimizer, scheduler, accumulate=cfg.optim.accumulate_steps,
                               scaler=fast.grad_scaler(device), grad_clip=cfg.optim.grad_clip,
                               clip_params=list(module.method.parameters()))
    fresh_lrs = [group["initial_lr"] for group in optimizer.param_groups]

    start_epoch, step, restored = 0, 0, {}
    guard = NanGuard(cfg.run.on_nan, cfg.run.max_nan_skips)
    checkpoint, state, seeded = ray.train.get_checkpoint(), None, False
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            state = load_state(ckpt_dir)
    elif cfg.checkpoint.init_from:  # another run's checkpoint, local or on object storage (read where we run)
        state, seeded = load_state(cfg.checkpoint.init_from), True
    if state is not None:
        restored = restore_training_state(state, module, optimizer, scheduler)
        if seeded:  # another run's state: keep its weights and position, but this config's learning rates
            _reapply_lrs(optimizer, scheduler, fresh_lrs)
        start_epoch, step = int(state["epoch"]), int(state["step"])
        guard.skipped = int(state.get("nan_skips", 0))

    if cfg.model.enabled(world):
        module = convert_sync_batchnorm(module, device.type)
    if fast.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if fast.compile:
        method.backbone.forward = torch.compile(method.backbone.forward)
    model = ray.train.torch.prepare_model(module)
    inner: TrainModule = model.module if hasattr(model, "module") else model

    monitor = None
    if cfg.probe.knn_every_epochs > 0:  # every worker embeds its share; rank 0 scores the gathered features
        poster.phase("reading the kNN monitor's images")
        d, p = cfg.data, cfg.probe
        bank = _eval_share(plan.root, d.train_split, d.image_size, p.knn_train_limit, cfg.run.seed, rank, world)
        queries = _eval_share(plan.root, d.eval_split, d.image_size, p.knn_eval_limit, cfg.run.seed + 1, rank,
                              world)
        monitor = KnnMonitor(bank, queries, num_classes=num_classes, class_to_superclass=c2s, k=p.knn_k,
                             temperature=p.knn_temperature, gather=_gather_on(device) if world > 1 else None)
    views = plan.views
    stream = _EpochStream(ray.train.get_dataset_shard("train"), batch_size=per_worker_batch, device=device,
                          shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.run.seed)
    placement = _placement(rank)
    hooks = HookRunner(plan.worker_hooks, rank=rank, world=world, start_epoch=start_epoch, run_dir=plan.run_dir)
    last_monitor: dict[str, float] = {}
    epoch_seconds: list[float] = []

    for epoch in range(start_epoch, cfg.run.epochs):
        poster.phase(f"epoch {epoch + 1}: waiting for the first batch")
        model.train()
        sums: dict[str, Any] = {}
        count, images, epoch_start = 0, 0, time.perf_counter()
        train_time, wait_time, first_batch = 0.0, 0.0, 0.0
        batches = stream.next_epoch(epoch)
        order = hashlib.blake2b(digest_size=6)  # which images, in which order: equal in paired runs
        t0 = time.perf_counter()
        for i, batch in enumerate(batches):
            if i >= steps_per_epoch:
                break
            waited = time.perf_counter() - t0
            wait_time += waited
            if i == 0:
                first_batch = waited
            ids = batch["id"].detach().cpu().numpy()  # once per batch: the digest and the views' seed both read it
            order.update(ids.astype("<i8").tobytes())
            crops = views(batch["image"], ids, epoch) if views else (batch["view1"], batch["view2"])
            if fast.channels_last:
                crops = tuple(v.contiguous(memory_format=torch.channels_last) for v in crops)
            label, superclass = batch["label"], batch["superclass"]
            info = hooks.info(epoch, i, step + 1)
            hooks.on_batch(info)
            # gradient accumulation: each micro-batch's loss on its own batch; the optimizer steps after the k-th
            # (or the epoch's last); DDP all-reduces gradients only then
            steps_now = stepper.steps_after(i, steps_per_epoch)
            sync = contextlib.nullcontext() if steps_now or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                try:
                    with fast.autocast(device):
                        out, probe_loss = model(crops, label, superclass, epoch=epoch,
                                                use_superclass=num_super > 0)
                except InputError as err:  # the batch does not fit the config (e.g. its channels): say where
                    raise InputError(f"step {step + 1} (epoch {epoch + 1}): {err}") from err
                hooks.on_loss(info, out)
                ok = not _any_rank(not guard.check(out, step=step + 1, epoch=epoch + 1), device)
                if ok:
                    loss = out.loss + (probe_loss if probe_loss is not None else 0.0)
                    stepper.backward(loss)
                    sums["loss"] = sums.get("loss", 0.0) + out.loss.detach().float()  # on device: no sync per step
                    for name, value in out.terms.items():
                        sums[name] = sums.get(name, 0.0) + value.detach().float().mean()
                    count += 1
            if steps_now:
                stepper.step()
                inner.method.on_after_step(min(1.0, (step + 1) / total_steps))
            step += 1
            images += crops[0].shape[0] * world
            now = time.perf_counter()
            train_time += now - t0
            if poster.due(i=i, steps=steps_per_epoch, step=step):
                poster.step(epoch=epoch + 1, i=i, steps=steps_per_epoch, step=step,
                            **_live_values(out, images, train_time))
            if cfg.run.log_every_steps and step % cfg.run.log_every_steps == 0 and i + 1 < steps_per_epoch:
                ray.train.report({**_means(sums, count), **restored, "epoch": epoch + 1, "step": step,
                                  "epoch_end": 0, "lr": optimizer.param_groups[0]["lr"],
                                  "images_per_s": images / max(train_time, 1e-9)})
                restored = {}
            t0 = time.perf_counter()

        if stepper.pending:  # the stream ended inside an accumulation group: its gradients stay in this epoch
            stepper.step()
            inner.method.on_after_step(min(1.0, step / total_steps))
        if epoch + 1 < cfg.run.epochs:
            stream.start_next(epoch + 1)  # next epoch loads while the monitor, report and checkpoint run
        epoch_no = epoch + 1
        metrics = {**_global_means(sums, count, device), **restored, "epoch": epoch_no, "step": step, "epoch_end": 1,
                   "lr": optimizer.param_groups[0]["lr"], "images_per_s": images / max(train_time, 1e-9),
                   "time/data_wait_frac": wait_time / max(train_time, 1e-9), "time/first_batch_s": first_batch,
                   "time/epoch_s": time.perf_counter() - epoch_start, "nan_skips": guard.skipped,
                   "data/corrupt": _corrupt_count(plan.corrupt_key),
                   "data/order_digest": float(int.from_bytes(order.digest(), "little")), **placement}
        restored = {}
        if monitor is not None and monitor_runs_at(epoch_no, cfg.probe.knn_every_epochs, cfg.run.epochs):
            poster.phase(f"epoch {epoch_no}: kNN monitor")
            last_monitor = monitor.evaluate(inner.method.embedder(), inner.probe, device=device,
                                            channels_last=fast.channels_last)
        metrics.update(last_monitor)
        metrics["time/epoch_s"] = time.perf_counter() - epoch_start
        epoch_seconds.append(metrics["time/epoch_s"])
        poster.epoch(progress_line(metrics, cfg.run.epochs, epoch_seconds))
        save = epoch_no % cfg.checkpoint.every_epochs == 0 or epoch_no == cfg.run.epochs
        if save:
            poster.phase(f"epoch {epoch_no}: checkpoint")
        _report(metrics, save and rank == 0, epoch_no, step, inner, optimizer, scheduler, guard, cfg_dict)

    if plan.final_eval:  # the end-of-run table, by all workers together; rank 0 reports it
        from hexray.train.final_eval import evaluate_on_workers, to_metrics

        results = evaluate_on_workers(inner.method.backbone, cfg, root=plan.root, manifest=None, rank=rank,
                                      world=world, device=device, num_classes=num_classes, class_to_superclass=c2s,
                                      progress=poster.eval)
        ray.train.report({"epoch": cfg.run.epochs, "final_eval": 1, **(to_metrics(results) if results else {})})


class _EpochStream:
    """One epoch's batches per `next_epoch()`. `start_next()` starts the following epoch's Ray Data execution on a
    background thread and waits there for its first batch: filling the local shuffle buffer and scheduling the
    first decode tasks took ~2 s per epoch on 2 cores, trainer time that the end-of-epoch work can hide."""

    def __init__(self, shard: Any, *, batch_size: int, device: torch.device, shuffle_buffer: int,
                 seed: int = 0) -> None:
        self._open = lambda epoch: iter(shard.iter_torch_batches(
            batch_size=batch_size, drop_last=True, prefetch_batches=2, device=device,
            local_shuffle_buffer_size=shuffle_buffer or None,
            local_shuffle_seed=shuffle_seed(seed, epoch) if shuffle_buffer else None))
        self._thread: threading.Thread | None = None
        self._ready: dict[str, Any] = {}

    def start_next(self, epoch: int) -> None:
        def load() -> None:
            try:
                batches = self._open(epoch)
                self._ready.update(batches=batches, first=next(batches, None))
            except BaseException as err:  # noqa: BLE001 - re-raised on the training thread by next_epoch()
                self._ready["error"] = err

        self._ready = {}
        self._thread = threading.Thread(target=load, name="hexray-next-epoch", daemon=True)
        self._thread.start()

    def next_epoch(self, epoch: int) -> Any:
        if self._thread is None:
            return self._open(epoch)
        self._thread.join()
        self._thread, ready = None, self._ready
        if "error" in ready:
            raise ready["error"]
        return itertools.chain([] if ready["first"] is None else [ready["first"]], ready["batches"])


def shuffle_seed(seed: int, epoch: int) -> int:
    """The local shuffle buffer's seed for one epoch of a run: the same in every run with this `run.seed`."""
    return (seed * 1_000_003 + epoch) % (2**31)


def _live_values(out: Any, images: int, train_time: float) -> dict[str, float]:
    """This step's loss and ε and the epoch's images/s so far, for the console (read only when posted)."""
    values = {"loss": float(out.loss.detach()), "images_per_s": images / max(train_time, 1e-9)}
    eps = out.terms.get("hex/epsilon")
    if eps is not None:
        values["eps"] = float(eps)
    return values


def _reapply_lrs(optimizer: Any, scheduler: Any, base_lrs: list[float]) -> None:
    """After loading a foreign optimizer/scheduler state (PBT exploit), put this config's base learning rates back,
    at the restored schedule position."""
    scheduler.base_lrs = list(base_lrs)
    for group, base, factor in zip(optimizer.param_groups, base_lrs, scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = base
        group["lr"] = base * factor(scheduler.last_epoch)


def _means(sums: dict[str, Any], count: int) -> dict[str, float]:
    return {k: float(v) / count for k, v in sums.items()} if count else {}


def _global_means(sums: dict[str, Any], count: int, device: torch.device) -> dict[str, float]:
    """Epoch means over every worker's steps (the epoch's reported loss and terms are the run's, not rank 0's).
    The NaN guard skips steps on all ranks together, so every rank holds the same keys."""
    from hexray.distributed import sum_over_workers

    keys = sorted(sums)
    values = [torch.as_tensor(sums[k], dtype=torch.float32, device=device).reshape(()) for k in keys]
    total = sum_over_workers(torch.stack([*values, torch.tensor(float(count), device=device)]))
    n = float(total[-1])
    return {k: float(v) / n for k, v in zip(keys, total[:-1].tolist(), strict=True)} if n else {}


def _corrupt_count(key: str | None) -> int:
    from hexray.data.pipeline import corrupt_count

    return int(corrupt_count(key)) if key else 0


def _report(metrics: dict[str, Any], save: bool, epoch: int, step: int, module: TrainModule, optimizer: Any,
            scheduler: Any, guard: NanGuard, cfg_dict: dict) -> None:
    """Every rank reports (a barrier); rank 0 attaches `state.pt` when a checkpoint is due."""
    if not save:
        ray.train.report(metrics)
        return
    state = training_state(module, optimizer, scheduler, epoch=epoch, step=step, cfg_dict=cfg_dict,
                           nan_skips=guard.skipped)
    with tempfile.TemporaryDirectory() as tmp:
        save_state(tmp, state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=checkpoint_dir_name(epoch))
