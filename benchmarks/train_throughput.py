"""Training throughput: `hexray train`'s loop (Ray Train + Ray Data, 1 worker) vs a plain PyTorch loop over the
same batches already in memory with the same model, interleaved in one run; then 1 → 2 Ray Train workers.

    python benchmarks/train_throughput.py                       # default config (Fashion-MNIST, convnet)
    python benchmarks/train_throughput.py --images 4096 --rounds 2 --set backbone.width=16
    python benchmarks/train_throughput.py --augment-in trainer  # only the default placement of the views

Ray runs report images/s measured inside the loop (batch waiting and, with data.augment_in=trainer, making the
two views included; start-up and kNN monitor excluded), and how much of the epoch the trainer waited for data.
Each round runs Ray once per `--augment-in` placement (views made on the training worker, or in Ray Data's tasks).
The plain loop times the same optimizer steps on pre-made augmented batches. Target: ratio >= 0.85 on 2 CPUs.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def ray_images_per_s(overrides: list[str], storage: str, name: str) -> tuple[float, dict[str, float]]:
    from hexray.config import load_config
    from hexray.train.launch import build_trainer

    cfg = load_config(None, [*overrides, "probe.knn_every_epochs=0", "checkpoint.metric=loss",
                             "checkpoint.mode=min", "run.log_every_steps=0", f"run.storage_path={storage}"])
    build_trainer(cfg, run_name=name).fit()
    rows = [r for r in csv.DictReader((Path(storage) / name / "metrics.csv").open()) if r["epoch_end"] == "1"]
    best = max(rows, key=lambda r: float(r["images_per_s"]))  # best epoch: the first includes worker warm-up
    return float(best["images_per_s"]), {k: float(best[k]) for k in ("time/data_wait_frac", "time/first_batch_s")}


def plain_images_per_s(overrides: list[str], batches: list[dict], epochs: int) -> float:
    from hexray.config import load_config
    from hexray.methods.registry import build_method
    from hexray.train.components import TrainModule, build_optimization, resolve_fast_path
    from hexray.train.probes import OnlineProbe

    cfg = load_config(None, overrides)
    cpu = torch.device("cpu")
    fast = resolve_fast_path(cfg.fast, cpu)  # the same precision and layout as the Ray side
    method = build_method(cfg.method, cfg.backbone, cfg.hex, cfg.sem, max_epochs=cfg.run.epochs)
    module = TrainModule(method, OnlineProbe(method.feature_dim, 10, 4))
    if fast.channels_last:
        module = module.to(memory_format=torch.channels_last)
    optimizer, scheduler, _ = build_optimization(module, cfg, len(batches), 1)
    layout = torch.channels_last if fast.channels_last else torch.contiguous_format
    best = 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        for b in batches:
            views = [b[k].contiguous(memory_format=layout) for k in ("view1", "view2")]
            with fast.autocast(cpu):
                out, probe_loss = module(views, b["label"], b["superclass"], epoch=epoch, use_superclass=True)
            optimizer.zero_grad(set_to_none=True)
            (out.loss + probe_loss).backward()
            optimizer.step()
            method.on_after_step(0.5)
            scheduler.step()
        best = max(best, len(batches) * batches[0]["view1"].shape[0] / (time.perf_counter() - start))
    return best


def in_memory_batches(overrides: list[str], n_batches: int) -> list[dict]:
    from hexray.config import load_config
    from hexray.data.pipeline import train_dataset
    from hexray.data.registry import prepare_dataset

    cfg = load_config(None, overrides)
    d = cfg.data
    root = prepare_dataset(d.dataset, path=d.path, cache_dir=d.cache_dir, **d.options)
    ds = train_dataset(root, split=d.train_split, recipe=d.recipe, image_size=d.image_size, seed=0,
                       limit=n_batches * d.batch_size)
    out = []
    for batch in ds.iter_torch_batches(batch_size=d.batch_size, drop_last=True):
        out.append({k: batch[k] for k in ("view1", "view2", "label", "superclass")})
    return out[:n_batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30000,
                        help="training images per epoch (each epoch restarts the Ray Data stream: ~1.5 s here)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved (ray, plain) rounds")
    parser.add_argument("--augment-in", default="trainer,pipeline",
                        help="comma-separated data.augment_in placements to time (trainer is the default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from hexray.train.launch import ensure_ray

    ensure_ray()
    base = [f"data.limit_train={args.images}", f"run.epochs={args.epochs}", *args.overrides]
    from hexray.config import load_config

    batch = load_config(None, base).data.batch_size
    batches = in_memory_batches(base, max(1, args.images // batch))
    torch.set_num_threads(os.cpu_count() or 1)
    storage = tempfile.mkdtemp(prefix="hexray-bench-")
    modes = [m.strip() for m in args.augment_in.split(",") if m.strip()]
    ray_runs: dict[str, list[float]] = {m: [] for m in modes}
    plain_runs: list[float] = []
    for r in range(args.rounds):
        for mode in modes:
            ips, stalls = ray_images_per_s([*base, "scaling.num_workers=1", f"data.augment_in={mode}"], storage,
                                           f"one-{mode}-{r}")
            ray_runs[mode].append(ips)
            print(f"round {r}: ray-train 1 worker, views in {mode:<8} {ips:8.1f} img/s | ray waited for data "
                  f"{100 * stalls['time/data_wait_frac']:.0f}% of the epoch, first batch after "
                  f"{stalls['time/first_batch_s']:.1f} s", flush=True)
        torch.set_num_threads(os.cpu_count() or 1)
        plain_runs.append(plain_images_per_s(base, batches, args.epochs))
        print(f"round {r}: plain torch {plain_runs[-1]:8.1f} img/s | ratios "
              + ", ".join(f"{m} {ray_runs[m][-1] / plain_runs[-1]:.2f}" for m in modes), flush=True)
    first = modes[0]
    two, _ = ray_images_per_s([*base, "scaling.num_workers=2", f"data.augment_in={first}"], storage, "two")
    print("\nimages/s: median over rounds; ratio: median of each round's ratio to the plain loop run beside it "
          "(the machine's speed drifts between rounds; a pair measured back to back shares it)")
    print(f"{'setting':<46}{'images/s':>10}{'ratio':>8}")
    print(f"{'plain PyTorch, in-memory pre-augmented batches':<46}{statistics.median(plain_runs):>10.1f}{1.0:>8.2f}")
    for mode in modes:
        ratio = statistics.median(r / p for r, p in zip(ray_runs[mode], plain_runs, strict=True))
        label = f"hexray train, 1 worker, views in {mode}"
        print(f"{label:<46}{statistics.median(ray_runs[mode]):>10.1f}{ratio:>8.2f}")
    one = ray_runs[first][-1]
    label = f"hexray train, 2 workers, views in {first}"
    print(f"{label:<46}{two:>10.1f}{two / one:>8.2f}  (vs 1 worker in the last round)")
    print(f"cpus={os.cpu_count()} batch={batch} images/epoch={args.images} epochs={args.epochs} "
          f"load average={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
