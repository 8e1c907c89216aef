"""The sweep's terminal summary after an interrupted run: a trial Tune still holds as pending or running is counted
as unfinished (not finished) and the summary says how to resume. The real interruption (Ctrl+C during a Tune run)
is in test_tune_driver.py."""

from __future__ import annotations

import pandas as pd

from hexray.storage import StoragePath
from hexray.tune.results import UNFINISHED, SweepReport, saved_statuses, summarize
from hexray.tune.spec import sweep_from_dict


def _report(tmp_path, statuses: list[str]) -> SweepReport:
    table = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": statuses,
                          "loss (best)": [0.5, float("nan"), float("nan")], "path": ["x", "y", "z"]})
    csv = StoragePath(str(tmp_path / "exp" / "sweep_results.csv"))
    return SweepReport(table=table, csv=csv, parquet=csv, curves=pd.DataFrame(), best_config=None)


def test_an_interrupted_sweep_counts_unfinished_trials_and_says_how_to_resume(tmp_path):
    spec = sweep_from_dict({"name": "s", "metric": "loss", "mode": "min", "space": {"hex.beta": {"grid": [0, 1]}}})
    text = summarize(_report(tmp_path, ["TERMINATED", UNFINISHED, "ERROR"]), spec)
    assert "3 trials, 1 finished, 1 failed, 1 unfinished" in text
    assert f"hexray sweep --resume {tmp_path / 'exp'}" in text
    done = summarize(_report(tmp_path, ["TERMINATED", "TERMINATED", "ERROR"]), spec)
    assert "3 trials, 2 finished, 1 failed;" in done and "--resume" not in done
    # a grid of 2 x 2 arms of which the search created 3 before the stop: the 4th is not started, resume runs it
    two_arms = sweep_from_dict({"name": "s", "metric": "loss", "mode": "min", "space": {"hex.beta": {"grid": [0, 1]}},
                                "arms": [{"name": "a"}, {"name": "b", "hex.local_weight": 3.0}]})
    text = summarize(_report(tmp_path, ["TERMINATED", "TERMINATED", "ERROR"]), two_arms)
    assert "3 trials, 2 finished, 1 failed, 1 not started" in text and "--resume" in text


def test_a_directory_without_tune_state_has_no_saved_statuses(tmp_path):
    assert saved_statuses(StoragePath(str(tmp_path))) == {}
