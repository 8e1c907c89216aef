"""Linear probe on frozen features: the standard SSL evaluation (design/HEX.md: SGD, lr 0.3, 100 epochs,
steps at 60/80 %, also 10 % and 1 % labels).

Features are standardised with the training-set mean/std so one lr works across backbones, and the whole probe
runs on in-memory tensors with large batches (no DataLoader), which keeps 60k × 512 features to seconds on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

SCHEDULES = ("cosine", "step")


@dataclass
class ProbeResult:
    """Outcome of one probe. `predictions` are the test-set class predictions (for superclass mapping)."""

    accuracy: float
    train_accuracy: float
    num_train: int
    epochs: int
    predictions: Tensor
    loss_history: list[float] = field(default_factory=list)


def balanced_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Sorted indices of a class-balanced subset holding about `fraction` of the samples, fixed by `seed`.

    Every class gets the same quota, max(1, round(fraction · N / C)), capped at that class's size (so with a
    balanced dataset such as Fashion-MNIST the subset has exactly round(fraction · N / C) samples per class).
    fraction = 1 returns every index.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction!r}")
    labels = labels.cpu().long()
    if fraction == 1.0:
        return torch.arange(labels.numel())
    classes = labels.unique()
    quota = max(1, round(fraction * labels.numel() / classes.numel()))
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in classes.tolist():
        members = (labels == c).nonzero().flatten()
        picked.append(members[torch.randperm(members.numel(), generator=gen)[:quota]])
    return torch.cat(picked).sort().values


def _lr_factor(schedule: str, step: int, total_steps: int, epoch: int, epochs: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return 0.1 ** ((epoch >= int(0.6 * epochs)) + (epoch >= int(0.8 * epochs)))


def _check(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> None:
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if x.ndim != 2:
            raise ValueError(f"{name}_x must be 2-D (N, d), got shape {tuple(x.shape)}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{name}_y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}_x is empty")
    if test_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"test_x has dim {test_x.shape[1]} but train_x has dim {train_x.shape[1]}")


def train_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    epochs: int = 100,
    lr: float = 0.3,
    schedule: str = "step",
    label_fraction: float = 1.0,
    batch_size: int = 1024,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    num_classes: int | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Train a linear classifier (SGD + momentum, cross-entropy) on standardised frozen features; test it.

    schedule `step` multiplies lr by 0.1 at 60 % and 80 % of the epochs; `cosine` anneals per step to 0.
    `label_fraction` < 1 trains on `balanced_subset(train_y, label_fraction, seed)`; the test set is untouched.
    """
    _check(train_x, train_y, test_x, test_y)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    train_y = train_y.cpu().long()
    test_y = test_y.cpu().long()
    num_classes = num_classes or int(max(train_y.max().item(), test_y.max().item())) + 1
    if train_y.min() < 0 or train_y.max() >= num_classes:
        raise ValueError(f"train_y must lie in [0, num_classes={num_classes})")

    subset = balanced_subset(train_y, label_fraction, seed)
    x = train_x.detach().cpu().float()[subset]
    y = train_y[subset]
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / std
    xt = (test_x.detach().cpu().float() - mean) / std

    gen = torch.Generator().manual_seed(seed)
    weight = torch.zeros(num_classes, x.shape[1])
    bias = torch.zeros(num_classes)
    torch.nn.init.normal_(weight, std=0.01, generator=gen)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.SGD([weight, bias], lr=lr, momentum=momentum, weight_decay=weight_decay)

    n = x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs
    history: list[float] = []
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        epoch_loss = 0.0
        for start in range(0, n, batch_size):
            for group in optimizer.param_groups:
                group["lr"] = lr * _lr_factor(schedule, step, total, epoch, epochs)
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(F.linear(x[idx], weight, bias), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * idx.numel()
            step += 1
        history.append(epoch_loss / n)

    with torch.no_grad():
        train_pred = F.linear(x, weight, bias).argmax(dim=1)
        test_pred = F.linear(xt, weight, bias).argmax(dim=1)
    return ProbeResult(
        accuracy=(test_pred == test_y).float().mean().item(),
        train_accuracy=(train_pred == y).float().mean().item(),
        num_train=n,
        epochs=epochs,
        predictions=test_pred,
        loss_history=history,
    )
