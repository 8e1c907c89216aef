"""PNG plots of a sweep: the metric against each searched key, and every trial's metric curve (matplotlib, Agg)."""

from __future__ import annotations

import math

import pandas as pd

from hexray.storage import StoragePath, write_figure

PARAMS_PLOT = "metric_vs_params.png"
CURVES_PLOT = "metric_curves.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_vs_params(table: pd.DataFrame, keys: list[str], metric: str, path: StoragePath) -> StoragePath:
    """One panel per searched key: best metric of each finished trial against that key's value.

    Numeric keys use a numeric axis (log when the values span > 2 decades); others are placed at categories.
    """
    plt = _pyplot()
    ok = table[table["status"] != "ERROR"]
    column = f"{metric} (best)"
    cols = min(3, max(1, len(keys)))
    rows = math.ceil(max(1, len(keys)) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        sub = ok[ok[key].notna()] if key in ok else ok.iloc[0:0]
        values = sub[key].tolist()
        numeric = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            ax.scatter(values, sub[column], alpha=0.8)
            positive = [v for v in values if v > 0]
            if len(positive) == len(values) and max(values) / min(values) > 100:
                ax.set_xscale("log")
        else:
            labels = sorted({str(v) for v in values})
            ax.scatter([labels.index(str(v)) for v in values], sub[column], alpha=0.8)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"{metric} (best per trial) vs searched keys")
    fig.tight_layout()
    write_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_metric_curves(curves: pd.DataFrame, metric: str, path: StoragePath) -> StoragePath:
    """The metric at each report of every trial (ASHA's early stops show as short curves)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for trial_id, group in curves.groupby("trial_id", sort=False):
        ax.plot(group["training_iteration"], group[metric], marker="o", markersize=3, label=str(trial_id))
    ax.set_xlabel("report (training_iteration)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if 0 < curves["trial_id"].nunique() <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def write_plots(table: pd.DataFrame, curves: pd.DataFrame, keys: list[str], metric: str,
                out_dir: StoragePath) -> list[StoragePath]:
    out_dir.mkdir()
    return [
        plot_metric_vs_params(table, keys, metric, out_dir / PARAMS_PLOT),
        plot_metric_curves(curves, metric, out_dir / CURVES_PLOT),
    ]
