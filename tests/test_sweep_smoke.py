"""End to end through the CLI: `hexray sweep sweeps/smoke.yaml` (2 tiny trials on synthetic data: two arms, one
seed, each ending with the end-of-run table; its metric is measured at the 2nd and last epoch only) writes the
table, best config and plots, `hexray report` pairs the arms, and `hexray train best_config.yaml --check` accepts
the best config as is."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hexray.cli import main

SMOKE = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"


def test_cli_rejects_a_bad_sweep_before_ray(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"space": {"hex.no_such_key": {"choice": [1, 2]}}}))
    assert main(["sweep", str(bad), "--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "hexray sweep: error:" in err and "space.hex.no_such_key" in err
    assert not (tmp_path / "bad").exists()
    assert main(["sweep"]) == 2 and "exactly one of" in capsys.readouterr().err


def test_sweep_check_validates_without_ray(tmp_path, capsys):
    import ray

    ray_before = ray.is_initialized()  # another test of the session may have started the shared Ray
    assert main(["sweep", str(SMOKE), "--check", "--storage-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sweep 'smoke' OK" in out and "scheduler fifo" in out and "hexray_driver" in out
    assert "#   base: hex.variant='decomposed'" in out and "# 2 trial(s)" in out
    raw = yaml.safe_load(SMOKE.read_text())
    raw["scheduler"] = {"kind": "asha", "max_t": 2}  # ASHA would stop some arms early: not a paired comparison
    (tmp_path / "asha.yaml").write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(tmp_path / "asha.yaml"), "--check"]) == 2
    assert "arms: a controlled comparison runs every arm to the end" in capsys.readouterr().err
    assert ray.is_initialized() == ray_before and not (tmp_path / "smoke").exists()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_smoke_sweep_end_to_end(ray_session, tmp_path, capsys, caplog):
    assert main(["sweep", str(SMOKE), "--storage-path", str(tmp_path / "sweeps")]) == 0
    assert "TUNE_DISABLE_STRICT_METRIC_CHECKING" not in os.environ  # off for that sweep only, not for later ones
    out = capsys.readouterr().out
    # base's ε = +∞ (empty H(i)) stays out of Tune's TensorBoard logger, which warned at every epoch
    assert not [r for r in caplog.records if "NaN or Inf" in r.getMessage()]
    exp = tmp_path / "sweeps" / "smoke"
    assert "sweep 'smoke': 2 trials" in out and "best config:" in out
    # Tune's trial table names each trial's arm; Tune's pointer to its /tmp copy went to the sweep's log instead
    assert "'_value': 'HEX'}" in out and "/tmp/ray" not in out and (exp / "hexray.log").is_file()
    table = pd.read_csv(exp / "sweep_results.csv")
    assert len(table) == 2 and set(table.columns) >= {"run.arm", "hex.threshold", "probe/online_top1 (best)"}
    assert (table["status"] == "TERMINATED").all() and sorted(table["run.arm"]) == ["HEX", "base"]
    finals = sorted(exp.glob("*/train/final_eval.json"))
    assert len(finals) == 2  # each trial's end-of-run table, next to its metrics.csv
    doc = tmp_path / "results.md"
    assert main(["report", str(exp), "--out", str(doc)]) == 0
    text = doc.read_text()
    assert "### synthetic-hierarchy, simclr: 2 arms" in text and "| raw pixels | 1 (0) |" in text
    assert "| **HEX** |" in text and "(1 seed)" in text and (tmp_path / "results/plots").is_dir()
    assert pd.read_parquet(exp / "sweep_results.parquet").shape == table.shape
    for plot in ("metric_vs_params.png", "metric_curves.png"):
        assert (exp / plot).stat().st_size > 1000
    best = exp / "best_config.yaml"
    assert yaml.safe_load(best.read_text())["run"]["name"] == "smoke-best"

    # A finished sweep: --resume has nothing to rerun, --report rewrites the outputs from Tune's state.
    (exp / "sweep_results.csv").unlink()
    assert main(["sweep", "--resume", str(exp)]) == 0
    assert pd.read_csv(exp / "sweep_results.csv")["trial_id"].tolist() == table["trial_id"].tolist()
    assert main(["sweep", "--report", str(exp)]) == 0 and "2 trials" in capsys.readouterr().out

    # The best config is a whole, valid run config: every check `hexray train` makes before Ray starts passes (a
    # training run of it would add ~30 s of Ray Train start-up and nothing the trials above did not exercise).
    assert main(["train", str(best), "--check", "--set", f"run.storage_path={tmp_path / 'runs'}"]) == 0
    assert "# config OK: simclr on" in capsys.readouterr().out
