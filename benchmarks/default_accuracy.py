"""Does the default learn? `hexray train` (the embedded default) and `hexray train fashion-mnist-long`, timed end to
end, with the final table's kNN@20 (cosine, T = 0.07, full 60k training bank, test split) next to raw pixels and a
random-init copy scored the same way.

    python benchmarks/default_accuracy.py                 # both (~12 + ~30 min on 2 CPU cores)
    python benchmarks/default_accuracy.py --only default

Targets (issue "HEX as its authors ran it"): default ≤ 12 min and kNN ≥ 86.0%; long ≤ 30 min and kNN ≥ 87.0%.
Run it on a quiet machine: the wall time is part of the result. Shards are written first (not timed) so both
runs start from a warm cache, as a user's second run does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {"default": (None, 12 * 60, 0.860), "long": ("fashion-mnist-long", 30 * 60, 0.870)}


def _train(config: str | None, storage: Path, name: str) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "hexray.cli", "train", *([config] if config else []),
           "--set", f"run.storage_path={storage}", "--set", f"run.name={name}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, json.loads((storage / name / "summary.json").read_text())["evaluation"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(RUNS), help="run one of the two")
    args = parser.parse_args()
    from hexray.data.registry import prepare_dataset

    prepare_dataset("fashion-mnist")  # shards once, outside the timed runs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (config, budget, target) in RUNS.items():
            if args.only and name != args.only:
                continue
            wall, ev = _train(config, Path(tmp), name)
            knn = {row: ev[row]["knn/top1@20"] for row in ("pretrained", "random_init", "raw_pixels")}
            ok = wall <= budget and knn["pretrained"] >= target
            rows.append((name, wall, knn, budget, target, ok))
            gap = knn["pretrained"] - knn["raw_pixels"]
            print(f"{name}: {wall / 60:.1f} min, kNN {knn['pretrained']:.2%} (random init {knn['random_init']:.2%}, "
                  f"raw pixels {knn['raw_pixels']:.2%}); pretrained − raw pixels {gap:+.2%}", flush=True)
    print(f"\n{'run':<9}{'wall':>9}{'kNN':>9}{'random':>9}{'pixels':>9}   target")
    for name, wall, knn, budget, target, ok in rows:
        print(f"{name:<9}{wall / 60:>7.1f} m{knn['pretrained']:>9.2%}{knn['random_init']:>9.2%}"
              f"{knn['raw_pixels']:>9.2%}   ≤ {budget // 60} min, ≥ {target:.1%}: {'met' if ok else 'MISSED'}")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
