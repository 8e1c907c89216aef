"""Evaluation that scales: the end-of-run table and the kNN monitor are computed by the training workers, each
over its share of the sample, so the driver never holds a split. Checked by the driver's own peak memory on the
same run over 1× and 10× the data (it must not grow). The 2-worker gather path runs in tests/test_train_e2e.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hexray.config import load_config
from hexray.eval.datasource import read_share, share_plan

COMMON = ["data.image_size=32", "data.batch_size=32", "data.limit_train=256", "backbone.in_channels=3",
          "backbone.width=8", "method.proj_hidden_dim=64", "method.proj_output_dim=32", "run.epochs=1",
          "probe.knn_every_epochs=0", "checkpoint.metric=loss", "checkpoint.mode=min", "eval.probe_epochs=3",
          "run.progress=false"]


def _shard(root, per_class: int) -> None:
    from hexray.cli import main

    assert main(["shard", "synthetic-hierarchy", str(root), "--option", f"images_per_class={per_class}",
                 "--option", "image_size=32", "--workers", "1", "--min-shards", "8", "--no-progress"]) == 0


def _train(tmp_path, root, name: str, *extra: str) -> dict:
    sets = [*COMMON, f"data.root={root}", f"run.storage_path={tmp_path / 'runs'}", f"run.name={name}", *extra]
    args = [sys.executable, "-m", "hexray.cli", "train"] + [a for s in sets for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=400, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_path / "runs" / name / "summary.json").read_text())


def test_share_plan_is_a_seeded_sample_split_over_workers(tmp_path):
    root = tmp_path / "s"
    _shard(root, per_class=20)
    from hexray.data.manifest import load_manifest

    m = load_manifest(str(root))
    plan = share_plan(m, "train", 100, seed=3)
    assert sum(n for _, n in plan) == 100 and plan == share_plan(m, "train", 100, seed=3)
    assert plan != share_plan(m, "train", 100, seed=4)
    one = read_share(str(root), "train", image_size=32, max_rows=100, seed=3)
    parts = [read_share(str(root), "train", image_size=32, max_rows=100, seed=3, rank=r, world=3) for r in range(3)]
    assert sum(p["label"].numel() for p in parts) == one["label"].numel() == 100
    assert sorted(sum((p["label"].tolist() for p in parts), [])) == sorted(one["label"].tolist())
    assert one["image"].shape == (100, 3, 32, 32) and one["superclass"].min() >= 0
    cfg = load_config(None, ["eval.bank_size=50000"])
    assert cfg.eval.bank_size == 50000 and load_config(None).eval.bank_size == 100_000


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_driver_memory_does_not_grow_with_the_dataset(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    _shard(small, per_class=60)   # 576 train / 144 test images
    _shard(large, per_class=600)  # 10×: 5760 / 1440 (88 MB as float32 if anything held them all)
    s = _train(tmp_path, small, "small")
    big = _train(tmp_path, large, "large")
    grew = big["driver_peak_rss_mb"] - s["driver_peak_rss_mb"]
    assert grew < 40, f"driver peak RSS {s['driver_peak_rss_mb']} MB → {big['driver_peak_rss_mb']} MB on 10× data"
    assert set(big["evaluation"]) == {"pretrained", "random_init", "raw_pixels"}
    assert big["evaluation"]["raw_pixels"]["knn/top1@20"] > 1 / 12 * 2  # scored over the whole 10× bank



def test_probe_trains_on_its_own_cap_while_knn_uses_the_whole_bank():
    import torch

    from hexray.eval import EvalSettings, evaluate_features
    from hexray.train.final_eval import _score

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=gen) * 3
    y, ty = torch.arange(4).repeat(60), torch.arange(4).repeat(20)
    x, tx = centres[y] + torch.randn(240, 8, generator=gen), centres[ty] + torch.randn(80, 8, generator=gen)
    cfg = load_config(None, ["eval.probe_train_size=40", "eval.probe_epochs=5"])
    got = _score(x, y, tx, ty, num_classes=4, class_to_superclass=[0, 0, 1, 1], cfg=cfg)
    whole = evaluate_features(x, y, tx, ty, num_classes=4, class_to_superclass=[0, 0, 1, 1],
                              settings=EvalSettings(ks=(20,), probe=False))
    capped = evaluate_features(x[:40], y[:40], tx, ty, num_classes=4, class_to_superclass=[0, 0, 1, 1],
                               settings=EvalSettings(knn=False, probe_epochs=5))
    assert got == {**whole, **capped} and "probe/top1" in got and "knn/top1@20" in got
