"""Small fakes of the train layer's run directory for eval/report tests (contract: docs/interfaces.md, Train)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from torch import nn

from hexray.eval.offline import EvalData
from hexray.eval.restore import RestoredRun
from hexray.losses.settings import HexConfig

CLASS_TO_SUPER = [0, 0, 1, 1]


class TinyMethod(nn.Module):
    """Stands in for an SSLMethod: a `backbone` mapping (B, 1, 8, 8) images to 16-d features, optional SEM head,
    and a projector read through `project_online` (as SSLMethod's)."""

    def __init__(self, sem_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16))
        self.sem = sem_head
        self.projector = nn.Linear(16, 8)

    def project_online(self, x, branch: str = "online"):
        h = self.backbone(x)
        e = self.sem(h, branch) if self.sem is not None else h
        return e, self.projector(e)

    def forward(self, view1, view2, *, epoch, superclass=None):
        h = self.backbone(view1)
        return self.sem(h, "online") if self.sem is not None else h


def fake_data(n_train: int = 240, n_test: int = 120, seed: int = 0) -> EvalData:
    """4 classes in 2 superclasses: class means share a superclass offset, so the hierarchy is learnable."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(2, 64, generator=gen) * 2
    offsets = torch.randn(4, 64, generator=gen)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 4
        x = centres[torch.tensor(CLASS_TO_SUPER)[y]] + offsets[y] + 0.5 * torch.randn(n, 64, generator=gen)
        return x.view(n, 1, 8, 8), y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return EvalData(train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte, num_classes=4,
                    class_to_superclass=list(CLASS_TO_SUPER), class_names=["a", "b", "c", "d"],
                    superclass_names=["left", "right"])


def config_dict(method: str = "simclr", hex_enabled: bool = True, seed: int = 0, dataset: str = "synthetic-hierarchy",
                sem: bool = False, epochs: int = 3) -> dict:
    return {
        "method": {"name": method},
        "hex": {"enabled": hex_enabled, "threshold": "adaptive", "quantile": 0.9},
        "sem": {"enabled": sem, "num_simplices": 4, "simplex_dim": 4, "tau_online": 0.3, "tau_target": 5.0},
        "data": {"dataset": dataset},
        "run": {"seed": seed, "epochs": epochs},
    }


def fake_config(d: dict) -> SimpleNamespace:
    """The attribute view of `config_dict` that restore/eval read (hex as the real HexConfig)."""
    from hexray.models.settings import SEMConfig

    return SimpleNamespace(hex=HexConfig(**d["hex"]), sem=SEMConfig(**d["sem"]), run=SimpleNamespace(**d["run"]),
                           method=SimpleNamespace(**d["method"]), data=SimpleNamespace(**d["data"]))


def write_fake_run(run: Path, *, epochs: int = 3, metrics: dict[str, list[float]] | None = None,
                   checkpoints: bool = True, summary: dict | None = None, **config_kw) -> Path:
    """A run dir: config.yaml, metrics.csv (a mid-epoch and an end-of-epoch row per epoch), summary.json and
    checkpoint_epochNNNN/state.pt of a TinyMethod whose weights drift across epochs."""
    run.mkdir(parents=True, exist_ok=True)
    cfg = config_dict(epochs=epochs, **config_kw)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics = metrics or {}
    with open(run / "metrics.csv", "w", newline="") as f:
        names = ["epoch", "step", "loss", "hex/epsilon", "hex/h_size", "hex/purity", "knn/top1", "probe/online_top1",
                 *[k for k in metrics if k not in ("knn/top1",)]]
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for e in range(1, epochs + 1):
            writer.writerow({"epoch": e, "step": 10 * e - 5, "loss": 5.0 - e})  # mid-epoch row: loss only
            row = {"epoch": e, "step": 10 * e, "loss": 4.5 - e, "hex/epsilon": 0.2 + 0.1 * e, "hex/h_size": 3.0 * e,
                   "hex/purity": 0.5 + 0.1 * e, "knn/top1": 0.3 + 0.1 * e, "probe/online_top1": 0.25 + 0.1 * e}
            row.update({k: v[e - 1] for k, v in metrics.items()})
            writer.writerow(row)
    (run / "summary.json").write_text(json.dumps(summary or {"final": {"knn/top1": 0.3 + 0.1 * epochs}}))
    if checkpoints:
        torch.manual_seed(0)
        method = _method(cfg)
        for e in range(1, epochs + 1):
            with torch.no_grad():
                for p in method.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            ckpt = run / f"checkpoint_epoch{e:04d}"
            ckpt.mkdir()
            torch.save({"method": method.state_dict(), "epoch": e, "step": 10 * e, "config": cfg}, ckpt / "state.pt")
    return run


def _method(cfg: dict) -> TinyMethod:
    if cfg["sem"]["enabled"]:
        from hexray.models.sem import SEMHead

        return TinyMethod(SEMHead(16, fake_config(cfg).sem))
    return TinyMethod()


def fake_restore(run, checkpoint: str | None) -> RestoredRun:  # noqa: ANN001 - a StoragePath of a local run
    """What `restore_run` returns, built from the fake's state.pt without the methods registry."""
    ckpt = Path(checkpoint) if checkpoint else sorted(Path(str(run)).glob("checkpoint_*"))[-1]
    state = torch.load(ckpt / "state.pt", weights_only=False)
    method = _method(state["config"])
    method.load_state_dict(state["method"])
    return RestoredRun(method=method.eval(), config=fake_config(state["config"]), epoch=state["epoch"],
                       checkpoint=ckpt)


def fake_load_data(cfg, options, seed) -> EvalData:
    return fake_data(seed=seed)
