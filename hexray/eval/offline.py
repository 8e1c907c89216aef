"""Offline evaluation of a frozen network: kNN (k = 20, 200), linear probes at 100 / 10 / 1 % labels (fine and
superclass), and for SEM runs the probe on softmax(emb/τ_down) with τ_down swept (Lavoie et al. 2023, §4).

Pure PyTorch on in-memory tensors: `EvalData` carries the (capped) image sets, `EvalModel` the frozen parts.
Reading run dirs and shards happens elsewhere (`hexray.eval.restore`, `hexray.eval.datasource`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from hexray.errors import InputError
from hexray.eval.baselines import EvalSettings, evaluate_features
from hexray.eval.linear_probe import SCHEDULES, train_linear_probe

DEFAULT_TAU_DOWN = (0.05, 0.1, 0.3, 1.0, 3.0)


@dataclass
class EvalData:
    """Labelled train (probe/kNN memory) and test images, already resized and normalised (N, C, H, W)."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    class_to_superclass: list[int] | None = None
    class_names: list[str] = field(default_factory=list)
    superclass_names: list[str] = field(default_factory=list)

    def superclasses(self, labels: Tensor) -> Tensor:
        """Superclass of each label (−1 everywhere when the dataset has no hierarchy)."""
        if self.class_to_superclass is None:
            return torch.full_like(labels, -1)
        return torch.as_tensor(self.class_to_superclass, dtype=torch.long)[labels.long()]


@dataclass
class EvalModel:
    """Frozen parts of a trained method: `backbone` (images → features) and, for SEM runs, `sem_logits`
    (images → pre-softmax simplex logits (B, L, V))."""

    backbone: nn.Module
    sem_logits: Callable[[Tensor], Tensor] | None = None


@dataclass
class OfflineSettings:
    """What `hexray eval` measures. The probe follows design/HEX.md (SGD, lr 0.3); 100 epochs on a few thousand
    cached feature vectors take seconds on CPU."""

    fractions: Sequence[float] = (1.0, 0.1, 0.01)
    ks: Sequence[int] = (20, 200)
    temperature: float = 0.07
    probe_epochs: int = 100
    probe_lr: float = 0.3
    probe_schedule: str = "cosine"
    probe_batch_size: int = 1024
    tau_down: Sequence[float] = DEFAULT_TAU_DOWN
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0.0 < f <= 1.0 for f in self.fractions):
            raise InputError(f"fractions must be label fractions in (0, 1], got {list(self.fractions)}")
        if self.probe_schedule not in SCHEDULES:
            raise InputError(f"probe schedule must be one of {SCHEDULES}, got {self.probe_schedule!r}")
        if any(t <= 0 for t in self.tau_down):
            raise InputError(f"tau_down values must be > 0, got {list(self.tau_down)}")
        if self.probe_epochs < 1 or self.batch_size < 1:
            raise InputError("probe_epochs and batch_size must be >= 1")

    def eval_settings(self) -> EvalSettings:
        return EvalSettings(
            ks=tuple(self.ks), temperature=self.temperature, probe=True, probe_epochs=self.probe_epochs,
            probe_lr=self.probe_lr, probe_schedule=self.probe_schedule, probe_batch_size=self.probe_batch_size,
            label_fractions=tuple(self.fractions), superclass_probe=True, seed=self.seed,
        )


def embed(fn: Callable[[Tensor], Tensor], images: Tensor, *, batch_size: int = 256,
          device: str | torch.device = "cpu") -> Tensor:
    """fn(images) in chunks under no_grad (modules in eval mode, restored after), result float32 on CPU."""
    modules = [fn] if isinstance(fn, nn.Module) else []
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                out.append(fn(images[start : start + batch_size].to(device)).float().cpu())
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
    if not out:
        raise ValueError("no images to embed")
    return torch.cat(out)


def simplex_features(logits: Tensor, tau_down: float) -> Tensor:
    """SEM downstream features: softmax over each simplex of logits/τ_down, flattened (B, L·V)."""
    if logits.ndim != 3:
        raise ValueError(f"SEM logits must be (B, L, V), got shape {tuple(logits.shape)}")
    return torch.softmax(logits / tau_down, dim=-1).flatten(1)


def _probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int,
                    s: OfflineSettings) -> float:
    return train_linear_probe(
        train_x, train_y, test_x, test_y, epochs=s.probe_epochs, lr=s.probe_lr, schedule=s.probe_schedule,
        batch_size=s.probe_batch_size, num_classes=num_classes, seed=s.seed,
    ).accuracy


def sem_tau_sweep(train_logits: Tensor, test_logits: Tensor, data: EvalData, s: OfflineSettings) -> dict[str, Any]:
    """Fine-label probe on softmax(emb/τ_down) for each τ_down. τ_down is *chosen* on a held-out 20 % of the train
    set (so the reported number is not tuned on test); every τ's test accuracy is reported too."""
    y = data.train_labels.long()
    gen = torch.Generator().manual_seed(s.seed)
    order = torch.randperm(y.numel(), generator=gen)
    n_val = max(1, y.numel() // 5)
    val, fit = order[:n_val], order[n_val:]
    sweep: dict[str, dict[str, float]] = {}
    best_tau, best_val = None, -1.0
    for tau in s.tau_down:
        train_x, test_x = simplex_features(train_logits, tau), simplex_features(test_logits, tau)
        val_acc = _probe_accuracy(train_x[fit], y[fit], train_x[val], y[val], data.num_classes, s)
        test_acc = _probe_accuracy(train_x, y, test_x, data.test_labels.long(), data.num_classes, s)
        sweep[f"{tau:g}"] = {"val_top1": val_acc, "probe/top1": test_acc}
        if val_acc > best_val:
            best_tau, best_val = tau, val_acc
    best = sweep[f"{best_tau:g}"]
    return {"tau_down": sweep, "best_tau_down": best_tau, "probe/top1": best["probe/top1"]}


def evaluate_offline(model: EvalModel, data: EvalData, settings: OfflineSettings | None = None, *,
                     device: str | torch.device = "cpu") -> dict[str, Any]:
    """Every offline number of one frozen model: {"metrics": flat dict, "sem": sweep or None, sizes}."""
    s = settings or OfflineSettings()
    backbone = model.backbone.to(device)
    train_h = embed(backbone, data.train_images, batch_size=s.batch_size, device=device)
    test_h = embed(backbone, data.test_images, batch_size=s.batch_size, device=device)
    metrics = evaluate_features(
        train_h, data.train_labels, test_h, data.test_labels, num_classes=data.num_classes,
        class_to_superclass=data.class_to_superclass, settings=s.eval_settings(),
    )
    sem = None
    if model.sem_logits is not None:
        train_l = embed(model.sem_logits, data.train_images, batch_size=s.batch_size, device=device)
        test_l = embed(model.sem_logits, data.test_images, batch_size=s.batch_size, device=device)
        sem = sem_tau_sweep(train_l, test_l, data, s)
        metrics["sem/probe_top1"] = sem["probe/top1"]
    return {
        "metrics": metrics,
        "sem": sem,
        "num_train": int(data.train_images.shape[0]),
        "num_test": int(data.test_images.shape[0]),
        "feature_dim": int(train_h.shape[1]),
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def format_table(metrics: dict[str, float], fractions: Sequence[float] = (1.0, 0.1, 0.01),
                 ks: Sequence[int] = (20, 200)) -> str:
    """A terminal table: rows = evaluation, columns = fine / superclass accuracy (%)."""
    rows: list[tuple[str, float | None, float | None]] = []
    for k in ks:
        rows.append((f"kNN k={k}", metrics.get(f"knn/top1@{k}"), metrics.get(f"knn/superclass@{k}")))
    for f in fractions:
        suffix = "" if f == 1.0 else f"@{f * 100:g}pct"
        rows.append((f"linear probe {f * 100:g}% labels", metrics.get(f"probe/top1{suffix}"),
                     metrics.get(f"probe/superclass{suffix}")))
        if f"probe/superclass_direct{suffix}" in metrics:
            rows.append((f"  superclass probe {f * 100:g}% labels", None, metrics[f"probe/superclass_direct{suffix}"]))
    if "sem/probe_top1" in metrics:
        rows.append(("SEM probe (best τ_down)", metrics["sem/probe_top1"], None))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'evaluation':<{width}}  {'fine %':>7}  {'super %':>7}", "-" * (width + 18)]
    lines += [f"{name:<{width}}  {_pct(fine):>7}  {_pct(sup):>7}" for name, fine, sup in rows]
    return "\n".join(lines)
