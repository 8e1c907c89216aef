"""PNG plots of a run's evaluation (matplotlib, Agg backend: no display needed).

Each function takes plain data (trajectory points from `hexray.eval.trajectory`, a metrics DataFrame from
`hexray.eval.runs.read_metrics`) and writes one figure; it returns the path, or None when there is nothing to
draw (e.g. a run without HEX metrics), so callers list only the plots that exist.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hexray.eval.runs import per_epoch  # noqa: E402
from hexray.storage import StoragePath, write_figure  # noqa: E402

_SAME, _DIFF, _EPS = "#d95f02", "#1b9e77", "#c0392b"


def _save(fig: Any, path: str | Path | StoragePath) -> StoragePath:
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    target = StoragePath(path)  # a local file or an object (a run directory on s3://)
    fig.tight_layout()
    write_figure(fig, target, dpi=110)
    plt.close(fig)
    return target


def _panel_grid(count: int, size: tuple[float, float]) -> tuple[Any, list[Any]]:
    """A figure of `count` panels, at most 3 per row (unused cells hidden), and its panels in reading order."""
    cols = min(3, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _pick(points: Sequence[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """At most `limit` points, evenly spaced, always keeping the first and last."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def plot_similarity_evolution(trajectory: Sequence[Mapping[str, Any]], path: str | Path | StoragePath, *,
                              max_panels: int = 8, space: str = "backbone features",
                              mark_epsilon: bool = True) -> StoragePath | None:
    """One panel per checkpoint epoch (top = earliest): density of pairwise cosine similarity for same-class and
    different-class pairs, with the HEX threshold ε marked. HEX's story is read top to bottom: the same-class
    mass moves right of ε while different-class pairs stay spread."""
    points = [p for p in trajectory if "histogram" in p]
    if not points:
        return None
    points = _pick(points, max_panels)
    fig, axes = plt.subplots(len(points), 1, figsize=(7, 1.35 * len(points) + 0.8), sharex=True, squeeze=False)
    for ax, point in zip(axes[:, 0], points, strict=True):
        h = point["histogram"]
        edges = h["edges"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        width = edges[1] - edges[0]
        for key, colour, label in (("different_label", _DIFF, "different class"), ("same_label", _SAME,
                                                                                   "same class")):
            counts = h.get(key)
            if counts:
                total = max(1, sum(counts))
                ax.fill_between(centres, [c / total / width for c in counts], step="mid", alpha=0.45,
                                color=colour, label=label)
        eps = point.get("hex/epsilon")
        if eps is not None and mark_epsilon:
            ax.axvline(eps, color=_EPS, lw=1.6, ls="--", label="ε")
            right = eps > 0.6  # keep the label inside the axes
            ax.text(eps, ax.get_ylim()[1] * 0.8, f"ε={eps:.2f} " if right else f" ε={eps:.2f}", color=_EPS,
                    fontsize=8, ha="right" if right else "left")
        ax.set_ylabel(f"ep {point['epoch']}", rotation=0, ha="right", va="center", fontsize=9)
        ax.set_yticks([])
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=3, frameon=False)
    axes[0, 0].set_title(f"Cosine similarity of {space} over training (density per pair type)")
    axes[-1, 0].set_xlabel("cosine similarity")
    axes[-1, 0].set_xlim(-1, 1)
    return _save(fig, path)


def plot_collapse(trajectory: Sequence[Mapping[str, Any]], path: str | Path | StoragePath) -> StoragePath | None:
    """Effective rank over epochs: global vs mean within superclass vs mean within class (left) and the
    local/global ratio (right). Local collapse = the within-group curves fall while the global one holds."""
    points = [p for p in trajectory if "rank/global" in p]
    if not points:
        return None
    epochs = [p["epoch"] for p in points]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    curves = (("rank/global", "global", "-o", "C0"), ("rank/superclass_mean", "within superclass (mean)", "-s", "C1"),
              ("rank/class_mean", "within class (mean)", "-^", "C2"))
    for key, label, style, colour in curves:
        if all(key in p for p in points):
            ax.plot(epochs, [p[key] for p in points], style, label=label, color=colour)
            if key != "rank/global":
                ax2.plot(epochs, [p[key] / p["rank/global"] for p in points], style, label=label, color=colour)
    names = sorted({n for p in points for n in p.get("rank/per_superclass", {})})
    for name in names:
        ax.plot(epochs, [p.get("rank/per_superclass", {}).get(name, float("nan")) for p in points], lw=0.8,
                alpha=0.5, label=f"  {name}")
    ax.set(xlabel="epoch", ylabel="effective rank", title="Dimensional collapse: global vs local")
    ax.legend(fontsize=7)
    ax2.set(xlabel="epoch", ylabel="local / global rank", title="Local collapse ratio (lower = more local)")
    ax2.legend(fontsize=7)
    return _save(fig, path)


def plot_training_curves(metrics: Any, path: str | Path | StoragePath) -> StoragePath | None:
    """From metrics.csv: loss, HEX's ε, mean |H(i)| and H(i)'s superclass purity per epoch (panels with data)."""
    panels = [("loss", "loss"), ("hex/epsilon", "ε (threshold)"), ("hex/h_size", "mean |H(i)|"),
              ("hex/purity", "H(i) superclass purity")]
    panels = [(k, t) for k, t in panels if per_epoch(metrics, k)[0]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        x, y = per_epoch(metrics, key)
        ax.plot(x, y, "-o", ms=3)
        ax.set(title=title, xlabel="epoch")
    return _save(fig, path)


def plot_run_curves(metrics: Any, path: str | Path | StoragePath, *,
                    purity_chance: float | None = None) -> StoragePath | None:
    """The training run at a glance (written by `hexray train`): loss, kNN monitor and online probe accuracy,
    HEX's threshold ε, mean |H(i)| and H(i)'s superclass purity against chance — panels with data only."""
    panels = []
    if per_epoch(metrics, "loss")[0]:
        panels.append("loss")
    accuracy = [(k, label) for k, label in (("knn/top1", "kNN monitor, class"), ("knn/superclass", "kNN monitor, "
                "superclass"), ("probe/online_top1", "online probe, class"), ("probe/online_superclass",
                                                                             "online probe, superclass"))
                if per_epoch(metrics, k)[0]]
    if accuracy:
        panels.append("accuracy")
    panels += [k for k in ("hex/epsilon", "hex/h_size", "hex/purity") if per_epoch(metrics, k)[0]]
    if not panels:
        return None
    fig, axes = _panel_grid(len(panels), (4.2, 3.3))
    for ax, panel in zip(axes, panels, strict=False):
        if panel == "loss":
            ax.plot(*per_epoch(metrics, "loss"), "-o", ms=3, label="training loss (epoch mean)")
            ax.set(title="Training loss", ylabel="loss")
        elif panel == "accuracy":
            for key, label in accuracy:
                x, y = per_epoch(metrics, key)
                ax.plot(x, [100 * v for v in y], "-o", ms=3, label=label)
            ax.set(title="Accuracy on held-out images", ylabel="accuracy (%)")
        elif panel == "hex/epsilon":
            ax.plot(*per_epoch(metrics, panel), "-o", ms=3, color=_EPS, label="ε (cosine)")
            ax.set(title="HEX threshold ε", ylabel="cosine similarity")
        elif panel == "hex/h_size":
            ax.plot(*per_epoch(metrics, panel), "-o", ms=3, label="mean |H(i)|")
            ax.set(title="Hierarchical set size |H(i)|", ylabel="samples per anchor")
        else:
            _purity_panel(ax, metrics, purity_chance)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _purity_panel(ax: Any, metrics: Any, purity_chance: float | None) -> None:
    """H(i)'s share of the anchor's superclass (and class, when logged), each with its chance level: the same share
    among all the anchor's negatives (logged per step), else the split's Σ p² (`purity_chance`)."""
    for key, chance_key, what, colour in (("hex/purity", "hex/chance_superclass", "superclass", "C0"),
                                          ("hex/purity_class", "hex/chance_class", "class", "C1")):
        x, y = per_epoch(metrics, key)
        if not x:
            continue
        ax.plot(x, [100 * v for v in y], "-o", ms=3, color=colour, label=f"H(i) shares the {what}")
        cx, cy = per_epoch(metrics, chance_key)
        if cx:
            ax.plot(cx, [100 * v for v in cy], "--", color=colour, label=f"chance: any negative ({what})")
        elif what == "superclass" and purity_chance is not None:
            ax.axhline(100 * purity_chance, color=colour, ls="--", label=f"chance ({100 * purity_chance:.0f}%)")
    ax.set(title="What H(i) holds", ylabel="pairs with the anchor's label (%)")


def plot_accuracy(metrics: Any, trajectory: Sequence[Mapping[str, Any]], path: str | Path | StoragePath,
                  offline: Mapping[str, float] | None = None) -> StoragePath | None:
    """Accuracy over epochs: the online probe and kNN monitor (metrics.csv, lines) and kNN recomputed from each
    checkpoint (markers); the final offline probe as dotted horizontal lines."""
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for key, label in (("probe/online_top1", "online probe, fine"), ("probe/online_superclass",
                                                                      "online probe, superclass"),
                       ("knn/top1", "kNN monitor, fine"), ("knn/superclass", "kNN monitor, superclass")):
        x, y = per_epoch(metrics, key)
        if x:
            ax.plot(x, [100 * v for v in y], "-", label=label)
            drawn = True
    for key, label in (("knn/top1@20", "kNN k=20 (checkpoint), fine"), ("knn/superclass@20",
                                                                         "kNN k=20 (checkpoint), superclass")):
        pts = [p for p in trajectory if key in p]
        if pts:
            ax.plot([p["epoch"] for p in pts], [100 * p[key] for p in pts], "o--", label=label)
            drawn = True
    logged = [] if metrics is None or metrics.empty or "epoch" not in metrics else metrics["epoch"].dropna().tolist()
    last_epoch = max([p["epoch"] for p in trajectory] + logged + [0])
    for key, label, marker in (("probe/top1", "offline probe, fine", "*"),
                               ("probe/superclass", "offline probe, superclass", "P")):
        if offline and key in offline:
            ax.plot([last_epoch], [100 * offline[key]], marker, ms=12, ls="none",
                    label=f"{label}: {100 * offline[key]:.1f}%")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy over training")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_group_curves(curves: Mapping[str, Sequence[tuple[list[float], list[float]]]],
                      path: str | Path | StoragePath, *, ylabel: str, title: str,
                      scale: float = 100.0) -> StoragePath | None:
    """One line per group (mean over its runs at the epochs all share, band = min..max): the report's
    base-vs-HEX comparison over training."""
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for label, runs in curves.items():
        runs = [r for r in runs if r[0]]
        if not runs:
            continue
        common = sorted(set(runs[0][0]).intersection(*[set(r[0]) for r in runs[1:]]))
        if not common:
            continue
        values = [[dict(zip(x, y, strict=True))[e] * scale for e in common] for x, y in runs]
        mean = [sum(col) / len(col) for col in zip(*values, strict=True)]
        line, = ax.plot(common, mean, "-o", ms=3, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(common, [min(c) for c in zip(*values, strict=True)],
                            [max(c) for c in zip(*values, strict=True)], alpha=0.2, color=line.get_color())
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _mean_curve(frames: Sequence[Any], key: str, scale: float) -> tuple[list[float], list[float], list[float],
                                                                          list[float]]:
    """(epochs all runs logged, mean, min, max) of `key` × scale over the runs' metrics frames."""
    runs = [per_epoch(f, key) for f in frames]
    runs = [r for r in runs if r[0]]
    if not runs:
        return [], [], [], []
    common = sorted(set(runs[0][0]).intersection(*[set(r[0]) for r in runs[1:]]))
    values = [[dict(zip(x, y, strict=True))[e] * scale for e in common] for x, y in runs]
    columns = list(zip(*values, strict=True))
    return common, [sum(c) / len(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


ARM_PANELS = (
    ("knn/top1", None, 100.0, "kNN monitor, class", "accuracy (%)"),
    ("knn/superclass", None, 100.0, "kNN monitor, superclass", "accuracy (%)"),
    ("hex/epsilon", None, 1.0, "threshold ε", "cosine similarity"),
    ("hex/h_size", None, 1.0, "mean |H(i)|", "samples per anchor"),
    ("hex/purity_class", "hex/chance_class", 100.0, "H(i) shares the anchor's class", "pairs (%)"),
    ("hex/purity", "hex/chance_superclass", 100.0, "H(i) shares the anchor's superclass", "pairs (%)"),
)


def plot_arm_panels(arms: Mapping[str, Sequence[Any]], path: str | Path | StoragePath, *,
                    title: str) -> StoragePath | None:
    """One figure per arm group: per epoch (mean over seeds, band = min..max), the kNN monitor, ε, mean |H(i)| and
    what H(i) holds next to chance (the same share among all negatives: one dashed grey line, since paired arms
    see the same batches). Arms whose H(i) is always empty (no threshold) are left out of the H(i) panels, and
    arms without an ε (the oracles report 0, no threshold +inf) out of the ε panel."""
    drawn_panels = [p for p in ARM_PANELS if any(_mean_curve(frames, p[0], 1.0)[0] for frames in arms.values())]
    if not drawn_panels:
        return None
    fig, axes = _panel_grid(len(drawn_panels), (4.4, 3.4))
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(arms)}
    for ax, (key, chance_key, scale, panel_title, ylabel) in zip(axes, drawn_panels, strict=False):
        for arm, frames in arms.items():
            if key.startswith("hex/") and key != "hex/epsilon" and not any(
                    v > 0 for v in _mean_curve(frames, "hex/h_size", 1.0)[1]):
                continue  # H(i) empty throughout: nothing to measure
            x, mean, lo, hi = _mean_curve(frames, key, scale)
            if not x or (key == "hex/epsilon" and not any(math.isfinite(v) and v != 0 for v in mean)):
                continue  # no ε to draw: the oracles report 0 and "no threshold" +inf
            ax.plot(x, mean, "-o", ms=3, color=colours[arm], label=f"{arm} (n={len(frames)})")
            if len(frames) > 1:
                ax.fill_between(x, lo, hi, alpha=0.15, color=colours[arm])
        if chance_key:
            chance = next((c for frames in arms.values() if (c := _mean_curve(frames, chance_key, scale))[0]), None)
            if chance:
                ax.plot(chance[0], chance[1], "--", color="grey", label="chance: any negative")
        ax.set(title=panel_title, xlabel="epoch", ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6)
    fig.suptitle(title)
    return _save(fig, path)
