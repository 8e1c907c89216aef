"""Two-view images/s per CPU core: Ray Data over Parquet shards vs a torch DataLoader over the same image files.

Both sides produce two SimCLR-augmented views per image (random resized crop, flip, colour jitter, grayscale,
blur, normalise) at 32 px (from 32 px PNGs, CIFAR-like) and 224 px (from 256 px JPEGs, ImageNet-like).
Ray Data: `hexray.data.pipeline.train_dataset` (decode + batched `augment_view` in map_batches tasks).
DataLoader: an ImageFolder-style Dataset with torchvision.transforms.v2 per image (the usual recipe),
num_workers = cores. Passes are interleaved (Ray, DataLoader, Ray, ...) after one warm-up pass each, and the
median is reported. "per core" = images/s ÷ cores given to each side; "img/CPU-s" = images ÷ CPU seconds
actually used by the whole process tree (Ray's raylet/GCS included), which is robust to a busy machine.

Then (a separate process) a streamed pass over a generated dataset 5× larger than a small object store (sized
from a measured encoded image), printing the peak memory of the process tree: RSS (an over-estimate: shared
object-store pages count once per process) and USS (private pages; USS + the store's cap bounds the real use).

    python benchmarks/data_throughput.py                      # defaults: 2 cores, 2000 images, 3 rounds
    python benchmarks/data_throughput.py --skip-memory --images 1000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def tree_cpu_seconds() -> float:
    import psutil

    total = 0.0
    procs = [psutil.Process()] + psutil.Process().children(recursive=True)
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + getattr(t, "children_user", 0) + getattr(t, "children_system", 0)
        except psutil.Error:
            pass
    return total


def tree_memory() -> tuple[int, int]:
    """(RSS, USS) summed over this process and its children. RSS counts the shared object-store pages once per
    process that maps them; USS (pages private to one process) does not, so USS + the store's cap bounds use."""
    import psutil

    rss = uss = 0
    for p in [psutil.Process()] + psutil.Process().children(recursive=True):
        try:
            info = p.memory_full_info()
            rss, uss = rss + info.rss, uss + info.uss
        except psutil.Error:
            pass
    return rss, uss


def make_folder(root: Path, n: int, size: int, fmt: str, noise: bool = False) -> None:
    from PIL import Image

    from hexray.data.synthetic import SyntheticSpec, render

    spec = SyntheticSpec(image_size=size, num_superclasses=4, classes_per_superclass=2, images_per_class=1)
    rng = np.random.default_rng(0)
    for i in range(n):
        label = i % spec.num_classes
        d = root / "train" / f"c{label}"
        d.mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if noise else render(spec, "train", label, i)
        Image.fromarray(array).save(d / f"{i}.{fmt}", quality=90) if fmt == "jpg" else \
            Image.fromarray(array).save(d / f"{i}.{fmt}")


class FileTwoViews:
    """torch Dataset: one image file → two torchvision-v2 SimCLR views (the per-sample baseline)."""

    def __init__(self, files: list[str], size: int) -> None:
        import torch
        from torchvision.transforms import v2

        self.files = files
        blur = max(3, int(0.1 * size) // 2 * 2 + 1)
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), v2.RandomGrayscale(0.2),
            v2.RandomApply([v2.GaussianBlur(blur, (0.1, 2.0))], p=0.5), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from torchvision.io import ImageReadMode, decode_image, read_file

        image = decode_image(read_file(self.files[i]), mode=ImageReadMode.RGB)
        return self.transform(image), self.transform(image)


def timed_pass(iterate) -> tuple[int, float, float]:
    cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
    n = iterate()
    return n, time.perf_counter() - t0, tree_cpu_seconds() - cpu0


def throughput(args: argparse.Namespace) -> None:
    import ray
    import torch

    from hexray.data.pipeline import train_dataset
    from hexray.data.sources import folder_source
    from hexray.data.writer import write_shards
    from hexray.train.launch import start_local_ray

    start_local_ray(args.cores, log_to_driver=False)  # as hexray train starts it (a warm pool of idle workers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for out_size, src_size, fmt in ((32, 32, "png"), (224, 256, "jpg")):
            folder = Path(tmp) / f"img{out_size}"
            make_folder(folder, args.images, src_size, fmt)
            write_shards(folder_source(folder), Path(tmp) / f"shards{out_size}", min_shards=2 * args.cores,
                         progress=False)
            ds = train_dataset(str(Path(tmp) / f"shards{out_size}"), image_size=out_size, seed=0, num_cpus=1.0)
            files = sorted(str(p) for p in folder.rglob(f"*.{fmt}"))
            loader = torch.utils.data.DataLoader(FileTwoViews(files, out_size), batch_size=args.batch,
                                                 shuffle=True, num_workers=args.cores, persistent_workers=True)

            def ray_pass(ds=ds) -> int:
                return sum(len(b["id"]) for b in ds.iter_torch_batches(batch_size=args.batch))

            def loader_pass(loader=loader) -> int:
                return sum(len(v1) for v1, _ in loader)

            ray_pass(), loader_pass()  # warm-up: worker start-up and imports
            results = {"ray": [], "loader": []}
            for _ in range(args.rounds):
                for name, fn in (("ray", ray_pass), ("loader", loader_pass)):
                    results[name].append(timed_pass(fn))
            del loader
            for name in ("ray", "loader"):
                n = results[name][0][0]
                ips = statistics.median(r[0] / r[1] for r in results[name])
                per_cpu_s = statistics.median(r[0] / max(r[2], 1e-9) for r in results[name])
                rows.append((out_size, name, n, ips, ips / args.cores, per_cpu_s))
    ray.shutdown()
    print(f"\ntwo-view throughput, {args.cores} cores each, {args.images} images, median of {args.rounds} "
          f"interleaved passes")
    print(f"{'px':>4} {'pipeline':>10} {'img/s':>9} {'img/s/core':>11} {'img/CPU-s':>10}")
    for size, name, _, ips, per_core, per_cpu_s in rows:
        print(f"{size:>4} {name:>10} {ips:>9.1f} {per_core:>11.1f} {per_cpu_s:>10.1f}")
    for size in (32, 224):
        r = {name: (pc, pcs) for s, name, _, _, pc, pcs in rows if s == size}
        print(f"{size:>4} px ratio Ray Data / DataLoader: {r['ray'][0] / r['loader'][0]:.2f}x per core, "
              f"{r['ray'][1] / r['loader'][1]:.2f}x per CPU-second")


def memory(args: argparse.Namespace) -> None:
    import ray

    from hexray.data.pipeline import decoded_dataset, train_dataset
    from hexray.data.sources import folder_source
    from hexray.data.writer import write_shards

    store = args.object_store_mb * 2**20
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        make_folder(probe, 16, 224, "jpg", noise=True)  # size one encoded image first: JPEG of noise at q90
        per_image = statistics.mean(f.stat().st_size for f in probe.rglob("*.jpg"))
        n = int(args.memory_mb * 2**20 / per_image) + 1
        t0 = time.perf_counter()
        make_folder(Path(tmp) / "img", n, 224, "jpg", noise=True)
        manifest = write_shards(folder_source(Path(tmp) / "img"), Path(tmp) / "shards", shard_mb=32,
                                progress=False)
        print(f"memory pass: wrote {n} images of ~{per_image / 1024:.0f} KB and their shards in "
              f"{time.perf_counter() - t0:.0f} s; streaming them now", flush=True)
        data_bytes = sum(s.bytes for s in manifest.splits["train"].shards)
        ray.init(num_cpus=args.cores, object_store_memory=store, log_to_driver=False)
        shards = str(Path(tmp) / "shards")
        if args.memory_views == "trainer":  # what training streams by default (data.augment_in: trainer)
            ds, row_bytes = decoded_dataset(shards, image_size=224, seed=0, num_cpus=1.0), 3 * 256 * 256
        else:
            ds, row_bytes = train_dataset(shards, image_size=224, seed=0, num_cpus=1.0), 2 * 3 * 224 * 224 * 4
        base, peak, stop = tree_memory(), [0, 0], threading.Event()
        progress = [0]
        quarter_peaks = [0, 0, 0, 0]  # peak USS while the pass was in its 1st, 2nd, 3rd, 4th quarter of images

        def sample() -> None:
            while not stop.is_set():
                rss, uss = tree_memory()
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], uss)
                q = min(3, 4 * progress[0] // max(n, 1))
                quarter_peaks[q] = max(quarter_peaks[q], uss)
                time.sleep(0.5)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        for b in ds.iter_torch_batches(batch_size=64):
            progress[0] += len(b["id"])
        seen = progress[0]
        seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
        ray.shutdown()
    produced = seen * row_bytes
    what = "uint8 256-px decoded" if args.memory_views == "trainer" else "float32 two-view 224-px"
    print(f"\nstreamed pass ({args.memory_views} views): {seen} images, shards {data_bytes / 2**20:.0f} MB "
          f"({data_bytes / store:.1f}x the {args.object_store_mb} MB object store), {what} output "
          f"{produced / 2**30:.1f} GB, {seconds:.0f} s")
    mb = 2**20
    print(f"process-tree RSS: {base[0] / mb:.0f} MB before, peak {peak[0] / mb:.0f} MB during "
          f"(+{(peak[0] - base[0]) / mb:.0f} MB; shared object-store pages counted once per process)")
    print(f"process-tree USS (private pages): {base[1] / mb:.0f} MB before, peak {peak[1] / mb:.0f} MB during "
          f"(+{(peak[1] - base[1]) / mb:.0f} MB), plus an object store capped at {args.object_store_mb} MB; "
          f"the dataset is {data_bytes / mb:.0f} MB")
    print("peak USS per quarter of the pass (flat = bounded; growth would mean the stream accumulates): "
          + ", ".join(f"{q / mb:.0f}" for q in quarter_peaks) + " MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-mb", type=float, default=500.0, help="size of the streamed dataset")
    parser.add_argument("--object-store-mb", type=int, default=100)
    parser.add_argument("--memory-views", choices=["trainer", "pipeline"], default="trainer",
                        help="stream decode-only rows (data.augment_in: trainer, the default) or two-view rows")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        memory(args)
        return
    if not args.skip_throughput:
        throughput(args)
    if not args.skip_memory:  # a fresh process: a new Ray with a small object store, a clean RSS baseline
        subprocess.run([sys.executable, __file__, "--memory-only", "--cores", str(args.cores), "--memory-mb",
                        str(args.memory_mb), "--object-store-mb", str(args.object_store_mb), "--memory-views",
                        args.memory_views], check=True)


if __name__ == "__main__":
    main()
