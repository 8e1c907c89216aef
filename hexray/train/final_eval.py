"""The end-of-run table: kNN (k = 20) and linear-probe accuracy, fine and superclass, for the pretrained backbone
next to two baselines scored the same way (`hexray.eval.evaluate_features`): a randomly initialised copy of the
network and raw (centred) pixels. Runs on the driver from the final checkpoint."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hexray.eval import EvalSettings, evaluate_features, extract_features, random_init_copy, raw_pixel_features

ROWS = ("pretrained", "random_init", "raw_pixels")
COLUMNS = (("knn/top1@20", "kNN top-1"), ("knn/superclass@20", "kNN super"),
           ("probe/top1", "probe top-1"), ("probe/superclass", "probe super"))


def _batches(images: torch.Tensor, labels: torch.Tensor, size: int = 1024) -> list[dict[str, torch.Tensor]]:
    return [{"image": images[i : i + size], "label": labels[i : i + size]} for i in range(0, len(images), size)]


def evaluate_run(backbone: torch.nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], *, num_classes: int,
                 class_to_superclass: Sequence[int] | None, probe_epochs: int = 30,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """{row: metrics} for the three rows of `ROWS`, from (images, labels) of the train and test splits."""
    train, test = {"image": train[0], "label": train[1]}, {"image": test[0], "label": test[1]}
    settings = EvalSettings(ks=(20,), probe_epochs=probe_epochs, seed=seed)
    kw = dict(num_classes=num_classes, class_to_superclass=class_to_superclass, settings=settings)
    results = {}
    for name, net in (("pretrained", backbone), ("random_init", random_init_copy(backbone, seed=seed))):
        tr, _, _ = extract_features(net, _batches(train["image"], train["label"]))
        te, _, _ = extract_features(net, _batches(test["image"], test["label"]))
        results[name] = evaluate_features(tr, train["label"], te, test["label"], **kw)
    tr, te = raw_pixel_features(train["image"], test["image"])
    results["raw_pixels"] = evaluate_features(tr, train["label"], te, test["label"], **kw)
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A fixed-width table, one row per feature source, accuracies in %."""
    present = [(key, title) for key, title in COLUMNS if any(key in r for r in results.values())]
    lines = [f"{'features':<12}" + "".join(f"{title:>13}" for _, title in present)]
    for row, metrics in results.items():
        cells = "".join(f"{metrics[key] * 100:>12.2f}%" if key in metrics else f"{'-':>13}" for key, _ in present)
        lines.append(f"{row:<12}" + cells)
    return "\n".join(lines)
