"""`hexray eval` and `hexray report` against the real layers: config, methods registry, checkpoint files, the
synthetic-hierarchy shards (no Ray: the training e2e tests cover the Ray side of the same files)."""

from __future__ import annotations

import json

import pytest
import torch

from hexray.cli import main

TINY = ["data.dataset=synthetic-hierarchy", "data.options={images_per_class: 20, image_size: 16}",
        "data.image_size=16", "backbone.name=convnet", "backbone.in_channels=3", "backbone.width=8",
        "method.proj_hidden_dim=32", "method.proj_output_dim=16", "run.epochs=2", "run.log_every_steps=3",
        "hex.warmup_epochs=1", "data.batch_size=32", "probe.knn_train_limit=400", "probe.knn_eval_limit=200"]
EVAL = ["--probe-epochs", "10", "--tau-down", "0.3,1", "--max-train", "150", "--max-test", "40"]


def _checkpointed_run(tmp_path, extra: list[str]):
    """A run dir written with the train layer's own config/checkpoint functions (weights: two SGD steps per
    'epoch' on random images; what matters here is that every layer's real file format is read back)."""
    from hexray.checkpoint import checkpoint_dir_name, save_state
    from hexray.config import load_config, save_config
    from hexray.methods.registry import build_method

    cfg = load_config(None, [*TINY, *extra, f"data.cache_dir={tmp_path / 'cache'}", f"run.storage_path={tmp_path}",
                             "run.name=real"])
    run = tmp_path / "real"
    save_config(cfg, run / "config.yaml")
    method = build_method(cfg.method, cfg.backbone, cfg.hex, cfg.sem, max_epochs=cfg.run.epochs)
    opt = torch.optim.SGD(method.parameters(), lr=0.05)
    from hexray.config import config_to_dict

    torch.manual_seed(0)
    rows = ["epoch,step,loss"]
    for epoch in (1, 2):
        for _ in range(2):
            out = method(torch.randn(16, 3, 16, 16), torch.randn(16, 3, 16, 16), epoch=epoch)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        rows.append(f"{epoch},{2 * epoch},{out.loss.item()}")
        save_state(run / checkpoint_dir_name(epoch), {"method": method.state_dict(), "epoch": epoch,
                                                      "step": 2 * epoch, "config": config_to_dict(cfg)})
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run


@pytest.mark.timeout(120)
def test_eval_and_report_on_real_checkpoints_and_shards(tmp_path, capsys):
    # 40 test images: rows of ≤ 51 similarities put the full-row 0.99-quantile on the self-similarity (H empty),
    # so this run's threshold uses the 0.9-quantile to give the trajectory a non-empty H(i) to score
    run = _checkpointed_run(tmp_path, ["sem.enabled=true", "sem.num_simplices=4", "sem.simplex_dim=4",
                                       "hex.quantile=0.9"])
    assert main(["eval", str(run), *EVAL]) == 0
    out = capsys.readouterr().out
    assert "kNN k=200" in out and "SEM τ_down sweep" in out
    ev = json.loads((run / "eval.json").read_text())
    assert ev["epoch"] == 2 and ev["run"]["dataset"] == "synthetic-hierarchy" and ev["run"]["sem"] is True
    assert ev["num_train"] == 150 and ev["num_test"] == 40
    assert {"probe/top1@1pct", "knn/superclass@200", "sem/probe_top1"} <= set(ev["metrics"])
    assert set(ev["sem"]["tau_down"]) == {"0.3", "1"}
    assert [p["epoch"] for p in ev["trajectory"]] == [1, 2]
    assert {"hex/epsilon", "hex/purity_superclass", "rank/superclass_mean"} <= set(ev["trajectory"][-1])
    assert {"similarity", "collapse", "accuracy"} <= set(ev["plots"])
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| synthetic-hierarchy | simclr+SEM | HEX | — | 1 (0) |" in md
