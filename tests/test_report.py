"""`hexray report` on fake runs: grouping by config, mean ± std over seeds, sweep dirs, plots, bad input."""

from __future__ import annotations

import json

from eval_fakes import write_fake_run

from hexray.cli import main
from hexray.eval.report import format_cell, mean_std, write_report


def _runs_2x2(root, hex_eval_json: bool = False):
    """base and HEX SimCLR, seeds 0 and 1, with known final numbers in summary.json (and, with `hex_eval_json`,
    the HEX runs' also in an eval.json: `hexray eval`'s other settings)."""
    numbers = {(False, 0): (0.70, 0.90), (False, 1): (0.74, 0.92), (True, 0): (0.80, 0.95), (True, 1): (0.86, 0.97)}
    for (hexed, seed), (fine, sup) in numbers.items():
        run = write_fake_run(
            root / f"{'hex' if hexed else 'base'}_s{seed}", hex_enabled=hexed, seed=seed,
            summary={"final_metrics": {"knn/top1": 0.5},
                     "evaluation": {"pretrained": {"knn/top1@20": fine, "probe/top1": fine, "probe/superclass": sup},
                                    "raw_pixels": {"knn/top1@20": 0.6, "probe/top1": 0.62}}},
        )
        if hexed and hex_eval_json:
            (run / "eval.json").write_text(json.dumps({"metrics": {"knn/top1@20": fine, "probe/top1": fine,
                                                                   "probe/superclass": sup}, "plots": {},
                                                       "settings": {"max_train": 5000, "max_test": 2000,
                                                                    "probe_epochs": 100, "probe_lr": 0.3,
                                                                    "probe_schedule": "cosine"}}))
    return root


def test_mean_and_sample_std():
    assert mean_std([1.0, 3.0]) == (2.0, 2.0 ** 0.5)
    assert format_cell([0.80, 0.86]) == "83.0 ± 4.2"
    assert format_cell([0.5]) == "50.0" and format_cell([]) == "—"


def test_report_on_2x2_runs_gives_mean_and_std_per_group(tmp_path):
    root = _runs_2x2(tmp_path / "runs")
    md = write_report([root], tmp_path / "out").read_text()
    rows = [line for line in md.splitlines()
            if line.startswith(("| synthetic-hierarchy | simclr | base |", "| synthetic-hierarchy | simclr | HEX |"))]
    assert len(rows) == 2, md
    base, hexed = rows
    assert "| base | — | 2 (0,1) | 72.0 ± 2.8 | 72.0 ± 2.8 | 91.0 ± 1.4 |" in base
    assert "| HEX | — | 2 (0,1) | 83.0 ± 4.2 | 83.0 ± 4.2 | 96.0 ± 1.4 |" in hexed
    assert "| synthetic-hierarchy | simclr | — | +11.0 | +11.0 | +5.0 |" in md  # HEX − base
    assert "raw_pixels" in md and "| 60.0 ± 0.0 |" in md
    assert md.count("## Scored by ") == 1 and "## Scored by end-of-run table: kNN k=20" in md
    for name in ("synthetic-hierarchy_knn_top1.png", "synthetic-hierarchy_hex_epsilon.png"):
        assert (tmp_path / "out" / "plots" / name).stat().st_size > 5000
        assert f"(plots/{name})" in md
    assert md.count("summary.json") >= 4  # where each run's numbers came from


def test_numbers_scored_differently_never_share_a_section(tmp_path):
    """HEX runs re-scored by `hexray eval` (other caps, a longer probe) are not set against the base runs'
    end-of-run numbers, nor against baselines from the end-of-run table: each setting gets its own section."""
    root = _runs_2x2(tmp_path / "runs", hex_eval_json=True)
    md = write_report([root], tmp_path / "out", plots=False).read_text()
    sections = {s.split("\n", 1)[0]: s for s in md.split("## Scored by ")[1:]}
    assert len(sections) == 2, list(sections)
    offline = next(s for h, s in sections.items() if h.startswith("hexray eval: ≤5000 train / ≤2000 test"))
    end_of_run = next(s for h, s in sections.items() if h.startswith("end-of-run table"))
    assert "| simclr | HEX |" in offline and "| simclr | base |" not in offline and "raw_pixels" not in offline
    assert "| simclr | base |" in end_of_run and "| simclr | HEX |" not in end_of_run and "raw_pixels" in end_of_run
    assert "HEX − base" not in md  # no pair was scored alike


def test_sweep_dir_is_searched_and_other_config_differences_split_groups(tmp_path, capsys):
    exp = tmp_path / "sweep"
    write_fake_run(exp / "trial_0" / "run", seed=0, epochs=2)
    write_fake_run(exp / "trial_1" / "run", seed=1, epochs=2)
    write_fake_run(exp / "trial_2" / "run", seed=0, epochs=3)
    write_fake_run(exp / "trial_3" / "run", method="byol", seed=0, epochs=2)
    assert main(["report", str(exp), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "4 runs in 3 groups" in md
    assert "| simclr | HEX | run.epochs=2 | 2 (0,1) |" in md and "| simclr | HEX | run.epochs=3 | 1 (0) |" in md
    assert "| byol | HEX | — | 1 (0) |" in md
    assert not (tmp_path / "out" / "plots").exists()
    assert "wrote" in capsys.readouterr().out


def test_report_copies_evaluated_run_plots(tmp_path):
    run = write_fake_run(tmp_path / "r")
    (run / "plots").mkdir()
    (run / "plots" / "collapse.png").write_bytes(b"\x89PNG fake")
    (run / "eval.json").write_text(json.dumps({"metrics": {"probe/top1": 0.5}, "plots": {"collapse":
                                                                                          "plots/collapse.png"}}))
    md = write_report([run], tmp_path / "out").read_text()
    name = "synthetic-hierarchy_simclr_HEX_s0_collapse.png"  # dataset, group and seed: unique per section
    assert f"(plots/per_run/{name})" in md and (tmp_path / "out/plots/per_run" / name).is_file()


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no run directories" in err and "empty" in err


def test_a_sweep_trial_without_summary_reports_its_last_online_knn_from_metrics_csv(tmp_path):
    run = write_fake_run(tmp_path / "sweep" / "trial_0" / "train", seed=0, epochs=4, checkpoints=False,
                         metrics={"knn/superclass": [0.5, 0.6, 0.7, 0.8]})
    (run / "summary.json").unlink()
    md = write_report([tmp_path / "sweep"], tmp_path / "out", plots=False).read_text()
    row = next(line for line in md.splitlines() if line.startswith("| synthetic-hierarchy | simclr | HEX |"))
    assert "| 70.0 | 80.0 |" in row, row  # kNN@20 fine = epoch 4's 0.3 + 0.4; super = 0.8
    assert "metrics.csv (online kNN)" in md


def test_per_run_plots_of_sweep_trials_named_alike_do_not_overwrite_each_other(tmp_path):
    for i, method in enumerate(["simclr", "byol"]):
        run = write_fake_run(tmp_path / "sweep" / f"trial_{i}" / "train", method=method, seed=0, checkpoints=False)
        (run / "plots").mkdir()
        (run / "plots" / "accuracy.png").write_bytes(b"png-of-" + method.encode())
        (run / "eval.json").write_text(json.dumps({"metrics": {"knn/top1@20": 0.5},
                                                   "plots": {"accuracy": "plots/accuracy.png"}}))
    write_report([tmp_path / "sweep"], tmp_path / "out")
    copied = sorted((tmp_path / "out" / "plots" / "per_run").glob("*accuracy.png"))
    assert len(copied) == 2 and {p.read_bytes() for p in copied} == {b"png-of-simclr", b"png-of-byol"}
