"""End to end through the CLI on the synthetic hierarchy: 2 workers × fractional CPU, tiny convnet, 2 epochs.

One run, several assertions (Ray runs are the slow part): metrics.csv, checkpoints, summary.json with the
per-rank placement and the final table, kNN clearly above chance, then `hexray export` loading strictly into
hexray's convnet.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from tb_events import read_scalars

SYNTH = ["data.dataset=synthetic-hierarchy", "data.options={images_per_class: 30, image_size: 16}",
         "data.image_size=16", "data.batch_size=32", "backbone.name=convnet", "backbone.in_channels=3",
         "backbone.width=8", "method.proj_hidden_dim=64", "method.proj_output_dim=32", "hex.warmup_epochs=1",
         "optim.lr=0.5", "probe.knn_train_limit=400", "probe.knn_eval_limit=200", "run.log_every_steps=3"]


def synthetic_overrides(tmp_path, name: str, **extra: object) -> list[str]:
    """`--set` strings of the tiny synthetic run used by the training tests (cache under tmp)."""
    sets = [*SYNTH, f"run.storage_path={tmp_path}", f"run.name={name}", f"data.cache_dir={tmp_path / 'cache'}"]
    return sets + [f"{k}={v}" for k, v in extra.items()]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_cli_train_two_workers_then_export(ray_session, tmp_path, capsys):
    from hexray.cli import main

    args = ["train"]
    for s in synthetic_overrides(tmp_path, "e2e", **{"scaling.num_workers": 2, "scaling.cpus_per_worker": 0.25,
                                                     "run.epochs": 2}):
        args += ["--set", s]
    assert main(args) == 0
    run = tmp_path / "e2e"
    captured = capsys.readouterr()
    out = captured.out
    assert "epoch 2/2" in out and "img/s" in out and "ETA" in out
    assert "epoch 1/2 step 3/" in out and "final evaluation:" in out  # plain progress lines (not a terminal)
    assert out.rstrip().splitlines()[-1].startswith("raw_pixels")  # the table ends the output
    assert "Started a local Ray" not in captured.out + captured.err and "(raylet)" not in captured.out
    assert "\x1b[" not in out
    assert f"training curves: {run / 'training_curves.png'}" in out and (run / "training_curves.png").is_file()
    assert f"tensorboard --logdir {run}" in out
    scalars = read_scalars(str(run / "tensorboard"))  # TensorBoard's own reader
    assert {"loss", "lr", "knn/top1", "probe/online_top1", "hex/epsilon", "images_per_s"} <= set(scalars)
    assert "final/pretrained/knn/top1@20" in scalars

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    ends = [r for r in rows if r["epoch_end"] == "1"]
    assert [int(r["epoch"]) for r in ends] == [1, 2]
    assert [step for step, _ in scalars["knn/top1"]] == [int(r["step"]) for r in ends]  # one point per epoch
    for key in ("loss", "lr", "images_per_s", "hex/epsilon", "knn/top1", "probe/online_top1", "data/corrupt"):
        assert ends[-1][key] != "", key
    assert 0 <= float(ends[-1]["time/data_wait_frac"]) <= 1  # input stalls, as a share of the epoch's step time
    assert 0 < float(ends[-1]["time/first_batch_s"]) <= float(ends[-1]["time/epoch_s"])
    assert any(r["epoch_end"] == "0" for r in rows)  # every-N-steps reports too
    from hexray.config import load_config
    from hexray.train.metric_names import epoch_metric_names

    # what `hexray sweep --check` accepts as a metric is exactly what an epoch's report holds
    assert {k for k, v in ends[-1].items() if v != ""} == epoch_metric_names(load_config(str(run / "config.yaml")))
    assert (run / "checkpoint_epoch0002" / "state.pt").is_file()
    assert (run / "config.yaml").is_file()

    summary = json.loads((run / "summary.json").read_text())
    assert [w["rank"] for w in summary["workers"]] == [0, 1]
    assert all(w["node_id"] and w["node_ip"] and w["hostname"] for w in summary["workers"])
    ev = summary["evaluation"]
    assert set(ev) == {"pretrained", "random_init", "raw_pixels"}
    chance = 1 / 12  # 4 superclasses × 3 classes
    assert ev["pretrained"]["knn/top1@20"] > 2.5 * chance
    assert {"knn/superclass@20", "probe/top1", "probe/superclass"} <= set(ev["pretrained"])

    out_pt = tmp_path / "backbone.pt"
    assert main(["export", str(run), str(out_pt)]) == 0
    from hexray.models import build_backbone

    cfg = load_config(str(run / "config.yaml"))
    net, _ = build_backbone(cfg.backbone)
    net.load_state_dict(torch.load(out_pt), strict=True)
