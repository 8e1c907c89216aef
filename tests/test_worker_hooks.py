"""Worker hooks (hexray.train.worker_hooks) without Ray workers: configuration, loading, shipping, dispatch.

The hooks running inside real Ray Train workers are tested by test_train_recovery.py (crash, NaN, stall) and
test_storage_s3.py (named in run.worker_hooks on the command line)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest

from hexray.cli import main
from hexray.config import ConfigError, load_config
from hexray.train.worker_hooks import HookRunner, load_worker_hooks, shippable


def test_a_hook_path_must_be_module_colon_name():
    with pytest.raises(ConfigError, match=r"run.worker_hooks: 'mypkg.Timer' is not a 'module:name'"):
        load_config(None, ["run.worker_hooks=[mypkg.Timer]"])
    assert load_config(None, ["run.worker_hooks=[mypkg.hooks:Timer]"]).run.worker_hooks == ("mypkg.hooks:Timer",)


def test_a_hook_that_does_not_load_is_named(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"cannot load 'no_such_module_xyz:Hook'"):
        load_worker_hooks(["no_such_module_xyz:Hook"])
    with pytest.raises(ConfigError, match=r"cannot load 'fault_hooks:NoSuchHook'"):
        load_worker_hooks(["fault_hooks:NoSuchHook"])
    assert main(["train", "--check", "--set", "run.worker_hooks=[fault_hooks:nope]"]) == 2
    assert "cannot load 'fault_hooks:nope'" in capsys.readouterr().err


def test_check_loads_the_hooks_before_anything_starts(capsys):
    assert main(["train", "--check", "--set", "run.worker_hooks=[fault_hooks:crash_after_epoch_1]"]) == 0
    assert "# worker hooks load: fault_hooks:crash_after_epoch_1" in capsys.readouterr().out


def test_an_object_without_hook_methods_is_refused():
    with pytest.raises(ConfigError, match="neither on_batch"):
        shippable([object()])


def test_a_hook_travels_with_its_module_to_a_process_that_cannot_import_it(tmp_path, monkeypatch):
    (tmp_path / "my_private_hooks.py").write_text(textwrap.dedent("""
        class Count:
            def __init__(self):
                self.seen = []
            def on_batch(self, info):
                self.seen.append(info.step)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from ray import cloudpickle

    hook = shippable(load_worker_hooks(["my_private_hooks:Count"]))[0]
    blob = tmp_path.parent / "hook.pkl"
    blob.write_bytes(cloudpickle.dumps(hook))
    code = ("import pickle, sys; h = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "h.on_batch(type('I', (), {'step': 7})()); print(h.seen)")
    out = subprocess.run([sys.executable, "-c", code, str(blob)], cwd=tmp_path.parent, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[7]"
    unpicklable = subprocess.run([sys.executable, "-c", "import my_private_hooks"], cwd=tmp_path.parent,
                                 capture_output=True, timeout=60, check=False)
    assert unpicklable.returncode != 0  # by reference it could not have loaded there
    assert pickle.loads(cloudpickle.dumps(hook)).seen == []


def test_runner_calls_hooks_in_order_with_where_the_loop_is():
    calls = []

    class First:
        def on_batch(self, info):
            calls.append(("first", info.epoch, info.index, info.step, info.rank, info.run_dir))

    class Second:
        def on_batch(self, info):
            calls.append(("second", info.step))

        def on_loss(self, info, out):
            out["seen"] = info.step

    runner = HookRunner([First(), Second()], rank=1, world=2, start_epoch=3, run_dir="s3://b/run")
    info = runner.info(epoch=3, index=4, step=99)
    runner.on_batch(info)
    out = {}
    runner.on_loss(info, out)
    assert calls == [("first", 3, 4, 99, 1, "s3://b/run"), ("second", 99)] and out == {"seen": 99}
    assert HookRunner([], rank=0, world=1, start_epoch=0, run_dir="").info(0, 0, 1) is None
