"""What a training run shows and leaves behind, without Ray: the live console (terminal bars or plain lines,
heartbeats), the quiet console's filter, TensorBoard/MLflow logs and the training-curves PNG."""

from __future__ import annotations

import io
import logging
import os
import sys

import pandas as pd
import pytest
from tb_events import read_scalars

from hexray.train.console import LiveConsole
from hexray.train.metrics import LoggerSpec, RunRecorder


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _step(i: int, step: int, **extra: float) -> dict:
    return {"kind": "step", "epoch": 1, "i": i, "steps": 10, "step": step, "loss": 5.0 - i / 10, "eps": 0.62,
            "images_per_s": 900.0, **extra}


def test_plain_console_prints_a_line_every_log_every_steps_and_no_ansi():
    out = _Stream(tty=False)
    console = LiveConsole(None, total_epochs=2, log_every=4, stream=out)
    console.handle({"kind": "phase", "text": "epoch 1: waiting for the first batch"})
    for i in range(1, 11):
        console.handle(_step(i, i))
    console.handle({"kind": "epoch", "line": "epoch 1/2 | loss 4 | 900 img/s | epoch 3s ETA 3s"})
    console.handle({"kind": "eval", "done": 4, "total": 7, "text": "kNN and linear probe on pretrained features"})
    lines = out.getvalue().splitlines()
    assert lines == ["epoch 1: waiting for the first batch",
                     "epoch 1/2 step 4/10 | loss 4.6, ε 0.620, 900 img/s",
                     "epoch 1/2 step 8/10 | loss 4.2, ε 0.620, 900 img/s",
                     "epoch 1/2 | loss 4 | 900 img/s | epoch 3s ETA 3s",
                     "final evaluation: kNN and linear probe on pretrained features (4/7)"]
    assert "\x1b[" not in out.getvalue()


def test_plain_console_says_what_it_waits_for_after_a_silence():
    out = _Stream(tty=False)
    console = LiveConsole(None, total_epochs=1, log_every=50, stream=out, heartbeat_s=0.0)
    console.handle({"kind": "phase", "text": "epoch 1: waiting for the first batch"})
    console.poll()  # no board: nothing drained, but the silence is reported
    assert out.getvalue().splitlines()[-1].startswith("... epoch 1: waiting for the first batch (")
    console.handle(_step(3, 3))  # training starts; steps too slow for a line every 50 come
    console._phase_since -= 65  # ... for 65 s
    console.handle(_step(4, 4))
    console.poll()  # says how far the epoch is and how long it has run, not the time since the latest step
    assert out.getvalue().splitlines()[-1] == "... training epoch 1/1, step 4/10 | loss 4.6, ε 0.620, 900 img/s (1m05s)"
    console.handle({"kind": "phase", "text": "epoch 1: kNN monitor"})
    console.poll()
    assert out.getvalue().splitlines()[-1] == "... epoch 1: kNN monitor (0s)"


def test_terminal_console_draws_a_bar_with_step_rate_loss_epsilon_and_eta():
    out = _Stream(tty=True)
    console = LiveConsole(None, total_epochs=3, log_every=50, stream=out, tty=True)
    for i in range(1, 6):
        console.handle(_step(i, i))
    text = out.getvalue()
    assert "epoch 1/3:" in text and "5/10" in text and "loss 4.5" in text and "ε 0.620" in text
    assert "900 img/s" in text and "<" in text  # tqdm's elapsed<remaining (the ETA)
    console.handle({"kind": "epoch", "line": "epoch 1/3 | loss 4.5"})
    console.handle({"kind": "eval", "done": 2, "total": 7, "text": "embedding with the random-init network"})
    assert "epoch 1/3 | loss 4.5\n" in out.getvalue() and "final evaluation:" in out.getvalue()
    console._close_bar()


def test_bars_only_on_a_terminal_that_reports_a_width():
    """A pseudo-terminal of 0 columns (e.g. `script` without a terminal) would render empty bars: plain lines."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            assert not LiveConsole(None, total_epochs=1, log_every=1, stream=tty).tty  # 0 x 0
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            assert LiveConsole(None, total_epochs=1, log_every=1, stream=tty).tty
        assert not LiveConsole(None, total_epochs=1, log_every=1, stream=io.StringIO()).tty
    finally:
        os.close(master)
        os.close(slave)


def test_quiet_console_sends_rays_lines_to_the_log_file(tmp_path, capsys):
    from hexray.train.quiet import LOG_FILE, quiet_console

    ray_logger = logging.getLogger("ray")
    handler = logging.StreamHandler(sys.stderr)
    ray_logger.addHandler(handler)
    try:
        with quiet_console(str(tmp_path)):
            logging.getLogger("ray.some_module").warning("Token authentication is enabled")
            print("\x1b[33m(raylet)\x1b[0m WARNING: 12 PYTHON worker processes have been started")
            print("epoch 1/7 | loss 5.1")
            print("To visualize your results with TensorBoard, run: `tensorboard --logdir /tmp/ray/session_x`")
            logging.getLogger("ray").error("a real error")
    finally:
        ray_logger.removeHandler(handler)
    captured = capsys.readouterr()
    assert captured.out == "epoch 1/7 | loss 5.1\n"
    assert "Token authentication" not in captured.err and "a real error" in captured.err
    log = (tmp_path / LOG_FILE).read_text()
    assert "Token authentication is enabled" in log and "(raylet) WARNING: 12 PYTHON worker" in log
    assert "tensorboard --logdir /tmp/ray/session_x" in log  # Tune's pointer to its own copy: the log, not the user
    assert "\x1b[" not in log


def test_recorder_writes_tensorboard_events_read_back_by_tensorboard(tmp_path):
    run = str(tmp_path / "run")
    recorder = RunRecorder(run, total_epochs=2, loggers=LoggerSpec(names=("tensorboard",)), final_eval=True)
    reports = [{"epoch": 1, "step": 5, "epoch_end": 0, "loss": 5.0, "lr": 0.1, "hex/epsilon": 0.6},
               {"epoch": 1, "step": 10, "epoch_end": 1, "loss": 4.0, "lr": 0.1, "knn/top1": 0.5,
                "probe/online_top1": 0.4, "hex/epsilon": 0.65, "hex/h_size": 3.0, "hex/purity": 0.7,
                "images_per_s": 900.0, "time/epoch_s": 2.0, "worker/rank": 0, "data/order_digest": 1e12},
               {"epoch": 2, "step": 20, "epoch_end": 1, "loss": 3.0, "lr": 0.05, "knn/top1": 0.6,
                "images_per_s": 950.0, "time/epoch_s": 2.0, "hex/epsilon": float("inf")}]  # DCL's ε: no point
    for metrics in reports:
        recorder.after_report(None, [metrics], None)
    recorder.after_report(None, [{"epoch": 2, "final_eval": 1, "final/pretrained/knn/top1@20": 0.7}], None)
    scalars = read_scalars(str(tmp_path / "run" / "tensorboard"))
    assert scalars["loss"] == [(5, 5.0), (10, 4.0), (20, 3.0)]
    assert scalars["knn/top1"] == [(10, 0.5), (20, 0.6)] and scalars["hex/h_size"] == [(10, 3.0)]
    assert scalars["hex/purity"] == [(10, 0.7)] and scalars["lr"][-1] == (20, 0.05)
    assert scalars["final/pretrained/knn/top1@20"] == [(20, 0.7)]
    assert {"probe/online_top1", "hex/epsilon", "images_per_s"} <= set(scalars)
    assert scalars["hex/epsilon"] == [(5, 0.6), (10, 0.65)]
    assert not {"worker/rank", "data/order_digest", "epoch_end", "step"} & set(scalars)  # bookkeeping stays out


def test_recorder_keeps_monitor_measurements_and_drops_their_repeats(tmp_path):
    """The kNN monitor runs every 3 epochs and after the last; the loop reports its last value every epoch (a
    sweep's scheduler reads it), and metrics.csv, TensorBoard and progress.log keep the measured epochs only."""
    run = tmp_path / "run"
    recorder = RunRecorder(str(run), total_epochs=5, loggers=LoggerSpec(names=("tensorboard",)), monitor_every=3)
    reported = {1: None, 2: None, 3: 0.5, 4: 0.5, 5: 0.6}  # epoch 4 repeats epoch 3's measurement
    for epoch, knn in reported.items():
        row = {"epoch": epoch, "step": 10 * epoch, "epoch_end": 1, "loss": 6.0 - epoch}
        if knn is not None:
            row.update({"knn/top1": knn, "probe/online_top1": knn - 0.1})
        recorder.after_report(None, [{"epoch": epoch, "step": 10 * epoch - 5, "epoch_end": 0, "loss": 9.0}], None)
        recorder.after_report(None, [row], None)
    frame = pd.read_csv(run / "metrics.csv")
    ends = frame[frame["epoch_end"] == 1]
    assert ends["knn/top1"].notna().tolist() == [False, False, True, False, True]
    assert ends["knn/top1"].dropna().tolist() == [0.5, 0.6]
    assert ends["probe/online_top1"].notna().tolist() == [False, False, True, False, True]
    assert ends["loss"].tolist() == [5.0, 4.0, 3.0, 2.0, 1.0]  # everything else is every epoch's own value
    scalars = read_scalars(str(run / "tensorboard"))
    assert scalars["knn/top1"] == [(30, 0.5), (50, 0.6)] and len(scalars["loss"]) == 10
    progress = (run / "progress.log").read_text().splitlines()
    assert ["knn/top1" in line for line in progress] == [False, False, True, False, True]
    assert "knn/top1 0.5 " in progress[2] and "knn/top1 0.6 " in progress[4] and "loss 2 " in progress[3]
    every = RunRecorder(str(tmp_path / "every"), total_epochs=2)  # the default: measured every epoch
    for epoch in (1, 2):
        every.after_report(None, [{"epoch": epoch, "step": epoch, "epoch_end": 1, "knn/top1": 0.1 * epoch}], None)
    assert pd.read_csv(tmp_path / "every" / "metrics.csv")["knn/top1"].tolist() == [0.1, 0.2]


def test_mlflow_logger_records_params_and_metrics(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    recorder = RunRecorder(str(tmp_path / "run"), total_epochs=1,
                           loggers=LoggerSpec(names=("mlflow",), run_name="r1", params={"hex.beta": 1.0},
                                              mlflow_uri=uri))
    recorder.after_report(None, [{"epoch": 1, "step": 7, "epoch_end": 1, "loss": 2.5, "knn/top1": 0.5}], None)
    mlflow.set_tracking_uri(uri)
    run = mlflow.search_runs(experiment_names=["hexray"], output_format="list")[0]
    assert run.info.run_name == "r1" and run.data.params == {"hex.beta": "1.0"}
    history = mlflow.tracking.MlflowClient(uri).get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(7, 2.5)] and run.data.metrics["knn/top1"] == 0.5


def test_training_curves_png_has_every_panel(tmp_path):
    from hexray.eval.plots import plot_run_curves

    frame = pd.DataFrame({"epoch": [1, 1, 2, 3], "loss": [5.0, 4.8, 4.0, 3.5], "knn/top1": [None, 0.5, 0.6, 0.7],
                          "probe/online_top1": [None, 0.4, 0.5, 0.6], "hex/epsilon": [None, 0.6, 0.65, 0.7],
                          "hex/h_size": [None, 2.0, 3.0, 4.0], "hex/purity": [None, 0.5, 0.6, 0.7]})
    path = plot_run_curves(frame, str(tmp_path / "curves.png"), purity_chance=0.26)
    assert path is not None and os.path.getsize(tmp_path / "curves.png") > 20_000
    from PIL import Image

    assert Image.open(tmp_path / "curves.png").size[0] > 1000  # three panels across
    assert plot_run_curves(pd.DataFrame(), str(tmp_path / "none.png")) is None
