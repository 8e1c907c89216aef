"""The end-of-run table: kNN (k = 20) and linear-probe accuracy, fine and superclass, for the pretrained backbone
next to two baselines scored the same way (`hexray.eval.evaluate_features`): a randomly initialised copy of the
network and raw (centred) pixels. Computed by the training workers after the last epoch (`evaluate_on_workers`),
each over its share of the sample; the driver only prints what rank 0 reports (`from_metrics`, `format_table`)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from hexray.eval import EvalSettings, evaluate_features, random_init_copy, raw_pixel_features
from hexray.run_files import FINAL_PREFIX, FINAL_ROWS, final_table_from_metrics

ROWS = FINAL_ROWS
COLUMNS = (("knn/top1@20", "kNN top-1"), ("knn/superclass@20", "kNN super"),
           ("probe/top1", "probe top-1"), ("probe/superclass", "probe super"))


def _batches(images: torch.Tensor, labels: torch.Tensor, size: int = 1024) -> list[dict[str, torch.Tensor]]:
    return [{"image": images[i : i + size], "label": labels[i : i + size]} for i in range(0, len(images), size)]


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A fixed-width table, one row per feature source, accuracies in %."""
    present = [(key, title) for key, title in COLUMNS if any(key in r for r in results.values())]
    lines = [f"{'features':<12}" + "".join(f"{title:>13}" for _, title in present)]
    for row, metrics in results.items():
        cells = "".join(f"{metrics[key] * 100:>12.2f}%" if key in metrics else f"{'-':>13}" for key, _ in present)
        lines.append(f"{row:<12}" + cells)
    return "\n".join(lines)


def _cap(*limits: int | None) -> int | None:
    known = [x for x in limits if x is not None]
    return min(known) if known else None


def _pooled_pixels(images: torch.Tensor, side: int) -> torch.Tensor:
    """Raw-pixel features: images average-pooled to at most side × side, flattened."""
    if images.shape[-1] > side or images.shape[-2] > side:
        images = torch.nn.functional.adaptive_avg_pool2d(images, (min(side, images.shape[-2]),
                                                                  min(side, images.shape[-1])))
    return images.reshape(images.shape[0], -1)


def evaluate_on_workers(backbone: torch.nn.Module, cfg: Any, *, root: str, manifest: Any, rank: int, world: int,
                        device: torch.device, num_classes: int,
                        class_to_superclass: Sequence[int] | None,
                        progress: Callable[[int, int, str], None] | None = None) -> dict[str, dict[str, float]] | None:
    """The end-of-run table, computed by every training worker together (call it on all ranks).

    Each rank decodes and embeds only its share of the bank (`cfg.eval.bank_size` training images) and of the
    queries; rank 0 gathers the features (never the images) and scores them. Returns {row: metrics} on rank 0,
    None elsewhere. Nothing here runs on the driver, so its memory does not grow with the dataset.
    `progress(done, total, what)` hears of each stage (rank 0's calls reach the console).
    """
    total = 7
    say = progress or (lambda done, total, what: None)
    from hexray.data.manifest import load_manifest
    from hexray.distributed import gather_to_first
    from hexray.eval.datasource import read_share
    from hexray.train.probes import embed

    d, e, seed = cfg.data, cfg.eval, cfg.run.seed
    kw = dict(image_size=d.image_size, rank=rank, world=world, manifest=manifest or load_manifest(root))
    say(0, total, "reading the bank and query images")
    bank = read_share(root, d.train_split, max_rows=_cap(e.bank_size, d.limit_train), seed=seed, **kw)
    query = read_share(root, d.eval_split, max_rows=_cap(e.query_size, d.limit_eval), seed=seed + 1, **kw)

    def gathered(x: torch.Tensor) -> torch.Tensor | None:
        out = gather_to_first(x.to(device))
        return None if out is None else out.cpu()

    random_net = random_init_copy(copy.deepcopy(backbone).cpu(), seed=seed).to(device)
    features = {}
    for done, (name, net) in enumerate((("pretrained", backbone), ("random_init", random_net)), start=1):
        say(done, total, f"embedding with the {name.replace('_', '-')} network")
        features[name] = (gathered(embed(net, bank["image"], device=device)),
                          gathered(embed(net, query["image"], device=device)))
    features["raw_pixels"] = (gathered(_pooled_pixels(bank["image"], e.raw_pixels_side)),
                              gathered(_pooled_pixels(query["image"], e.raw_pixels_side)))
    bank_y, query_y = gathered(bank["label"]), gathered(query["label"])
    if rank != 0:
        return None
    results = {}
    for done, (name, (tr, te)) in enumerate(features.items(), start=4):
        say(done, total, f"kNN and linear probe on {name.replace('_', ' ')} features")
        if name == "raw_pixels":
            tr, te = raw_pixel_features(tr, te)  # centred by the bank's mean, as cosine kNN needs
        results[name] = _score(tr, bank_y, te, query_y, num_classes=num_classes,
                               class_to_superclass=class_to_superclass, cfg=cfg)
    say(total, total, "done")
    return results


def _score(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
           num_classes: int, class_to_superclass: Sequence[int] | None, cfg: Any) -> dict[str, float]:
    """kNN over the whole bank; the probe over its first `eval.probe_train_size` rows (a random subset: shards are
    random samples of their split)."""
    e, seed = cfg.eval, cfg.run.seed
    kw = dict(num_classes=num_classes, class_to_superclass=class_to_superclass)
    probe_rows = e.probe_train_size
    if probe_rows is None or probe_rows >= train_x.shape[0]:
        return evaluate_features(train_x, train_y, test_x, test_y, **kw,
                                 settings=EvalSettings(ks=(20,), probe_epochs=e.probe_epochs, seed=seed))
    knn = evaluate_features(train_x, train_y, test_x, test_y, **kw,
                            settings=EvalSettings(ks=(20,), probe=False, seed=seed))
    probe = evaluate_features(train_x[:probe_rows], train_y[:probe_rows], test_x, test_y, **kw,
                              settings=EvalSettings(knn=False, probe_epochs=e.probe_epochs, seed=seed))
    return {**knn, **probe}


def to_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """{row: metrics} → flat report keys `final/<row>/<metric>` (what rank 0 reports to the driver)."""
    return {f"{FINAL_PREFIX}{row}/{key}": value for row, metrics in results.items() for key, value in metrics.items()}


from_metrics = final_table_from_metrics  # the inverse of `to_metrics`, from a run's last reported metrics
