"""`hexray report`: a Markdown comparison of runs (method × base/HEX × seeds, mean ± std over seeds) with plots.

Runs are grouped by what they trained: dataset, method, SEM, HEX on/off — plus any other config key that differs
between runs of that group (so a sweep over a threshold kind yields one row per kind). Seeds (any `*seed` key)
and bookkeeping (`run.*` except epochs, `checkpoint.*`, `scaling.*`, `fast.*`, `probe.*`) never split a group.
Numbers come from each run's `eval.json` (`hexray eval`), else from `summary.json`'s final evaluation, else (a
sweep trial, which writes no summary) from the online kNN monitor's last epoch in `metrics.csv`; such a run that
ended before its configured epochs (still running, paused) is marked unfinished and never averaged with finished ones.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hexray.eval.runs import (
    EVAL_FILE,
    FINAL_EVAL_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    find_run_dirs,
    flatten,
    per_epoch,
    read_config_dict,
    read_final_table,
    read_json,
    read_metrics,
)
from hexray.storage import StoragePath

COLUMNS = (
    ("knn/top1@20", "kNN@20 fine"), ("knn/superclass@20", "kNN@20 super"), ("knn/top1@200", "kNN@200 fine"),
    ("probe/top1", "probe fine"), ("probe/superclass", "probe super"), ("probe/top1@10pct", "probe fine 10%"),
    ("probe/top1@1pct", "probe fine 1%"), ("sem/probe_top1", "SEM probe fine"),
)
_NEUTRAL_PREFIXES = ("run.", "checkpoint.", "scaling.", "fast.", "probe.")
_NEUTRAL_KEYS = {"data.path", "data.cache_dir"}


@dataclass
class RunRecord:
    """One run as the report sees it."""

    path: StoragePath
    config: dict[str, Any]
    metrics: dict[str, float]
    source: str
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    scoring: str = ""  # how `metrics` were measured: rows are compared only with rows scored the same way
    baseline_scoring: str = ""  # how `baselines` were measured (the end-of-run table's settings)

    def get(self, dotted: str, default: Any = None) -> Any:
        return flatten(self.config).get(dotted, default)

    @property
    def seed(self) -> Any:
        return self.get("run.seed")

    @property
    def arm(self) -> str:
        """The run's arm (`run.arm`, set by a sweep's `arms:`), '' for runs outside a controlled comparison."""
        return str(self.get("run.arm") or "")


def load_record(run: StoragePath) -> RunRecord:
    """Config + the best available numbers of one run dir (eval.json over summary.json), each with the settings
    that produced it."""
    config = read_config_dict(run)
    ev = read_json(run / EVAL_FILE)
    summary = read_json(run / SUMMARY_FILE) or {}
    evaluation = summary.get("evaluation") or read_final_table(run)  # a sweep trial has final_eval.json only
    baselines = {k: v for k, v in evaluation.items() if k != "pretrained" and isinstance(v, dict)}
    end_of_run = _end_of_run_scoring(config) if evaluation else ""
    if ev and ev.get("metrics"):
        return RunRecord(run, config, dict(ev["metrics"]), EVAL_FILE, baselines, dict(ev.get("plots") or {}),
                         scoring=_offline_scoring(ev.get("settings") or {}), baseline_scoring=end_of_run)
    if isinstance(evaluation.get("pretrained"), dict):
        source = SUMMARY_FILE if summary.get("evaluation") else FINAL_EVAL_FILE
        return RunRecord(run, config, dict(evaluation["pretrained"]), source, baselines, scoring=end_of_run,
                         baseline_scoring=end_of_run)
    final, source, unfinished = summary.get("final_metrics") or {}, SUMMARY_FILE, ""  # a summary: a run that ended
    if "knn/top1" not in final:  # a sweep trial writes no summary.json: its last epoch in metrics.csv
        frame = read_metrics(run)
        final, source, unfinished = _last_epoch_metrics(frame), METRICS_FILE, _stopped_early(frame, config)
    metrics = {"knn/top1@20": final["knn/top1"]} if "knn/top1" in final else {}
    if "knn/superclass" in final:
        metrics["knn/superclass@20"] = final["knn/superclass"]
    scoring = _monitor_scoring(config) + unfinished if metrics else "no numbers"
    return RunRecord(run, config, metrics, f"{source} (online kNN)" if metrics else "none", baselines,
                     scoring=scoring, baseline_scoring=end_of_run)


def _cap(value: Any) -> str:
    return "all" if value in (None, 0) else f"≤{value}"


def _end_of_run_scoring(config: dict[str, Any]) -> str:
    """The settings of `hexray train`'s end-of-run table (config section `eval`; older runs: its defaults)."""
    e = {"bank_size": 100_000, "query_size": None, "probe_train_size": None, "probe_epochs": 30,
         **(config.get("eval") or {})}
    k = (config.get("probe") or {}).get("knn_k", 20)
    return (f"end-of-run table: kNN k={k} on a bank of {_cap(e['bank_size'])} train images, {_cap(e['query_size'])} "
            f"queries; probe {e['probe_epochs']} epochs on {_cap(e['probe_train_size'] or e['bank_size'])}")


def _offline_scoring(settings: dict[str, Any]) -> str:
    """The settings `hexray eval` saved in eval.json."""
    return (f"hexray eval: {_cap(settings.get('max_train'))} train / {_cap(settings.get('max_test'))} test "
            f"images; probe {settings.get('probe_epochs', '?')} epochs, lr {settings.get('probe_lr', '?')} "
            f"{settings.get('probe_schedule', '')}".rstrip())


def _monitor_scoring(config: dict[str, Any]) -> str:
    p = config.get("probe") or {}
    return (f"online kNN monitor (last epoch): k={p.get('knn_k', 20)}, bank {_cap(p.get('knn_train_limit'))}, "
            f"queries {_cap(p.get('knn_eval_limit'))}")


def _stopped_early(frame: Any, config: dict[str, Any]) -> str:
    """', epoch e of n: unfinished' for a run whose metrics end before its configured epochs (a sweep trial still
    running, paused or stopped by a scheduler): its monitor numbers are not comparable to a finished run's, so the
    scoring text, which keeps different scorings apart, says so ('' for a finished run)."""
    planned = (config.get("run") or {}).get("epochs")
    epochs = frame["epoch"].dropna() if frame is not None and "epoch" in frame else []
    last = int(epochs.max()) if len(epochs) else 0
    return f", epoch {last} of {planned}: unfinished" if isinstance(planned, int) and last < planned else ""


def _last_epoch_metrics(frame: Any) -> dict[str, float]:
    """The online monitor's numbers at the last epoch that reported them (in a run's metrics.csv frame)."""
    out = {}
    for key in ("knn/top1", "knn/superclass"):
        _, values = per_epoch(frame, key)
        if values:
            out[key] = values[-1]
    return out


def _is_neutral(key: str) -> bool:
    if key == "run.epochs":
        return False
    return key.startswith(_NEUTRAL_PREFIXES) or key in _NEUTRAL_KEYS or key.rsplit(".", 1)[-1].endswith("seed")


def _primary(r: RunRecord) -> tuple:
    return (str(r.get("data.dataset")), str(r.get("method.name")), bool(r.get("sem.enabled", False)),
            bool(r.get("hex.enabled", False)), r.arm)


@dataclass
class Group:
    dataset: str
    method: str
    sem: bool
    hex: bool
    arm: str
    variant: str
    runs: list[RunRecord]

    @property
    def label(self) -> str:
        if self.arm:  # an arm names what it is; its keys are in the sweep file
            return f"{self.method}{'+SEM' if self.sem else ''}: {self.arm}"
        name = self.method + ("+SEM" if self.sem else "") + (" +HEX" if self.hex else " base")
        return f"{name} [{self.variant}]" if self.variant else name


def group_runs(records: Sequence[RunRecord]) -> list[Group]:
    """Groups of repeats (see module docstring), sorted by dataset, method, SEM, base before HEX, variant."""
    primary: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        primary[_primary(r)].append(r)
    groups = []
    for key, runs in primary.items():
        flat = [{k: v for k, v in flatten(r.config).items() if not _is_neutral(k)} for r in runs]
        keys = sorted({k for f in flat for k in f})
        varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1] if not key[-1] else []
        sub: dict[str, list[RunRecord]] = defaultdict(list)
        for r, f in zip(runs, flat, strict=True):
            sub[", ".join(f"{k}={f.get(k)}" for k in varying)].append(r)
        for variant, members in sub.items():
            groups.append(Group(*key, variant=variant, runs=sorted(members, key=lambda r: str(r.seed))))
    return sorted(groups, key=lambda g: (g.dataset, g.method, g.sem, g.arm != "base", g.arm, g.hex, g.variant))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and *sample* standard deviation (n − 1; 0 for a single run)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def format_cell(values: Sequence[float], digits: int = 1) -> str:
    """'85.3 ± 0.4' in percent (`digits` decimals); a single run shows no ±; no values show '—'."""
    if not values:
        return "—"
    mean, std = mean_std([100 * v for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def comparison_table(groups: Sequence[Group]) -> tuple[str, list[tuple[str, str]]]:
    """(Markdown table, the columns shown): one row per group, mean ± std over its seeds."""
    cols = [(k, t) for k, t in COLUMNS if any(k in r.metrics for g in groups for r in g.runs)]
    head = ["dataset", "method", "HEX", "config", "seeds", *[t for _, t in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        method = g.method + ("+SEM" if g.sem else "")
        seeds = ",".join(str(r.seed) for r in g.runs)
        cells = [format_cell([r.metrics[k] for r in g.runs if k in r.metrics]) for k, _ in cols]
        lines.append("| " + " | ".join([g.dataset, method, "HEX" if g.hex else "base", g.arm or g.variant or "—",
                                        f"{len(g.runs)} ({seeds})", *cells]) + " |")
    return "\n".join(lines), cols


def delta_table(groups: Sequence[Group], cols: Sequence[tuple[str, str]]) -> str | None:
    """HEX − base (difference of the means, percentage points) for each (dataset, method, variant) with both."""
    by_key = {(g.dataset, g.method, g.sem, g.variant, g.hex): g for g in groups if not g.arm}  # arms: paired
    lines = []
    for (dataset, method, sem, variant, hexed), g in by_key.items():
        base = by_key.get((dataset, method, sem, variant, False))
        if not hexed or base is None:
            continue
        cells = []
        for k, _ in cols:
            a = [r.metrics[k] for r in g.runs if k in r.metrics]
            b = [r.metrics[k] for r in base.runs if k in r.metrics]
            cells.append(f"{100 * (mean_std(a)[0] - mean_std(b)[0]):+.1f}" if a and b else "—")
        name = method + ("+SEM" if sem else "")
        lines.append("| " + " | ".join([dataset, name, variant or "—", *cells]) + " |")
    if not lines:
        return None
    head = ["dataset", "method", "config", *[t for _, t in cols]]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines])


def baseline_table(records: Sequence[RunRecord], cols: Sequence[tuple[str, str]]) -> str | None:
    """Random-init network and raw pixels (from summary.json), mean over the runs of each dataset."""
    rows = defaultdict(lambda: defaultdict(list))
    for r in records:
        for name, metrics in r.baselines.items():
            for k, _ in cols:
                if k in metrics:
                    rows[(str(r.get("data.dataset")), name)][k].append(metrics[k])
    if not rows:
        return None
    head = ["dataset", "features", *[t for _, t in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (dataset, name), values in sorted(rows.items()):
        lines.append("| " + " | ".join([dataset, name, *[format_cell(values.get(k, [])) for k, _ in cols]]) + " |")
    return "\n".join(lines)


def scoring_section(records: Sequence[RunRecord], scoring: str) -> list[str]:
    """Markdown lines of one scoring setting: its runs' comparison, HEX − base, and the baselines scored alike."""
    groups = group_runs([r for r in records if r.scoring == scoring])
    scored_alike = [r for r in records if r.baselines and r.baseline_scoring == scoring]
    lines = [f"## Scored by {scoring}", ""]
    cols: list[tuple[str, str]] = []
    if groups:
        table, cols = comparison_table(groups)
        lines += [table, ""]
        delta = delta_table(groups, cols)
        if delta:
            lines += ["### HEX − base (percentage points, difference of means)", "", delta, ""]
    if scored_alike:
        cols = cols or [(k, t) for k, t in COLUMNS if any(k in m for r in scored_alike for m in r.baselines.values())]
        lines += ["### Baselines scored the same way (random-init network, raw pixels)", "",
                  baseline_table(scored_alike, cols) or "—", ""]
    return lines


def _curve_plots(groups: Sequence[Group], out: StoragePath) -> list[tuple[str, StoragePath]]:
    from hexray.eval.plots import plot_group_curves

    made = []
    for dataset in sorted({g.dataset for g in groups}):
        mine = [g for g in groups if g.dataset == dataset]
        frames = {id(r): read_metrics(r.path) for g in mine for r in g.runs}
        for key, ylabel, scale, title in (
            ("knn/top1", "kNN top-1 (%)", 100.0, "Online kNN monitor over training"),
            ("probe/online_top1", "online probe top-1 (%)", 100.0, "Online linear probe over training"),
            ("hex/epsilon", "ε", 1.0, "HEX threshold ε over training"),
            ("hex/purity", "H(i) superclass purity", 1.0, "H(i) superclass purity over training"),
        ):
            curves = {g.label: [per_epoch(frames[id(r)], key) for r in g.runs] for g in mine}
            safe = key.replace("/", "_")
            path = plot_group_curves(curves, out / "plots" / f"{dataset}_{safe}.png", ylabel=ylabel,
                                     title=f"{title} — {dataset}", scale=scale)
            if path is not None:
                made.append((f"{title} — {dataset}", path))
    return made


def _slug(*parts: object) -> str:
    """A file-name-safe join of `parts`: sweep trials all name their run dir `train`, so that name cannot key files."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(str(p) for p in parts)).strip("_")


def _run_plots(groups: Sequence[Group], out: StoragePath) -> list[tuple[str, list[tuple[str, StoragePath]]]]:
    """Copy each group's first evaluated run's plots into the report (the rest are one `hexray eval` away)."""
    sections = []
    for g in groups:
        run = next((r for r in g.runs if r.plots), None)
        if run is None:
            continue
        copied = []
        for name, rel in sorted(run.plots.items()):
            src = run.path / rel
            if src.is_file():
                dst = out / "plots" / "per_run" / f"{_slug(g.dataset, g.label, f's{run.seed}')}_{name}.png"
                dst.parent.mkdir()
                dst.write_bytes(src.read_bytes())
                copied.append((name, dst))
        if copied:
            sections.append((f"{g.dataset}: {g.label}, seed {run.seed} ({run.path.name})", copied))
    return sections


BEGIN_MARK = "<!-- hexray report: begin (regenerated by `hexray report`; edit outside these marks) -->"
END_MARK = "<!-- hexray report: end -->"


def write_report(paths: Iterable[str | os.PathLike], out: str | os.PathLike, *, title: str = "hexray report",
                 plots: bool = True, compare: Sequence[str] = ()) -> StoragePath:
    """Find the runs under `paths` and write the report; return the Markdown path. Runs and `out` may be local or
    on object storage. `out` is a directory (→ `out/report.md` and `out/plots/`) or a `.md` file (→ that file and
    `<its folder>/<its stem>/plots/`); an existing `.md` file holding the begin/end marks keeps everything outside
    them, so hand-written text around the generated tables survives a regeneration. `compare`: 'ARM vs CONTROL'
    pairs of sweep arms to difference by seed besides each arm − base (hexray.eval.arms.parse_comparison)."""
    from hexray.eval.arms import arm_sections, missing_arms, parse_comparison

    comparisons = [parse_comparison(text) for text in compare]  # a malformed one fails before any run is read
    out = StoragePath(out)
    if out.name.endswith(".md"):
        md, assets, link_base = out, out.parent / out.stem, out.parent
    else:
        md, assets, link_base = out / "report.md", out, out
    assets.mkdir()
    runs = find_run_dirs(paths)
    records = [load_record(r) for r in runs]
    armed, others = [r for r in records if r.arm], [r for r in records if not r.arm]
    unmatched = missing_arms(comparisons, armed)
    for line in unmatched:
        print(f"hexray report: {line}", file=sys.stderr)
    groups = group_runs(others)
    parts = [f"{len(records)} runs in {len(group_runs(armed)) + len(groups)} groups. Accuracy in %, mean ± "
             "sample std over seeds (a single run shows no ±). Numbers "
             "are compared only within one scoring setting: each table holds the runs (and baselines) measured "
             "the same way.", ""]
    if armed:
        parts += ["## Controlled comparisons (arms paired by seed)", ""] + [f"- {line}" for line in unmatched]
        parts += [""] if unmatched else []
        parts += arm_sections(armed, assets, plots=plots, link_base=link_base, comparisons=comparisons)
    for scoring in sorted({r.scoring for r in others} | {r.baseline_scoring for r in others if r.baselines}):
        parts += scoring_section(others, scoring)
    if plots and groups:
        curves = _curve_plots(groups, assets)
        if curves:
            parts += ["## Over training (mean over seeds; band = min..max)", ""]
            parts += [f"![{name}]({p.relative_to(link_base)})" for name, p in curves] + [""]
        for heading, pngs in _run_plots(groups, assets):
            parts += [f"### {heading}", ""] + [f"![{n}]({p.relative_to(link_base)})" for n, p in pngs] + [""]
    parts += ["## Runs", "", "| run | group | seed | numbers from | scored by |", "|---|---|---|---|---|"]
    by_run = {id(r): g for g in group_runs(armed) + groups for r in g.runs}
    for r in records:
        parts.append(f"| `{shown_path(r.path)}` | {by_run[id(r)].label} | {r.seed} | {r.source} | {r.scoring} |")
    md.write_text(_merge(md, title, "\n".join(parts)))
    return md


def shown_path(path: StoragePath) -> str:
    """A run's location as the report prints it: a URI as it is; a local path relative to the working directory
    when it lies inside it (a report committed with a repository says `runs/sweeps/...`, not one machine's
    absolute path), else absolute."""
    if path.remote:
        return str(path)
    rel = os.path.relpath(str(path))
    return str(path) if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def _merge(md: StoragePath, title: str, generated: str) -> str:
    """The new file text: the generated part between the marks, what surrounds the marks in `md` kept (its own
    heading included); without marks, the title and the generated part alone."""
    old = md.read_text() if md.is_file() else ""
    if BEGIN_MARK in old and END_MARK in old.split(BEGIN_MARK, 1)[1]:
        head, rest = old.split(BEGIN_MARK, 1)
        tail = rest.split(END_MARK, 1)[1]
        return f"{head}{BEGIN_MARK}\n{generated}\n{END_MARK}{tail}"
    return f"# {title}\n\n{generated}\n"
