"""The command line's manners: --version, help for every option with its default, and OS errors (a file where a
folder should be, an unwritable path, a full disk) as one line that names the path, with a non-zero exit and no
traceback. No Ray."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid

import pytest
from test_export import _fake_run

from hexray import __version__
from hexray.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"hexray {__version__}"


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_option_has_help_and_shows_its_default(name):
    parser = _subcommands()[name]
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, f"hexray {name} {action.option_strings or action.dest}: no help text"
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                and not isinstance(action, argparse._HelpAction):
            assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)


def test_only_hexrays_own_errors_become_one_line(tmp_path, capsys, monkeypatch):
    """Bad input (config, data, a path) is one line and exit 2; a bug inside hexray keeps its traceback."""
    assert main(["train", "--check", "--set", "data.dataset=fashion-mnst"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hexray train: error: invalid config: data.dataset") and "Traceback" not in err
    assert main(["eval", str(tmp_path / "afile.txt")]) == 2  # a path that is not a run: DataError / missing file
    assert "error:" in capsys.readouterr().err

    import hexray.commands.train as train_command

    def buggy(cfg):  # noqa: ANN001, ARG001
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(train_command, "_check", buggy)
    with pytest.raises(ValueError, match="an internal invariant broke"):
        main(["train", "--check"])


def test_shard_into_a_file_names_it(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["shard", "synthetic-hierarchy", str(tmp_path / "afile"), "--option", "images_per_class=2",
                 "--workers", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"a file is in the way of a folder: {tmp_path / 'afile'}" in err


def test_export_to_unwritable_places_names_the_path_and_leaves_nothing(tmp_path, capsys):
    run, _ = _fake_run(tmp_path, ["backbone.name=convnet", "backbone.width=4"])
    (tmp_path / "afile").write_text("x")
    cases = {str(tmp_path / "afile" / "w.pt"): f"a file is in the way of a folder: {tmp_path / 'afile'}",
             "/proc/hexray-test/w.pt": "/proc/hexray-test",  # the kernel's pseudo-files take no new folder
             "/dev/full": "No space left on device: /dev/full"}  # a device is written through, never replaced
    for out, message in cases.items():
        assert main(["export", str(run), out]) != 0, out
        err = capsys.readouterr().err
        assert err.startswith("hexray export: error: ") and message in err and "Traceback" not in err, err
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")


def test_a_full_disk_is_one_line_and_no_partial_file(tmp_path):
    """A real full file system (a 16 KiB tmpfs) when this machine lets us mount one, else the file-size limit:
    either way the write fails in the kernel, not in a mock."""
    run, _ = _fake_run(tmp_path, ["backbone.name=convnet", "backbone.width=16"])
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", f"tmpfs-{uuid.uuid4().hex[:6]}",
                              str(mnt)], capture_output=True).returncode == 0
    limit = "" if mounted else ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                                "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384)); ")
    try:
        code = (f"{limit}import sys; from hexray.cli import main; "
                f"sys.exit(main(['export', {str(run)!r}, {str(mnt / 'w.pt')!r}]))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        reason = "No space left on device" if mounted else "File too large"
        assert proc.stderr == f"hexray export: error: {reason}: {mnt / 'w.pt'}\n"
        assert os.listdir(mnt) == []  # the partial temporary file is gone
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=True)
