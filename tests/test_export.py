"""`hexray export`: a ResNet backbone's weights load strictly into torchvision's model (minus fc), a convnet's
into hexray's convnet; a directory without checkpoints is a clear error. No Ray: checkpoints are built here."""

from __future__ import annotations

import torch
import torchvision

from hexray.checkpoint import checkpoint_dir_name, save_state
from hexray.cli import main
from hexray.config import config_to_dict, load_config
from hexray.methods.registry import build_method


def _fake_run(tmp_path, overrides: list[str]):
    cfg = load_config(None, overrides)
    method = build_method(cfg.method, cfg.backbone, cfg.hex, cfg.sem, max_epochs=cfg.run.epochs)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.01)  # distinguishable from a fresh init
    save_state(tmp_path / "run" / checkpoint_dir_name(3),
               {"method": method.state_dict(), "epoch": 3, "step": 30, "config": config_to_dict(cfg)})
    return tmp_path / "run", method


def test_export_resnet18_loads_into_torchvision(tmp_path):
    run, method = _fake_run(tmp_path, ["backbone.name=resnet18", "backbone.in_channels=3",
                                       "backbone.small_stem=false"])
    out = tmp_path / "r18.pt"
    assert main(["export", str(run), str(out)]) == 0
    state = torch.load(out)
    model = torchvision.models.resnet18()
    del model.fc
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.conv1.weight, method.backbone.state_dict()["conv1.weight"])


def test_export_convnet_loads_into_hexray_convnet(tmp_path):
    from hexray.models import build_backbone

    run, _ = _fake_run(tmp_path, ["backbone.width=8"])
    out = tmp_path / "convnet.pt"
    assert main(["export", str(run / checkpoint_dir_name(3)), str(out)]) == 0
    net, _ = build_backbone(load_config(None, ["backbone.width=8"]).backbone)
    net.load_state_dict(torch.load(out), strict=True)


def test_export_without_checkpoint_names_the_directory(tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "x.pt")]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_train_rejects_bad_config_and_bad_resume_before_starting(tmp_path, capsys):
    assert main(["train", "--set", "nonsense.key=1"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
