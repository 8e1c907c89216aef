"""GPU throughput of SimCLR+HEX pretraining: the hardware's upper bound vs hexray's real input path (issue 8).

Measured in one run on one device, interleaved block by block so clock and thermal drift hit every variant alike:

  (a) upper bound  — SimCLR+HEX (adaptive) training steps (ResNet-50, 224 px by default) on batches already on the
                     device, built exactly as the train loop builds them (same method, optimizer, fast path);
  (c) NT-Xent      — the same steps with HEX switched off (plain NT-Xent);
  (b) real path    — the same HEX steps fed by hexray's Ray Data pipeline (`hexray.data.pipeline.train_dataset`)
                     from JPEG shards that this script writes itself (a synthetic ImageNet-like set).

Prints images/s for each, (b)/(a), step time HEX/NT-Xent, and model FLOP utilisation (FLOPs of one step counted by
torch.utils.flop_counter, divided by the device's dense bf16 peak).

    python benchmarks/gpu_throughput.py                                       # on a GPU: the issue's setting
    python benchmarks/gpu_throughput.py --device cpu --arch resnet18 --image-size 64 --batch-size 32 \
        --steps 3 --blocks 2 --shard-images 256                               # small CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}

Step = Callable[[torch.Tensor, torch.Tensor], None]


def _peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def _config(args: argparse.Namespace, hex_on: bool):
    from hexray.config import load_config

    return load_config(None, {
        "backbone.name": args.arch, "backbone.in_channels": 3, "backbone.small_stem": args.image_size < 96,
        "hex.enabled": hex_on, "hex.warmup_epochs": 0, "data.batch_size": args.batch_size,
        "data.image_size": args.image_size, "fast.compile": args.compile, "optim.name": "lars",
    })


def build_step(args: argparse.Namespace, hex_on: bool, device: torch.device) -> Step:
    """One optimizer step exactly as `hexray.train.loop` runs it (fast path resolved for `device`)."""
    from hexray.methods.registry import build_method
    from hexray.train.components import TrainModule, build_optimization, resolve_fast_path

    cfg = _config(args, hex_on)
    fast = resolve_fast_path(cfg.fast, device)
    method = build_method(cfg.method, cfg.backbone, cfg.hex, cfg.sem, max_epochs=cfg.run.epochs).to(device)
    optimizer, _, _ = build_optimization(TrainModule(method, None), cfg, steps_per_epoch=1000, world_size=1)
    if fast.channels_last:
        method = method.to(memory_format=torch.channels_last)
    if fast.compile:
        method.backbone.forward = torch.compile(method.backbone.forward)

    def step(v1: torch.Tensor, v2: torch.Tensor) -> None:
        if fast.channels_last:
            v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
        with fast.autocast(device):
            out = method(v1, v2, epoch=1)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        method.momentum_update(0.5)

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Step, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int,
               device: torch.device) -> float:
    """Seconds per step over `steps` steps, batch fetching included, synchronised at both ends."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    _sync(device)
    return (time.perf_counter() - start) / steps


def count_flops(step: Step, views: tuple[torch.Tensor, torch.Tensor]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(*views)
    return float(counter.get_total_flops())


def write_jpeg_shards(workdir: Path, images: int, size: int) -> str:
    """A synthetic ImageNet-like set (smooth random colour fields, JPEG, 10 classes) → hexray Parquet shards."""
    import numpy as np
    from PIL import Image

    from hexray.data.writer import write_shards  # noqa: F401  (checked import: fails early if the layer moved)

    root = workdir / "shards"
    if (root / "manifest.json").is_file():
        return str(root)
    folder = workdir / "jpeg" / "train"
    rng = np.random.default_rng(0)
    for i in range(images):
        cls = folder / f"class{i % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        low = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((size * 8 // 7, size * 8 // 7), Image.BICUBIC)
        img.save(cls / f"{i:06d}.jpg", quality=90)
    from hexray.cli import main as hexray_main

    rc = hexray_main(["shard", str(workdir / "jpeg"), str(root)])
    if rc:
        raise SystemExit(f"hexray shard failed with exit code {rc}")
    return str(root)


def real_batches(root: str, args: argparse.Namespace, device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless two-view batches from the Ray Data pipeline, moved to `device` by Ray's iterator."""
    from hexray.data.pipeline import train_dataset

    ds = train_dataset(root, recipe="simclr", image_size=args.image_size, seed=0)
    while True:
        for batch in ds.iter_torch_batches(batch_size=args.batch_size, drop_last=True, prefetch_batches=4,
                                           device=str(device)):
            yield batch["view1"], batch["view2"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet50", "convnet"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block")
    parser.add_argument("--blocks", type=int, default=3, help="interleaved blocks per variant")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--real-path", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure (b), the Ray Data path from JPEG shards")
    parser.add_argument("--shard-images", type=int, default=4096)
    parser.add_argument("--workdir", default=None, help="where the JPEG shards go (default: a temp dir)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    gen = torch.Generator(device=device).manual_seed(0)
    views = tuple(torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device, generator=gen)
                  for _ in range(2))
    steps = {"hex": build_step(args, True, device), "ntxent": build_step(args, False, device)}
    for step in steps.values():
        for _ in range(args.warmup):
            step(*views)
    flops = count_flops(steps["hex"], views)

    def resident() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield views

    feeds: dict[str, Iterator] = {"hex": resident(), "ntxent": resident()}
    tmp = None
    if args.real_path:
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=max(4, os.cpu_count() or 1), log_to_driver=False)
        tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
        workdir = Path(args.workdir or tmp.name)
        feeds["real"] = real_batches(write_jpeg_shards(workdir, args.shard_images, args.image_size), args, device)
        for _ in range(args.warmup):
            steps["hex"](*next(feeds["real"]))

    times: dict[str, list[float]] = {name: [] for name in feeds}
    for _ in range(args.blocks):
        for name, feed in feeds.items():
            step = steps["ntxent" if name == "ntxent" else "hex"]
            times[name].append(time_steps(step, feed, args.steps, device))

    images = {name: args.batch_size / statistics.median(ts) for name, ts in times.items()}
    peak = _peak_tflops(device, args.peak_tflops)
    achieved = flops * images["hex"] / args.batch_size / 1e12
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size, "compile": args.compile,
        "images_per_s": {k: round(v, 1) for k, v in images.items()},
        "hex_over_ntxent_step_time": round(images["ntxent"] / images["hex"], 4),
        "real_over_upper": round(images["real"] / images["hex"], 4) if "real" in images else None,
        "step_tflop": round(flops / 1e12, 4), "achieved_tflops": round(achieved, 2),
        "mfu": round(achieved / peak, 4) if peak else None,
    }
    print(f"device {result['device']}  {args.arch} {args.image_size}px  batch {args.batch_size}  "
          f"compile={args.compile}")
    print(f"{'variant':<28}{'images/s':>12}")
    print(f"{'(a) upper bound, HEX':<28}{images['hex']:>12.1f}")
    print(f"{'(c) upper bound, NT-Xent':<28}{images['ntxent']:>12.1f}")
    if "real" in images:
        print(f"{'(b) real path, HEX':<28}{images['real']:>12.1f}")
        print(f"(b)/(a) = {result['real_over_upper']:.3f}")
    print(f"HEX step time / NT-Xent step time = {result['hex_over_ntxent_step_time']:.4f}")
    print(f"model FLOPs per step {result['step_tflop']} TFLOP, achieved {result['achieved_tflops']} TFLOP/s, "
          f"MFU {result['mfu'] if result['mfu'] is not None else 'n/a (unknown peak)'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
