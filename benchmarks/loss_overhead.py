"""Forward+backward cost of HEX (adaptive threshold) over plain NT-Xent, measured side by side in one run.

Issue 2 targets: HEX/NT-Xent ≤ 1.25× at global batch 4096 on CPU, ≤ 1.10× on a GPU. Batch B means B images,
so both losses see 2B embeddings (d = 128 by default). Repeats are interleaved (NT-Xent, HEX, NT-Xent, HEX, ...)
so that clock and cache drift hit both alike; medians are reported, as wall time and as process CPU time (on a
shared, loaded machine the CPU time is the steadier of the two). On CPU, HEX runs its sparse adaptive kernel
(hexray.losses._sparse_hex); `--kernel dense` times the row-chunked dense kernel instead.

    python benchmarks/loss_overhead.py                               # CPU, float32, B = 256, 1024, 4096
    python benchmarks/loss_overhead.py --device cuda --dtype bf16 --repeats 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hexray.losses import HexConfig, HEXLoss, nt_xent

DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z1: torch.Tensor, z2: torch.Tensor,
          dtype: torch.dtype) -> None:
    z1.grad = z2.grad = None
    with torch.autocast(z1.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss = loss_fn(F.normalize(z1, dim=1), F.normalize(z2, dim=1))
    loss.backward()


def _time(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds)."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def measure(batch: int, dim: int, device: torch.device, dtype: torch.dtype, repeats: int, warmup: int,
            seed: int = 0, kernel: str = "auto") -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per forward+backward for NT-Xent and HEX at `batch` images (2·batch embeddings)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # Mildly clustered embeddings, so H(i) is not trivially empty or huge.
    centers = torch.randn(max(batch // 64, 2), dim, generator=gen)
    base = centers[torch.randint(len(centers), (batch,), generator=gen)] + 0.7 * torch.randn(batch, dim, generator=gen)
    z1 = (base + 0.3 * torch.randn(batch, dim, generator=gen)).to(device).requires_grad_()
    z2 = (base + 0.3 * torch.randn(batch, dim, generator=gen)).to(device).requires_grad_()
    hex_loss = HEXLoss(HexConfig(threshold="adaptive", warmup_epochs=0), max_epochs=100, kernel=kernel)
    variants = {
        "ntxent": lambda a, b: nt_xent(a, b, 0.1, validate=False).loss,
        "hex": lambda a, b: hex_loss.pairs(a, b, epoch=0, validate=False).loss,
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for i in range(warmup + repeats):
        for name, fn in variants.items():
            t = _time(lambda fn=fn: _step(fn, z1, z2, dtype), device)
            if i >= warmup:
                times[name].append(t)
    return {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per loss and batch size")
    p.add_argument("--warmup", type=int, default=2, help="untimed repeats first")
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096], help="global batch sizes (images)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--kernel", default="auto", choices=["auto", "dense", "sparse"], help="HEXLoss kernel")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}, dtype: {args.dtype}, d = {args.dim}, HEX kernel: {args.kernel}, "
          f"repeats = {args.repeats} (interleaved), medians")
    print(f"{'batch':>6} {'2B':>6} | {'wall: NT-Xent ms':>16} {'HEX ms':>9} {'ratio':>7} | "
          f"{'CPU: NT-Xent ms':>15} {'HEX ms':>9} {'ratio':>7}")
    for b in args.batches:
        t = measure(b, args.dim, device, dtype, args.repeats, args.warmup, kernel=args.kernel)
        (w_nt, c_nt), (w_hex, c_hex) = t["ntxent"], t["hex"]
        print(f"{b:>6} {2 * b:>6} | {w_nt * 1e3:>16.2f} {w_hex * 1e3:>9.2f} {w_hex / w_nt:>6.3f}× | "
              f"{c_nt * 1e3:>15.2f} {c_hex * 1e3:>9.2f} {c_hex / c_nt:>6.3f}×", flush=True)


if __name__ == "__main__":
    main()
