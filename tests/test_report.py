"""`hexray report` on fake runs: grouping by config, mean ± std over seeds, sweep dirs, plots, bad input."""

from __future__ import annotations

import json
import math

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


def test_an_unfinished_sweep_trial_is_scored_apart_from_finished_ones(tmp_path):
    # a trial still running (or paused) at epoch 2 of 4: its monitor numbers are not averaged with finished runs'
    for seed, epochs in ((0, 4), (1, 4), (2, 2)):
        run = write_fake_run(tmp_path / "sweep" / f"trial_{seed}" / "train", seed=seed, epochs=epochs,
                             checkpoints=False)
        (run / "summary.json").unlink()
        if epochs == 2:  # the config plans 4 epochs, as the sweep's other trials
            import yaml

            cfg = yaml.safe_load((run / "config.yaml").read_text())
            cfg["run"]["epochs"] = 4
            (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    md = write_report([tmp_path / "sweep"], tmp_path / "out", plots=False).read_text()
    assert md.count("| synthetic-hierarchy | simclr | HEX |") == 2, md
    assert "epoch 2 of 4: unfinished" in md and "epoch 4 of 4" not in md


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


def _armed_runs(root, arms: dict[str, list[float]], *, method: str = "simclr", base_numbers=(0.70, 0.72, 0.74)):
    """Sweep-trial-like runs (config with run.arm, final_eval.json, no summary table): one per arm and seed, with
    kNN fine = the given numbers per seed and raw pixels at 0.60."""
    import yaml

    for arm, fine in {"base": list(base_numbers), **arms}.items():
        for seed, value in enumerate(fine):
            run = write_fake_run(root / f"{method}_{arm.replace(' ', '_')}_s{seed}", method=method, seed=seed,
                                 checkpoints=False, summary={"final_metrics": {}},
                                 metrics={"hex/purity_class": [0.2, 0.3, 0.4], "hex/chance_class": [0.1] * 3,
                                          "hex/chance_superclass": [0.3] * 3})
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            cfg["run"]["arm"] = arm
            (run / "config.yaml").write_text(yaml.safe_dump(cfg))
            (run / "final_eval.json").write_text(json.dumps({
                "final/pretrained/knn/top1@20": value, "final/pretrained/probe/top1": value + 0.01,
                "final/random_init/knn/top1@20": 0.40, "final/raw_pixels/knn/top1@20": 0.60}))
    return root


def test_arms_are_paired_by_seed_with_a_t_interval_next_to_the_baselines(tmp_path):
    # 'shifted' = base + 2 points on every seed: a paired interval of zero width; 'noisy' differences (+3, -3, 0)
    # average 0 and their interval covers it
    _armed_runs(tmp_path / "exp", {"shifted": [0.72, 0.74, 0.76], "noisy": [0.73, 0.69, 0.74]})
    md = write_report([tmp_path / "exp"], tmp_path / "out").read_text()
    assert "## Controlled comparisons (arms paired by seed)" in md and "### synthetic-hierarchy, simclr: 3 arms" in md
    # two decimals: arms differ by tenths of a point, and a spread of 0.04 must not print as "± 0.0"
    assert "| **base** | 3 (0,1,2) | 72.00 ± 2.00 | 73.00 ± 2.00 |" in md
    assert "| raw pixels | 3 (0,1,2) | 60.00 ± 0.00 | — |" in md
    assert "| random-init network | 3 (0,1,2) | 40.00 ± 0.00 |" in md
    shifted = ("| **shifted** | +2.00 [+2.00, +2.00] ✱ | +2.00 [+2.00, +2.00] ✱ | "
               "kNN@20 fine up 2.00; probe fine up 2.00 |")
    assert shifted in md
    half = 4.303 * 3.0 / 3 ** 0.5  # t_{0.975, 2} · sd / √n with differences (+3, −3, 0)
    assert f"| **noisy** | +0.00 [{-half:+.2f}, {half:+.2f}] |" in md and "no detectable effect at this scale" in md
    # shifted's two intervals exclude 0, noisy's two do not: the count sits under the table it counts
    assert "| **noisy** |" in md.split("2 of 4 intervals exclude 0; with no effect anywhere, about 0.2 would by "
                                       "chance alone (5% each).")[0]
    assert "(plots/arms_synthetic-hierarchy_simclr.png)" in md and (tmp_path / "out/plots/arms_synthetic-hierarchy_"
                                                                     "simclr.png").stat().st_size > 10_000
    assert "| synthetic-hierarchy | simclr | HEX |" not in md  # armed runs are not also in the unpaired tables
    assert "| **shifted** | 3 | 3 | 0.500 | 9.0 | 40.0 (10.0) | 80.0 (30.0) |" in md  # what H(i) holds, epoch 3


def test_a_base_arm_alone_gets_its_table_and_no_empty_difference_table(tmp_path):
    # a sweep's first trial done: one arm, so nothing to pair yet
    _armed_runs(tmp_path / "exp", {})
    md = write_report([tmp_path / "exp"], tmp_path / "out").read_text()
    assert "### synthetic-hierarchy, simclr: 1 arm\n" in md and "| **base** | 3 (0,1,2) |" in md
    assert "arm − base" not in md and "Paired by seed" not in md


def test_compare_differences_an_arm_against_its_own_control_by_seed(tmp_path, capsys):
    # HEX = DCL + 1 point at every seed, and both well above base: against base HEX "moved", against its own
    # control (the question HEX's claim is about) it moved by exactly 1 point; the table exists only when asked for
    _armed_runs(tmp_path / "exp", {"DCL": [0.75, 0.78, 0.74], "HEX released": [0.76, 0.79, 0.75]})
    plain = write_report([tmp_path / "exp"], tmp_path / "plain", plots=False).read_text()
    assert "arm − control" not in plain
    assert main(["report", str(tmp_path / "exp"), "--out", str(tmp_path / "out"), "--no-plots",
                 "--compare", "HEX released vs DCL", "--compare", "simclr: DCL vs base"]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| **HEX released** − DCL | +1.00 [+1.00, +1.00] ✱ | +1.00 [+1.00, +1.00] ✱ |" in md
    assert "| **DCL** − base | +3.67 [" in md  # (+5, +6, 0) / 3
    assert md.index("| **HEX released** − DCL |") > md.index("| arm − control |") > md.index("| arm − base |")
    assert "HEX released** − DCL" in capsys.readouterr().out  # the command prints what it wrote


def test_the_h_table_quotes_what_h_holds_at_each_arms_last_epoch():
    import pandas as pd

    from hexray.eval.arms import hierarchy_table

    def frame(epochs, size, eps, own, sup):
        rows = [{"epoch": e, "hex/h_size": size, "hex/epsilon": eps, "hex/purity_class": own, "hex/chance_class": 0.1,
                 "hex/purity": sup, "hex/chance_superclass": 0.36} for e in range(1, epochs + 1)]
        return pd.DataFrame([{"epoch": e, "loss": 1.0} for e in range(1, epochs + 1)] + rows)  # + loss-only rows

    table = hierarchy_table({
        "HEX": [frame(20, 2.0, 0.60, 0.70, 0.80), frame(20, 1.8, 0.56, 0.76, 0.88), frame(12, 9.0, 0.9, 0.1, 0.1)],
        "oracle": [frame(20, 91.0, 0.0, 0.28, 1.0)],
        "DCL": [frame(20, 0.0, math.inf, 0.0, 0.0)],  # H(i) always empty: nothing to describe
    })
    lines = table.splitlines()
    assert lines[0] == ("| arm | seeds | epoch | ε | H(i) size | H(i) own class % (chance) | "
                        "H(i) superclass % (chance) |")
    # the third HEX seed is at epoch 12 (running, or paused): the table holds the two seeds that reached epoch 20
    assert lines[2] == "| **HEX** | 2 | 20 | 0.580 | 1.9 | 73.0 (10.0) | 84.0 (36.0) |"
    assert lines[3] == "| **oracle** | 1 | 20 | — (oracle) | 91.0 | 28.0 (10.0) | 100.0 (36.0) |"
    assert len(lines) == 4 and hierarchy_table({"DCL": [frame(3, 0.0, math.inf, 0, 0)]}) is None
    # the figure's curves (means over the epochs all runs logged) use the same runs, so a running trial cannot cut them
    from hexray.eval.arms import _furthest

    done, running = frame(20, 2.0, 0.6, 0.7, 0.8), frame(12, 9.0, 0.9, 0.1, 0.1)
    assert [id(f) for f in _furthest([done, running, done])] == [id(done)] * 2 and _furthest([pd.DataFrame()]) == []


def test_runs_table_shows_local_runs_relative_to_the_working_directory(tmp_path, monkeypatch):
    from hexray.eval.report import shown_path
    from hexray.storage import StoragePath

    _armed_runs(tmp_path / "repo" / "runs" / "exp", {})
    monkeypatch.chdir(tmp_path / "repo")
    md = write_report(["runs/exp"], tmp_path / "out", plots=False).read_text()
    assert "| `runs/exp/simclr_base_s0` | simclr: base | 0 |" in md and str(tmp_path) not in md.split("## Runs")[1]
    monkeypatch.chdir(tmp_path / "repo" / "runs" / "exp" / "simclr_base_s0")
    assert shown_path(StoragePath(tmp_path / "repo" / "runs")) == str(tmp_path / "repo" / "runs")  # outside: absolute
    assert shown_path(StoragePath("s3://bucket/runs/r1")) == "s3://bucket/runs/r1"


def test_a_compare_naming_an_arm_without_runs_is_said_and_a_malformed_one_is_an_error(tmp_path, capsys):
    # an arm without runs may be a typo or an arm the sweep has not reached yet (partial results are read at any
    # time): the report says which, on stderr and in the report, and still writes the rest
    _armed_runs(tmp_path / "exp", {"DCL": [0.75, 0.78, 0.74]})
    out = str(tmp_path / "out")
    assert main(["report", str(tmp_path / "exp"), "--out", out, "--no-plots", "--compare", "HEX released vs DCL",
                 "--compare", "byol: DCL vs base"]) == 0
    err, md = capsys.readouterr().err, (tmp_path / "out" / "report.md").read_text()
    for text in (err, md):
        assert "no run of arm 'HEX released' (arms with runs: DCL, base); not compared" in text
        assert "no run of arm 'DCL' with method byol" in text
    assert "arm − control" not in md and "| **DCL** |" in md
    for bad in ("HEX released, DCL", "DCL vs DCL", "DCL vs "):
        assert main(["report", str(tmp_path / "exp"), "--out", str(tmp_path / "bad"), "--compare", bad]) == 2
        assert "--compare" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "report.md").exists()  # a malformed compare fails before anything is written


def test_report_into_a_markdown_file_keeps_the_text_around_its_marks(tmp_path):
    from hexray.eval.report import BEGIN_MARK, END_MARK

    _armed_runs(tmp_path / "exp", {"shifted": [0.72, 0.74, 0.76]})
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text(f"# Results\n\nWritten by hand.\n\n{BEGIN_MARK}\nold tables\n{END_MARK}\n\n## Protocol\n\nKept.\n")
    assert main(["report", str(tmp_path / "exp"), "--out", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Results\n\nWritten by hand.") and text.endswith("## Protocol\n\nKept.\n")
    assert "old tables" not in text and "| **shifted** |" in text
    assert "(results/plots/arms_synthetic-hierarchy_simclr.png)" in text
    assert (tmp_path / "docs/results/plots/arms_synthetic-hierarchy_simclr.png").is_file()


def test_paired_difference_matches_a_plain_t_interval():
    from hexray.eval.paired import paired_difference, reading, t975

    d = paired_difference({0: 0.5, 1: 0.7, 2: 0.9, 3: 0.4}, {0: 0.4, 1: 0.5, 2: 0.6, 9: 0.0})  # seed 3, 9 unpaired
    diffs = [0.1, 0.2, 0.3]
    mean = sum(diffs) / 3
    sd = (sum((x - mean) ** 2 for x in diffs) / 2) ** 0.5
    assert d.seeds == (0, 1, 2) and abs(d.mean - mean) < 1e-12
    assert abs(d.low - (mean - 4.303 * sd / 3 ** 0.5)) < 1e-12 and not d.detectable  # the interval covers 0
    assert t975(1) == 12.706 and t975(30) == 2.042 and t975(100) == 1.96
    single = paired_difference({0: 0.5}, {0: 0.4})
    assert single.low is None and not single.detectable and reading([("kNN", single)]) == "one seed: no interval"
    assert paired_difference({0: 0.5}, {1: 0.4}) is None


def test_the_chance_count_counts_intervals_only():
    from hexray.eval.paired import chance_count, paired_difference

    moved = paired_difference({0: 0.6, 1: 0.7, 2: 0.8}, {0: 0.5, 1: 0.6, 2: 0.7})  # +0.1 at every seed
    still = paired_difference({0: 0.6, 1: 0.4, 2: 0.5}, {0: 0.5, 1: 0.5, 2: 0.5})
    single = paired_difference({0: 0.6}, {0: 0.5})  # one seed: no interval, so not counted either way
    assert chance_count([moved, still, single, None] + [still] * 18) == (
        "1 of 20 intervals exclude 0; with no effect anywhere, about 1.0 would by chance alone (5% each).")
    assert chance_count([single, None]) == ""


def test_the_arm_panels_draw_epsilon_only_for_arms_that_have_one(tmp_path, monkeypatch):
    # the oracles report ε = 0 and "no threshold" +inf: a flat line at 0 would read as a threshold of 0

    import pandas as pd

    from hexray.eval import plots

    def frame(eps: float | None, h_size: float) -> pd.DataFrame:
        eps_values = [0.60, 0.65, 0.70] if eps is None else [eps] * 3
        return pd.DataFrame({"epoch": [1, 2, 3], "hex/epsilon": eps_values, "hex/h_size": [h_size] * 3})

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.update(
        {ax.get_title(): [line.get_label() for line in ax.lines] for ax in fig.axes}))
    plots.plot_arm_panels({"HEX": [frame(None, 3.0)], "oracle": [frame(0.0, 30.0)], "base": [frame(math.inf, 0.0)]},
                          tmp_path / "arms.png", title="t")
    assert drawn["threshold ε"] == ["HEX (n=1)"]
    assert drawn["mean |H(i)|"] == ["HEX (n=1)", "oracle (n=1)"]  # base: H(i) empty throughout
