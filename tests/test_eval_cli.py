"""`hexray eval` on fake run dirs (train-layer contract): eval.json keys, trajectory, plots, SEM sweep, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from eval_fakes import fake_load_data, fake_restore, write_fake_run

from hexray.cli import main
from hexray.eval import run_eval
from hexray.eval.offline import OfflineSettings, simplex_features
from hexray.eval.run_eval import EvalOptions, evaluate_run

FAST = OfflineSettings(probe_epochs=20, tau_down=(0.1, 1.0))


def _evaluate(run, **kw):
    return evaluate_run(run, settings=FAST, options=EvalOptions(**kw), restore=fake_restore, load_data=fake_load_data)


def test_eval_writes_every_key_and_plot(tmp_path):
    run = write_fake_run(tmp_path / "run")
    result = _evaluate(run)
    saved = json.loads((run / "eval.json").read_text())
    assert saved["epoch"] == 3 and saved["checkpoint"].endswith("checkpoint_epoch0003")
    assert saved["run"] == {"method": "simclr", "hex": True, "hex_threshold": "adaptive", "sem": False,
                            "dataset": "synthetic-hierarchy", "seed": 0, "epochs": 3}
    m = saved["metrics"]
    for key in ("knn/top1@20", "knn/top1@200", "knn/superclass@20", "knn/superclass@200", "probe/top1",
                "probe/superclass", "probe/superclass_direct", "probe/top1@10pct", "probe/superclass@10pct",
                "probe/top1@1pct", "probe/superclass@1pct"):
        assert 0.0 <= m[key] <= 1.0, key
    # the fake data are separable: a frozen random MLP keeps them far above chance (25 % fine, 50 % super)
    assert m["probe/top1"] > 0.6 and m["knn/superclass@20"] > 0.75
    assert saved["sem"] is None
    space = saved["loss_space"]  # the fake's projector output at the run's τ, on the 120 test images in one batch
    assert space["temperature"] == 0.1 and space["denominator/count_class"] == pytest.approx(29)  # 30 a class
    assert sum(space[f"denominator/share_{k}"] for k in ("class", "siblings", "other")) == pytest.approx(1.0)
    traj = saved["trajectory"]
    assert [p["epoch"] for p in traj] == [1, 2, 3]
    for p in traj:
        assert p["rank/global"] >= p["rank/class_mean"] > 0
        assert set(p["rank/per_superclass"]) == {"left", "right"} and set(p["rank/per_class"]) == set("abcd")
        assert sum(p["histogram"]["counts"]) == 120 * 119 // 2
        assert 0 < p["hex/h_size"] and 0 <= p["hex/purity_superclass"] <= 1 and -1 <= p["hex/epsilon"] <= 1
    assert set(saved["plots"]) == {"similarity", "collapse", "training", "accuracy"}
    for rel in saved["plots"].values():
        png = run / rel
        assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    assert result["metrics"] == m


def test_eval_of_a_chosen_checkpoint_without_trajectory(tmp_path):
    run = write_fake_run(tmp_path / "run")
    result = _evaluate_ckpt(run, "checkpoint_epoch0001")
    assert result["epoch"] == 1 and result["trajectory"] == []
    assert "similarity" not in result["plots"] and "training" in result["plots"]


def _evaluate_ckpt(run, name):
    return evaluate_run(run, checkpoint=str(run / name), settings=FAST, options=EvalOptions(trajectory=False),
                        restore=fake_restore, load_data=fake_load_data)


def test_sem_run_sweeps_tau_down(tmp_path):
    run = write_fake_run(tmp_path / "run", sem=True)
    result = _evaluate(run, trajectory=False)
    sem = result["sem"]
    assert set(sem["tau_down"]) == {"0.1", "1"}
    assert sem["best_tau_down"] in (0.1, 1.0)
    assert result["metrics"]["sem/probe_top1"] == sem["tau_down"][f"{sem['best_tau_down']:g}"]["probe/top1"]


def test_sem_logits_recovered_from_head_output_match_the_head_logits():
    """softmax(τ·log p / τ_down) must equal softmax(z / τ_down) for the head's own pre-softmax z."""
    from eval_fakes import TinyMethod, config_dict, fake_config

    from hexray.eval.restore import sem_logits_fn
    from hexray.models.sem import SEMHead

    cfg = fake_config(config_dict(sem=True))
    method = TinyMethod(SEMHead(16, cfg.sem)).eval()
    images = torch.randn(5, 1, 8, 8)
    recovered = sem_logits_fn(method, cfg.sem)(images)
    head = method.sem
    with torch.no_grad():
        z = head.bn(head.linear(method.backbone(images))).view(5, 4, 4)
    for tau in (0.1, 1.0, 3.0):
        assert torch.allclose(simplex_features(recovered, tau), simplex_features(z, tau), atol=1e-5)


def test_cli_prints_table_and_writes_eval_json(tmp_path, monkeypatch, capsys):
    run = write_fake_run(tmp_path / "run")
    monkeypatch.setattr(run_eval, "_default_restore", fake_restore)
    monkeypatch.setattr(run_eval, "_default_load_data", fake_load_data)
    rc = main(["eval", str(run), "--fractions", "1,0.1", "--probe-epochs", "5", "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "kNN k=20" in out and "linear probe 10% labels" in out and "1% labels" not in out
    assert "negatives' share of the loss denominator (projector, τ=0.1" in out and "sibling classes" in out
    saved = json.loads((run / "eval.json").read_text())
    assert "probe/top1@10pct" in saved["metrics"] and "probe/top1@1pct" not in saved["metrics"]
    assert saved["plots"] == {} and saved["settings"]["fractions"] == [1.0, 0.1]


def test_cli_out_writes_elsewhere_and_leaves_the_run_dir_as_it_was(tmp_path, monkeypatch, capsys):
    # a sweep trial scored by its end-of-run table must stay scored by it: eval.json in its run dir would replace it
    run = write_fake_run(tmp_path / "run")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    monkeypatch.setattr(run_eval, "_default_restore", fake_restore)
    monkeypatch.setattr(run_eval, "_default_load_data", fake_load_data)
    out = tmp_path / "elsewhere" / "eval_of_run"
    assert main(["eval", str(run), "--probe-epochs", "5", "--no-trajectory", "--out", str(out)]) == 0
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    saved = json.loads((out / "eval.json").read_text())
    assert saved["run_dir"] == str(run) and saved["out_dir"] == str(out)
    assert saved["plots"] and all((out / rel).stat().st_size > 5000 for rel in saved["plots"].values())
    assert f"wrote {out}/eval.json and {len(saved['plots'])} plots in {out}/plots" in capsys.readouterr().out


def test_cli_missing_run_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "run directory" in err and "nope" in err and "does not exist" in err


def test_cli_run_without_checkpoints_is_a_clear_error(tmp_path, capsys):
    run = write_fake_run(tmp_path / "run", checkpoints=False)
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoints" in err and str(run) in err


def test_cli_not_a_run_dir_and_bad_fraction(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    run = write_fake_run(tmp_path / "run")
    with pytest.raises(SystemExit):
        main(["eval", str(run), "--fractions", "a,b"])
    assert main(["eval", str(run), "--fractions", "1,2"]) == 2
    assert "fractions" in capsys.readouterr().err
