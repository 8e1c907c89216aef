"""The shipped ImageNet presets reproduce the HEX reference YAML key by key, and `--check` validates any config
without data or Ray."""

from __future__ import annotations

import re

import pytest

from hexray.cli import main
from hexray.config import config_to_dict, load_config, resolve_config_path

REFERENCE = {  # design/HEX.md, "Reference setup"
    "backbone.name": "resnet50", "method.name": "simclr", "method.proj_hidden_dim": 2048,
    "method.proj_output_dim": 128, "run.epochs": 100, "data.batch_size": 256, "optim.accumulate_steps": 16,
    "model.sync_bn": "on", "fast.amp": "fp16", "optim.name": "lars", "optim.lr": 0.3, "optim.lars_eta": 0.02,
    "optim.clip_lr": True, "optim.exclude_bias_and_norm": True, "optim.weight_decay": 1e-6,
    "optim.warmup_epochs": 10.0, "hex.temperature": 0.1, "method.temperature": 0.1, "scaling.num_workers": 1,
    "hex.variant": "released", "hex.threshold": "adaptive", "hex.quantile": 0.99, "hex.quantile_over": "full_row",
    "hex.negatives": "local", "hex.warmup_epochs": 10, "hex.warmup_mode": "inclusive", "probe.online_lr": 0.1,
    "data.recipe": "simclr", "data.image_size": 224,
}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("options", "resources_per_worker"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize(("name", "hex_on"), [("imagenet-simclr-hex", True), ("imagenet-simclr", False)])
def test_preset_matches_the_reference_key_by_key(name, hex_on):
    flat = _flat(config_to_dict(load_config(resolve_config_path(name))))
    for key, value in REFERENCE.items():
        assert flat[key] == value, key
    assert flat["hex.enabled"] is hex_on


def test_the_twins_differ_only_in_hex_enabled():
    a = _flat(config_to_dict(load_config(resolve_config_path("imagenet-simclr-hex"))))
    b = _flat(config_to_dict(load_config(resolve_config_path("imagenet-simclr"))))
    assert {k for k in a if a[k] != b[k]} == {"hex.enabled"}


@pytest.mark.parametrize("name", ["imagenet-simclr-hex", "imagenet-simclr"])
def test_every_key_of_a_preset_has_a_comment(name):
    for line in resolve_config_path(name).read_text().splitlines():
        if re.match(r"^\s+\w+:\s*\S", line):
            assert "#" in line, f"{name}: no comment on {line.strip()!r}"


def test_check_validates_config_then_the_data_it_would_read(capsys, tmp_path):
    assert main(["train", "imagenet-simclr-hex", "--check", "--set", "hex.variant=paper"]) == 2
    assert "hex.variant" in capsys.readouterr().err
    # no ImageNet at the preset's placeholder path: the check names the key and the path
    assert main(["train", "imagenet-simclr-hex", "--check", "--set", f"data.path={tmp_path / 'nowhere'}"]) == 2
    assert "data.path" in capsys.readouterr().err
    (tmp_path / "imnet" / "train" / "n01").mkdir(parents=True)
    assert main(["train", "imagenet-simclr-hex", "--check", "--set", "run.epochs=90",
                 "--set", f"data.path={tmp_path / 'imnet'}"]) == 2  # a train/ but no val/: nothing to score on
    assert "data.eval_split: split 'val' is not in dataset 'imagenet' (it has train)" in capsys.readouterr().err
    (tmp_path / "imnet" / "val").mkdir()
    assert main(["train", "imagenet-simclr-hex", "--check", "--set", "run.epochs=90",
                 "--set", f"data.path={tmp_path / 'imnet'}", "--set", "data.eval_split=test"]) == 2
    assert "data.eval_split: split 'test' is not in dataset" in capsys.readouterr().err
    assert main(["train", "imagenet-simclr-hex", "--check", "--set", "run.epochs=90",
                 "--set", f"data.path={tmp_path / 'imnet'}"]) == 0
    out = capsys.readouterr().out
    assert "accumulate_steps: 16" in out and "epochs: 90" in out and "config OK" in out
    assert "has splits train, val; trains on 'train', scores on 'val'" in out
