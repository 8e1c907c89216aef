"""The Tune side of sweeps through the real driver path (Tune → driver function → trainer.fit), with a tiny
fake trainer in place of hexray's: ASHA stops trials, a failing trial is recorded and the sweep goes on, resume does
not rerun finished trials, Ctrl+C leaves the running trial unfinished (and resume finishes it), PBT restarts trials
from other trials' checkpoints, results and plots are written."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hexray.tune.plots import write_plots
from hexray.tune.results import report_results, summarize
from hexray.tune.runner import prepare_sweep, resume_sweep, run_sweep
from hexray.tune.spec import sweep_from_dict

INIT_KEY = "data.options.init_from"  # the fake reads its start checkpoint here (hexray's trainer: its own key)


def make_fake_builder(log_dir: Path, fail_flag: Path | None = None, epoch_sleep: float = 0.0):
    """A `build_trainer` look-alike (Ray Train's DataParallelTrainer): 1 worker × 0.25 CPU; metric grows by
    hex.beta each epoch; checkpoints its (epoch, value) every epoch and starts from `data.options.init_from` or Ray
    Train's own latest checkpoint."""

    def build(cfg, *, run_name, storage_path, callbacks):
        import ray.train

        # Ray Train's trainer minus the torch backend: the fake loop needs no process group, and a TorchTrainer's
        # worker would import torch and start gloo (5-8 s per fit on 2 cores; PBT and ASHA start ~10 of them)
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

        def loop(config):
            import json as _json
            import tempfile
            import time

            import ray.train as rt
            from ray.train import Checkpoint

            with open(os.path.join(config["log_dir"], "starts.txt"), "a") as f:
                f.write(f"{config['storage_path']}/{config['run_name']}\n")
            if config["fail"]:
                raise RuntimeError(f"injected failure: hex.beta={config['gain']}")
            start, value, origin = 0, 0.0, ""
            ckpt = rt.get_checkpoint()
            src = ckpt.path if ckpt is not None else config["init_from"]
            if src:
                state = _json.loads(Path(src, "state.json").read_text())
                start, value, origin = state["epoch"], state["value"], state["origin"]
            for epoch in range(start, config["epochs"]):
                time.sleep(config["sleep"])
                value += config["gain"]
                with tempfile.TemporaryDirectory() as d:
                    state = {"epoch": epoch + 1, "value": value, "origin": config["run_name"]}
                    Path(d, "state.json").write_text(_json.dumps(state))
                    rt.report({"probe/online_top1": value, "epoch": epoch + 1, "restored_epoch": start,
                               "restored_from": origin}, checkpoint=Checkpoint.from_directory(d))

        fail = cfg.hex.beta == 0.0 and (fail_flag is None or not fail_flag.exists())
        return DataParallelTrainer(
            loop,
            train_loop_config={"epochs": cfg.run.epochs, "gain": cfg.hex.beta, "fail": fail, "sleep": epoch_sleep,
                               "init_from": cfg.data.options.get("init_from"), "log_dir": str(log_dir),
                               "run_name": run_name, "storage_path": storage_path},
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.25}),
            run_config=ray.train.RunConfig(name=run_name, storage_path=storage_path, callbacks=callbacks),
        )

    return build


def _starts(log_dir: Path) -> list[str]:
    path = log_dir / "starts.txt"
    return path.read_text().splitlines() if path.exists() else []


def _prepared(tmp_path: Path, **raw):
    raw.setdefault("overrides", {"run.epochs": 4, "hex.warmup_epochs": 0})
    raw.setdefault("trial", {"driver_resources": {"CPU": 0.01}})
    return prepare_sweep(sweep_from_dict(raw), storage_path=str(tmp_path / "sweeps"), init_key=INIT_KEY)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_asha_stops_trials_failures_are_recorded_and_resume_reruns_nothing(ray_session, tmp_path):
    log_dir, flag = tmp_path / "log", tmp_path / "fixed"
    log_dir.mkdir()
    prepared = _prepared(
        tmp_path, name="asha", metric="probe/online_top1", mode="max",
        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2, "max_t": 4},
        space={"hex.beta": {"grid": [2.0, 0.5, 0.0, 0.25]}},
    )
    builder = make_fake_builder(log_dir, fail_flag=flag)
    results = run_sweep(prepared, builder=builder, init_key=INIT_KEY, verbose=0)

    report = report_results(results, prepared.spec, prepared.base, prepared.experiment_dir)
    table = report.table.set_index("hex.beta")
    assert list(report.table["hex.beta"]) == [2.0, 0.5, 0.25, 0.0]  # sorted by best metric, failed last
    assert table.loc[2.0, "iterations"] == 4 and table.loc[2.0, "probe/online_top1 (best)"] == pytest.approx(8.0)
    assert table.loc[0.5, "status"] == "TERMINATED" and table.loc[0.5, "iterations"] < 4  # ASHA stopped it
    assert table.loc[0.0, "status"] == "ERROR" and "injected failure" in table.loc[0.0, "error"]
    assert pd.read_parquet(str(report.parquet)).shape[0] == 4 and report.csv.is_file()
    best = yaml.safe_load(Path(report.best_config).read_text())
    assert best["hex"]["beta"] == 2.0 and best["run"]["epochs"] == 4 and best["run"]["name"] == "asha-best"
    plots = write_plots(report.table, report.curves, prepared.spec.searched_keys(), prepared.spec.metric,
                        prepared.experiment_dir)
    assert all(p.size() > 1000 for p in plots)
    assert "1 failed" in summarize(report, prepared.spec)

    starts = _starts(log_dir)
    assert len(starts) == 4
    results = resume_sweep(prepared, builder=builder, init_key=INIT_KEY)  # nothing unfinished: nothing reruns
    assert _starts(log_dir) == starts and len(results) == 4

    flag.touch()  # the failure is "fixed": --retry-failed reruns only the failed trial
    results = resume_sweep(prepared, restart_errored=True, builder=builder, init_key=INIT_KEY)
    assert len(_starts(log_dir)) == 5
    table = report_results(results, prepared.spec, prepared.base, prepared.experiment_dir).table
    assert (table["status"] == "TERMINATED").all()


def _interrupt_when_started(log_dir: Path, after_s: float) -> threading.Thread:
    """Ctrl+C to this process `after_s` seconds after the first trial's loop started (Tune's handler takes it)."""

    def watch() -> None:
        while not _starts(log_dir):
            time.sleep(0.2)
        time.sleep(after_s)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_leaves_trials_unfinished_and_says_so_until_resume_finishes_them(ray_session, tmp_path):
    # Tune answers Ctrl+C by saving its state and then marking its in-memory trials TERMINATED: read from the
    # ResultGrid alone, the half-run trial would count as finished and the summary would not say how to resume
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    prepared = _prepared(tmp_path, name="interrupted", metric="probe/online_top1", mode="max",
                         overrides={"run.epochs": 3, "hex.warmup_epochs": 0}, space={"hex.beta": {"grid": [1.0, 2.0]}})
    builder = make_fake_builder(log_dir, epoch_sleep=2.0)
    watcher = _interrupt_when_started(log_dir, after_s=3.0)
    results = run_sweep(prepared, builder=builder, init_key=INIT_KEY, verbose=0)
    watcher.join(timeout=5)

    report = report_results(results, prepared.spec, prepared.base, prepared.experiment_dir)
    assert list(report.table["status"]) == ["UNFINISHED"] and report.unfinished == 1  # the grid's 2nd not created
    text = summarize(report, prepared.spec)
    assert "1 trials, 0 finished, 0 failed, 1 unfinished, 1 not started" in text
    assert f"hexray sweep --resume {prepared.experiment_dir}" in text
    assert len(_starts(log_dir)) == 1

    results = resume_sweep(prepared, builder=builder, init_key=INIT_KEY)
    report = report_results(results, prepared.spec, prepared.base, prepared.experiment_dir)
    table = report.table.set_index("hex.beta")
    assert (table["status"] == "TERMINATED").all() and report.unfinished == 0
    assert table.loc[2.0, "probe/online_top1 (best)"] == pytest.approx(6.0)  # 3 epochs x 2.0, none lost or doubled
    assert len(_starts(log_dir)) == 3  # the interrupted trial once more, the other for the first time
    assert "--resume" not in summarize(report, prepared.spec)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_pbt_restarts_weak_trials_from_strong_trials_checkpoints(ray_session, tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    prepared = _prepared(
        tmp_path, name="pbt", max_concurrent_trials=2, overrides={"run.epochs": 2, "hex.warmup_epochs": 0},
        # synch: each interval's exploit waits for both trials, so a loaded machine that runs one trial ahead of the
        # other (the weak one finishing before the strong one reported) cannot skip every exploit
        scheduler={"kind": "pbt", "perturbation_interval": 1, "quantile_fraction": 0.5, "resample_probability": 0.0,
                   "synch": True, "hyperparam_mutations": {"hex.beta": {"choice": [0.1, 3.0]}}},
        space={"hex.beta": {"grid": [0.1, 3.0]}},
    )
    results = run_sweep(prepared, builder=make_fake_builder(log_dir, epoch_sleep=0.5), init_key=INIT_KEY, verbose=0)
    assert not any(r.error for r in results)
    histories = [r.metrics_dataframe for r in results]
    restored = pd.concat(histories)
    exploited = restored[restored["restored_epoch"] > 0]
    assert len(exploited), "PBT never restored a trial from a checkpoint"
    # The restarted trainer continued the donor's run: its first epoch after the restore follows the donor's epoch.
    assert (exploited["epoch"] > exploited["restored_epoch"]).all()
    assert (exploited["restored_from"] != "").all()
    starts = _starts(log_dir)
    assert any("-from-" in s for s in starts) and len(starts) > 2
    states = [json.loads(p.read_text()) for p in Path(str(prepared.experiment_dir)).rglob("state.json")]
    assert states and max(s["epoch"] for s in states) == 2
