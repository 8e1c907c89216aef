"""Object storage end to end, against a real S3 API on 127.0.0.1 (moto's server; tests/s3_server.py).

Fast tests use hexray's functions in this process; the slow one is the issue's check as a user would run it:
every command in a subprocess with an empty working directory and an empty HOME, endpoint and credentials only in
the standard AWS variables; shard → train (MoCo, 2 workers, a worker killed after epoch 1 and restored in full from
the bucket) → resume → export → eval → report, all on s3://, then the bucket must hold everything and the local disk
nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from s3_server import s3_server
from tb_events import read_scalars

from hexray import storage


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


def _local_files(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots for p in root.rglob("*") if p.is_file())


def test_storage_round_trip_on_s3_and_locally(s3_env, tmp_path):
    for base in (f"s3://{s3_env.bucket}/unit", str(tmp_path / "unit")):
        path = storage.join(base, "a", "b.txt")
        assert not storage.exists(path)
        storage.write_text(path, "one")
        storage.write_text(path, "two")  # replaces, never appends
        assert storage.read_text(path) == "two" and storage.is_file(path)
        assert storage.is_dir(storage.join(base, "a"))
        assert storage.list_dir(storage.join(base, "a")) == [("b.txt", False)]
        p = storage.StoragePath(base) / "a" / "c.bin"
        p.write_bytes(b"\x00\x01")
        assert p.read_bytes() == b"\x00\x01" and p.name == "c.bin" and p.parent == storage.StoragePath(base) / "a"
        assert p.relative_to(storage.StoragePath(base)) == "a/c.bin"
        with pytest.raises(FileNotFoundError, match="does not exist"):
            storage.read_bytes(storage.join(base, "missing"))
    assert s3_env.keys("unit/") == ["unit/a/b.txt", "unit/a/c.bin"]
    assert storage.parent("s3://b/x/y") == "s3://b/x" and storage.basename("s3://b/x/y/") == "y"
    assert storage.normalize("~/x") == os.path.expanduser("~/x")


def test_shards_written_to_s3_are_read_and_verified_there(s3_env, tmp_path, monkeypatch):
    from hexray.data.manifest import load_manifest, verify_shards
    from hexray.data.registry import dataset_root, prepare_dataset
    from hexray.data.sources import synthetic_source
    from hexray.data.synthetic import SyntheticSpec
    from hexray.data.writer import write_shards
    from hexray.eval.datasource import read_split

    monkeypatch.chdir(tmp_path)
    root = f"s3://{s3_env.bucket}/shards"
    source = synthetic_source(SyntheticSpec(images_per_class=4, image_size=8))
    written = write_shards(source, root, min_shards=2, workers=1, progress=False)
    assert written.root == root
    keys = s3_env.keys("shards/")
    assert "shards/manifest.json" in keys and any(k.endswith(".parquet") for k in keys)
    manifest = load_manifest(root)
    assert manifest.root == root and manifest.split("train").count == 36
    verify_shards(manifest, "train", "checksum")
    x, y, corrupt = read_split(root, "train", image_size=8, max_samples=10, manifest=manifest)
    assert x.shape == (10, 3, 8, 8) and corrupt == 0

    again = write_shards(source, root, min_shards=2, workers=1, progress=False)  # re-run: every shard skipped
    assert again.splits["train"].shards == written.splits["train"].shards

    # A named dataset cached on object storage: written there once, every node reads it from there.
    cached = prepare_dataset("synthetic-hierarchy", cache_dir=f"s3://{s3_env.bucket}/cache", progress=False,
                             images_per_class=2, image_size=8)
    assert cached.startswith(f"s3://{s3_env.bucket}/cache/shards/") and load_manifest(cached).num_classes == 12

    from hexray.config import load_config

    cfg = load_config(None, [f"data.root={root}"])
    assert dataset_root(cfg.data) == root and cfg.data.label == "shards"
    assert _local_files(tmp_path) == []  # no `s3:` folder: nothing turned the URI into a local path


def test_run_log_on_s3_is_uploaded_and_continued_by_a_resumed_run(s3_env, capsys):
    import logging

    from hexray.train.quiet import LOG_FILE, quiet_console

    run = f"s3://{s3_env.bucket}/runs/logged"
    for session in ("first", "resumed"):
        with quiet_console(run):
            logging.getLogger("ray.test").warning("%s session's Ray warning", session)
            print(f"(raylet) {session} session's raylet line")
    log = storage.read_text(storage.join(run, LOG_FILE))
    assert log.index("first session's Ray warning") < log.index("resumed session's Ray warning")
    assert "(raylet) first session" in log and "(raylet) resumed session" in log
    assert "raylet" not in capsys.readouterr().out


def test_run_files_on_s3_metrics_config_and_checkpoints(s3_env, tmp_path, monkeypatch):
    import torch

    from hexray.checkpoint import find_checkpoints, load_state, resolve_checkpoint
    from hexray.config import load_config, save_config
    from hexray.train.metrics import CsvMetricsWriter, LoggerSpec, RunRecorder

    monkeypatch.chdir(tmp_path)
    run = f"s3://{s3_env.bucket}/runs/r0"
    cfg = load_config(None, ["run.epochs=3"])
    save_config(cfg, storage.join(run, "config.yaml"))
    assert load_config(storage.join(run, "config.yaml")) == cfg

    writer = CsvMetricsWriter(storage.join(run, "metrics.csv"), flush_every_s=3600)
    writer.write({"epoch": 1, "step": 5, "loss": 2.0})
    assert not storage.exists(storage.join(run, "metrics.csv"))  # buffered: object stores have no append
    writer.write({"epoch": 1, "step": 10, "loss": 1.5, "knn/top1": 0.5})
    writer.flush()
    rows = list(csv.DictReader(io.StringIO(storage.read_text(storage.join(run, "metrics.csv")))))
    assert [r["step"] for r in rows] == ["5", "10"] and rows[1]["knn/top1"] == "0.5" and rows[0]["knn/top1"] == ""
    resumed = CsvMetricsWriter(storage.join(run, "metrics.csv"), flush_every_s=0)  # a resumed run keeps its rows
    resumed.write({"epoch": 2, "step": 15, "loss": 1.0})
    assert len(list(csv.DictReader(io.StringIO(storage.read_text(storage.join(run, "metrics.csv")))))) == 3

    recorder = RunRecorder(run, total_epochs=3, loggers=LoggerSpec(names=("tensorboard",)))
    recorder.after_report(None, [{"epoch": 2, "step": 20, "loss": 0.9, "epoch_end": 1, "time/epoch_s": 4.0}], None)
    assert storage.read_text(storage.join(run, "progress.log")).startswith("epoch 2/3")
    events = storage.list_dir(storage.join(run, "tensorboard"))  # staged locally, uploaded at the epoch's end
    assert len(events) == 1 and events[0][0].startswith("events.out.tfevents.")
    with tempfile.TemporaryDirectory() as local:  # outside tmp_path, which must stay empty
        with open(os.path.join(local, events[0][0]), "wb") as f:
            f.write(storage.read_bytes(storage.join(run, "tensorboard", events[0][0])))
        assert read_scalars(local)["loss"] == [(20, 0.9)]

    for epoch in (1, 2):
        storage.torch_save({"method": {}, "epoch": epoch, "step": 10 * epoch, "config": {}},
                           storage.join(run, f"checkpoint_epoch{epoch:04d}", "state.pt"))
    found = find_checkpoints(run)
    assert found == [storage.join(run, "checkpoint_epoch0001"), storage.join(run, "checkpoint_epoch0002")]
    assert resolve_checkpoint(run) == found[-1] and load_state(found[-1])["step"] == 20
    assert isinstance(load_state(found[0])["method"], dict) and torch.is_tensor(torch.zeros(1))
    assert _local_files(tmp_path) == []


def _cli(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hexray.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"hexray {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _empty_machine(s3, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:  # noqa: ANN001
    """An empty working directory, an empty HOME and an environment whose only storage settings are the standard
    AWS variables of the S3 server: what a fresh cluster node has."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HEXRAY_", "RAY_ADDRESS"))}
    env.update(s3.env, HOME=str(home), RAY_TRAIN_V2_ENABLED="1", RAY_DATA_DISABLE_PROGRESS_BARS="1",
               RAY_USAGE_STATS_ENABLED="0")
    return work, home, env


def _assert_restored_in_full(row: dict[str, str], saved: dict) -> None:
    """The restarted worker group resumed epoch 1's checkpoint: the same step, optimizer moments, scheduler position,
    momentum encoder and queue (the loop logs digests of what it loaded)."""
    from hexray.train.components import state_digest

    assert int(row["restored_epoch"]) == 1 and int(row["restored_step"]) == saved["step"] > 0
    assert int(row["restored/scheduler_step"]) == saved["scheduler"]["last_epoch"] == saved["step"]
    optimizer_digest = state_digest(saved["optimizer"]["state"])
    assert optimizer_digest > 0  # momentum buffers exist: a fresh optimizer would have none
    assert float(row["restored/optimizer_digest"]) == pytest.approx(optimizer_digest, rel=1e-9)
    assert float(row["restored/method_digest"]) == pytest.approx(state_digest(saved["method"]), rel=1e-9)
    assert any(k.startswith("target_backbone") for k in saved["method"])  # MoCo's momentum encoder


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_shard_train_crash_resume_export_eval_report_all_on_s3(s3_env, tmp_path):
    from hexray.checkpoint import load_state  # reads the bucket: s3_env gives this process the server's variables

    s3 = s3_env
    work, home, env = _empty_machine(s3, tmp_path)
    bucket = f"s3://{s3.bucket}"
    _cli(["shard", "synthetic-hierarchy", f"{bucket}/shards", "--option", "images_per_class=40",
          "--option", "image_size=16", "--workers", "1", "--min-shards", "4", "--no-progress"],
         env=env, cwd=work, timeout=120)

    train = ["train", "--set", f"data.root={bucket}/shards", "--set", f"run.storage_path={bucket}/runs",
             "--set", "run.name=r1", "--set", "run.epochs=2", "--set", "data.limit_train=384",
             "--set", "data.limit_eval=128", "--set", "data.image_size=16", "--set", "data.batch_size=32",
             "--set", "backbone.in_channels=3", "--set", "backbone.width=8", "--set", "method.proj_hidden_dim=64",
             "--set", "method.proj_output_dim=32", "--set", "scaling.num_workers=2",
             "--set", "scaling.cpus_per_worker=0.25", "--set", "checkpoint.max_failures=1",
             "--set", "checkpoint.metric=loss", "--set", "checkpoint.mode=min", "--set", "checkpoint.keep=5",
             "--set", "probe.knn_train_limit=256", "--set", "probe.knn_eval_limit=128",
             # MoCo with SGD: the restored state includes momentum buffers, a momentum encoder and a queue
             "--set", "method.name=moco", "--set", "method.pred_hidden_dim=32", "--set", "optim.name=sgd"]
    tests_dir = str(Path(__file__).resolve().parent)  # the driver imports fault_hooks and ships it to the workers
    crash = {**env, "PYTHONPATH": os.pathsep.join(p for p in (tests_dir, env.get("PYTHONPATH")) if p)}
    _cli([*train, "--set", "run.worker_hooks=[fault_hooks:crash_after_epoch_1]"], env=crash, cwd=work, timeout=420)
    run = "runs/r1/"
    keys = s3.keys(run)
    for name in ("config.yaml", "metrics.csv", "summary.json", "progress.log", "placement.json",
                 "checkpoint_epoch0001/state.pt", "checkpoint_epoch0002/state.pt"):
        assert run + name in keys, (name, keys)
    assert "runs/r1.crashed" in s3.keys("runs/"), "the test hook never killed the worker"
    rows = list(csv.DictReader(io.StringIO(s3.get(run + "metrics.csv").decode())))
    restored = [r for r in rows if r.get("restored_epoch")]
    assert [int(r["restored_epoch"]) for r in restored] == [1]  # restored from s3
    assert [int(r["epoch"]) for r in rows if r["epoch_end"] == "1"][-2:] == [1, 2]
    _assert_restored_in_full(restored[0], load_state(f"{bucket}/{run}checkpoint_epoch0001"))
    summary = json.loads(s3.get(run + "summary.json"))
    assert summary["run_dir"] == f"{bucket}/runs/r1" and summary["epochs"] == 2
    assert summary["evaluation"]["pretrained"]["knn/top1@20"] > 0

    _cli(["train", "--resume", f"{bucket}/runs/r1", "--set", "run.epochs=3", "--set", "run.worker_hooks=[]",
          "--no-eval"], env=env, cwd=work, timeout=300)
    steps = load_state(f"{bucket}/{run}checkpoint_epoch0001")["step"]
    assert load_state(f"{bucket}/{run}checkpoint_epoch0003")["step"] == 3 * steps  # the resumed run continued the count

    _cli(["export", f"{bucket}/runs/r1", "out.pt"], env=env, cwd=work, timeout=120)
    _cli(["export", f"{bucket}/runs/r1", f"{bucket}/weights/backbone.pt"], env=env, cwd=work, timeout=120)
    _cli(["eval", f"{bucket}/runs/r1", "--max-train", "256", "--max-test", "128", "--probe-epochs", "5",
          "--fractions", "1", "--no-trajectory", "--out", f"{bucket}/evals/r1"], env=env, cwd=work, timeout=300)
    keys = s3.keys()  # --out: everything in the bucket's evals/r1, nothing added to the run dir
    assert "evals/r1/eval.json" in keys and "evals/r1/plots/accuracy.png" in keys and run + "eval.json" not in keys
    _cli(["eval", f"{bucket}/runs/r1", "--max-train", "256", "--max-test", "128", "--probe-epochs", "5",
          "--fractions", "1"], env=env, cwd=work, timeout=300)
    _cli(["report", f"{bucket}/runs", "--out", f"{bucket}/report"], env=env, cwd=work, timeout=120)

    keys = s3.keys()
    assert "weights/backbone.pt" in keys and run + "eval.json" in keys and "report/report.md" in keys
    assert any(k.startswith(run + "plots/") and k.endswith(".png") for k in keys)
    assert "shards/manifest.json" in keys
    report = s3.get("report/report.md").decode()
    assert f"{bucket}/runs/r1" in report

    import torch

    from hexray.config import load_config
    from hexray.models import build_backbone

    assert set(torch.load(work / "out.pt")) == set(torch.load(io.BytesIO(s3.get("weights/backbone.pt"))))
    net, _ = build_backbone(load_config(None, ["backbone.in_channels=3", "backbone.width=8"]).backbone)
    net.load_state_dict(torch.load(work / "out.pt"), strict=True)

    local = [f for f in _local_files(work, home) if f != str(work / "out.pt")]
    written = ("manifest.json", "config.yaml", "metrics.csv", "summary.json", "state.pt", "eval.json", "report.md",
               "progress.log", ".parquet")
    assert not [f for f in local if f.endswith(written)], local
    assert not any("s3:" in f for f in local), local


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sweep_on_s3_then_resume_and_report_from_the_bucket(s3_env, tmp_path):
    import yaml

    from hexray.tune.results import saved_statuses

    s3 = s3_env
    work, home, env = _empty_machine(s3, tmp_path)
    bucket = f"s3://{s3.bucket}"
    sweep = {
        "name": "tiny", "base_config": None,
        "overrides": {"data.dataset": "synthetic-hierarchy", "data.cache_dir": f"{bucket}/cache",
                      "data.options": {"num_superclasses": 2, "classes_per_superclass": 2, "images_per_class": 24,
                                       "image_size": 16},
                      "data.image_size": 16, "data.batch_size": 16, "backbone.in_channels": 3,
                      "backbone.width": 8, "run.epochs": 1, "run.progress": False, "probe.knn_train_limit": 64,
                      "probe.knn_eval_limit": 32, "checkpoint.metric": "loss", "checkpoint.mode": "min"},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.25},
        "metric": "loss", "mode": "min", "space": {"hex.variant": {"grid": ["released"]}},  # 1 trial: storage counts
    }
    (work / "tiny.yaml").write_text(yaml.safe_dump(sweep))
    _cli(["sweep", "tiny.yaml", "--storage-path", f"{bucket}/sweeps", "--verbose", "0"], env=env, cwd=work,
         timeout=600)
    keys = s3.keys("sweeps/tiny/")
    for name in ("sweep.yaml", "sweep_base.yaml", "sweep_results.csv", "sweep_results.parquet", "best_config.yaml",
                 "metric_vs_params.png"):
        assert f"sweeps/tiny/{name}" in keys, (name, keys)
    assert sum(k.endswith("/train/metrics.csv") for k in keys) == 1  # the trial's run directory, in the bucket
    table = s3.get("sweeps/tiny/sweep_results.csv").decode()
    assert table.count("TERMINATED") == 1
    # the trial statuses the table trusts over Tune's in-memory ones: its saved state, read from the bucket
    assert list(saved_statuses(storage.StoragePath(f"{bucket}/sweeps/tiny")).values()) == ["TERMINATED"]

    s3.client().delete_object(Bucket=s3.bucket, Key="sweeps/tiny/sweep_results.csv")
    _cli(["sweep", "--resume", f"{bucket}/sweeps/tiny"], env=env, cwd=work, timeout=300)
    assert "sweeps/tiny/sweep_results.csv" in s3.keys("sweeps/tiny/")
    _cli(["sweep", "--report", f"{bucket}/sweeps/tiny"], env=env, cwd=work, timeout=300)
    assert not [f for f in _local_files(work, home) if f.endswith(("sweep_results.csv", "metrics.csv"))]
