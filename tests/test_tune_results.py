"""The sweep's terminal summary after an interrupted run: a trial Tune still holds as running must not be counted
as finished (a Result carries no status, so without Tune's counts it read as TERMINATED with 0 iterations)."""

from __future__ import annotations

import pandas as pd

from hexray.storage import StoragePath
from hexray.tune.results import SweepReport, summarize, unfinished_trials
from hexray.tune.spec import sweep_from_dict


class _Grid(list):
    """What the summary reads of Tune's ResultGrid: its results, and its counts by trial status."""

    def __init__(self, results, terminated: int, errors: int):
        super().__init__(results)
        self.num_terminated, self.num_errors = terminated, errors


def _report(tmp_path, unfinished: int) -> SweepReport:
    table = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["TERMINATED", "TERMINATED", "ERROR"],
                          "loss (best)": [0.5, float("nan"), float("nan")], "path": ["x", "y", "z"]})
    csv = StoragePath(str(tmp_path / "exp" / "sweep_results.csv"))
    return SweepReport(table=table, csv=csv, parquet=csv, curves=pd.DataFrame(), best_config=None,
                       unfinished=unfinished)


def test_an_interrupted_sweep_counts_unfinished_trials_and_says_how_to_resume(tmp_path):
    assert unfinished_trials(_Grid([object()] * 3, terminated=1, errors=1)) == 1
    assert unfinished_trials([object()] * 3) == 0  # no counts to read: nothing claimed
    spec = sweep_from_dict({"name": "s", "metric": "loss", "mode": "min", "space": {"hex.beta": {"grid": [0, 1]}}})
    text = summarize(_report(tmp_path, unfinished=1), spec)
    assert "3 trials, 1 finished, 1 failed, 1 unfinished" in text
    assert f"hexray sweep --resume {tmp_path / 'exp'}" in text
    done = summarize(_report(tmp_path, unfinished=0), spec)
    assert "3 trials, 2 finished, 1 failed;" in done and "--resume" not in done
