"""End to end through the CLI: `hexray sweep sweeps/smoke.yaml` (2 tiny trials on synthetic data, ASHA) writes the
table, best config and plots, and `hexray train best_config.yaml` trains the best config as is."""

from __future__ import annotations

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
    assert "sweep 'smoke' OK" in out and "asha (max_t 2" in out and "hexray_driver" in out
    raw = yaml.safe_load(SMOKE.read_text())
    raw["scheduler"]["max_t"] = 5  # runs are 2 epochs long: ASHA could never stop anything at 5
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(tmp_path / "long.yaml"), "--check"]) == 2
    assert "scheduler.max_t: 5 exceeds run.epochs (2)" in capsys.readouterr().err
    assert ray.is_initialized() == ray_before and not (tmp_path / "smoke").exists()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_smoke_sweep_end_to_end(ray_session, tmp_path, capsys):
    assert main(["sweep", str(SMOKE), "--storage-path", str(tmp_path / "sweeps"), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    exp = tmp_path / "sweeps" / "smoke"
    assert "sweep 'smoke': 2 trials" in out and "best config:" in out
    table = pd.read_csv(exp / "sweep_results.csv")
    assert len(table) == 2 and set(table.columns) >= {"hex.threshold", "probe/online_top1 (best)"}
    assert (table["status"] == "TERMINATED").all()
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

    # The best config trains as is (only where it writes is redirected).
    runs = tmp_path / "runs"
    assert main(["train", str(best), "--set", f"run.storage_path={runs}", "--no-eval"]) == 0
    assert (runs / "smoke-best" / "metrics.csv").is_file()
