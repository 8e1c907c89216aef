"""The controlled-comparison part of `hexray report`: runs that carry an arm (`run.arm`, from a sweep's `arms:`).

Per dataset and method: each arm's accuracy (mean ± sample std over seeds) next to raw pixels and a random-init
network scored the same way, then each arm's paired difference to the arm named `base` (per seed, mean and 95%
t interval; hexray.eval.paired), the differences the user asked for between other arms (`--compare "HEX released
vs DCL"`: an arm against its own control, which `base` is not always), and one figure of what HEX's H(i) holds
over training per arm group.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hexray.errors import InputError
from hexray.eval.paired import PairedDifference, chance_count, format_difference, paired_difference, reading
from hexray.eval.report import Group, RunRecord, format_cell, group_runs
from hexray.eval.runs import per_epoch, read_metrics
from hexray.storage import StoragePath

BASE_ARM = "base"
ARM_COLUMNS = (("knn/top1@20", "kNN@20 fine"), ("knn/superclass@20", "kNN@20 super"),
               ("probe/top1", "probe fine"), ("probe/superclass", "probe super"))
BASELINE_ROWS = (("raw_pixels", "raw pixels"), ("random_init", "random-init network"))
DIGITS = 2  # arms differ by tenths of a point: one decimal would print a spread of 0.04 as "± 0.0"


@dataclass(frozen=True)
class Comparison:
    """`arm` − `control`, paired by seed, for every method that ran both (or only `method`, when given)."""

    arm: str
    control: str
    method: str | None = None

    @property
    def text(self) -> str:
        return (f"{self.method}: " if self.method else "") + f"{self.arm} vs {self.control}"


def parse_comparison(text: str) -> Comparison:
    """'ARM vs CONTROL' or 'METHOD: ARM vs CONTROL' (arm names as the sweep file spells them, e.g. 'oracle w_h=0')."""
    method, _, pair = text.rpartition(": ") if ": " in text else ("", "", text)
    arm, sep, control = pair.partition(" vs ")
    arm, control, method = arm.strip(), control.strip(), method.strip()
    if not sep or not arm or not control or " vs " in control:
        raise InputError(f"--compare {text!r}: expected 'ARM vs CONTROL' or 'METHOD: ARM vs CONTROL', e.g. "
                         "'HEX released vs DCL'")
    if arm == control:
        raise InputError(f"--compare {text!r}: an arm against itself is 0 by construction; name two arms")
    return Comparison(arm, control, method or None)


def missing_arms(comparisons: Sequence[Comparison], records: Sequence[RunRecord]) -> list[str]:
    """One line per compared arm without runs (of the named method): a typo, or an arm the sweep has not reached
    yet. The report says so rather than failing, since partial results are read at any time."""
    lines = []
    for c in comparisons:
        arms = {r.arm for r in records if c.method is None or str(r.get("method.name")) == c.method}
        for name in (c.arm, c.control):
            if name not in arms:
                lines.append(f"--compare {c.text!r}: no run of arm {name!r}"
                             + (f" with method {c.method}" if c.method else "")
                             + f" (arms with runs: {', '.join(sorted(arms)) or 'none'}); not compared")
    return lines


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def accuracy_table(groups: Sequence[Group], records: Sequence[RunRecord]) -> str:
    """Arms, then the baselines measured in the same runs (same images, same scoring)."""
    cols = [(k, t) for k, t in ARM_COLUMNS if any(k in r.metrics for g in groups for r in g.runs)]
    lines = [_row(["arm", "seeds", *[t for _, t in cols]]), "|" + "---|" * (2 + len(cols))]
    for g in groups:
        cells = [format_cell([r.metrics[k] for r in g.runs if k in r.metrics], DIGITS) for k, _ in cols]
        seeds = ",".join(str(s) for s in sorted(r.seed for r in g.runs))
        lines.append(_row([f"**{g.arm}**", f"{len(g.runs)} ({seeds})", *cells]))
    for key, name in BASELINE_ROWS:
        # same images per seed; seeds in order whatever order the sweep dirs listed them
        per_seed = dict(sorted((r.seed, r.baselines[key]) for r in records if key in r.baselines))
        if per_seed:
            scored = list(per_seed.values())
            cells = [format_cell([m[k] for m in scored if k in m], DIGITS) for k, _ in cols]
            lines.append(_row([name, f"{len(scored)} ({','.join(str(s) for s in per_seed)})", *cells]))
    return "\n".join(lines)


def difference_table(groups: Sequence[Group]) -> str | None:
    """Each arm minus `base`, paired by seed: mean [95% interval] in points, and what moved. None without a base
    or without another arm (a table of headers only says nothing)."""
    base = next((g for g in groups if g.arm == BASE_ARM), None)
    if base is None or len(groups) < 2:
        return None
    return _pairs_table([(g, base) for g in groups if g is not base], groups, "arm − base", name_control=False)


def comparison_table(groups: Sequence[Group], comparisons: Sequence[Comparison], method: str) -> str | None:
    """The asked-for `arm − control` rows whose two arms are among `groups` (one method's); None when none is."""
    by_arm = {g.arm: g for g in groups}
    pairs = [(by_arm[c.arm], by_arm[c.control]) for c in comparisons
             if c.method in (None, method) and c.arm in by_arm and c.control in by_arm]
    return _pairs_table(pairs, groups, "arm − control", name_control=True) if pairs else None


def _pairs_table(pairs: Sequence[tuple[Group, Group]], groups: Sequence[Group], heading: str, *,
                 name_control: bool) -> str:
    """The rows of differences, then how many intervals exclude 0 next to how many would by chance alone."""
    cols = [(k, t) for k, t in ARM_COLUMNS if any(k in r.metrics for g in groups for r in g.runs)]
    lines = [_row([heading, *[f"Δ {t}" for _, t in cols], "reading"]), "|" + "---|" * (2 + len(cols))]
    every: list[PairedDifference | None] = []
    for arm, control in pairs:
        diffs = [(t, paired_difference({r.seed: r.metrics[k] for r in arm.runs if k in r.metrics},
                                       {r.seed: r.metrics[k] for r in control.runs if k in r.metrics}))
                 for k, t in cols]
        every += [d for _, d in diffs]
        name = f"**{arm.arm}** − {control.arm}" if name_control else f"**{arm.arm}**"
        lines.append(_row([name, *[format_difference(d) for _, d in diffs], reading(diffs)]))
    count = chance_count(every)
    return "\n".join(lines + ([f"\n{count}"] if count else []))


def _hierarchy_plot(dataset: str, method: str, frames: Mapping[str, Sequence], out: StoragePath) -> StoragePath | None:
    from hexray.eval.plots import plot_arm_panels
    from hexray.eval.report import _slug

    return plot_arm_panels(frames, out / "plots" / f"arms_{_slug(dataset, method)}.png",
                           title=f"{method} on {dataset}: what H(i) holds, per arm (mean over seeds)")


def _furthest(frames: list) -> list:
    """The runs that reached the arm's last logged epoch: a trial still going (or paused) would otherwise cut the
    figure's mean curves, which span the epochs all runs logged, at its epoch."""
    last = [float(f["epoch"].max()) if f is not None and "epoch" in f and not f.empty else -1.0 for f in frames]
    return [f for f, e in zip(frames, last, strict=True) if e == max(last, default=-1.0) and e >= 0]


def _at_epoch(frames: Sequence, key: str, epoch: float) -> float | None:
    """Mean over runs of `key`'s last logged value in `epoch`; None unless every run logged it."""
    values = [dict(zip(*per_epoch(f, key), strict=True)).get(epoch) for f in frames]
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def _share(runs: Sequence, epoch: float, key: str, chance: str) -> str:
    got, base = _at_epoch(runs, key, epoch), _at_epoch(runs, chance, epoch)
    return "—" if got is None else f"{100 * got:.1f}" + ("" if base is None else f" ({100 * base:.1f})")


def hierarchy_table(frames: Mapping[str, Sequence]) -> str | None:
    """The numbers the H(i) figure ends on, to quote: at an arm's last epoch, over the seeds that reached it, ε,
    the mean size of H(i), and the share of H(i) with the anchor's class and superclass next to chance (that share
    among all negatives). Arms whose H(i) stayed empty (no threshold) are left out; None if all are."""
    lines = []
    for arm, all_runs in frames.items():
        runs = _furthest(list(all_runs))  # the figure's runs: one still going (or paused) is left out
        logged = [e for f in runs for e in per_epoch(f, "hex/h_size")[0]]
        if not logged:
            continue
        last = max(logged)
        size = _at_epoch(runs, "hex/h_size", last)
        if not size:
            continue  # H(i) empty: nothing to describe
        eps = _at_epoch(runs, "hex/epsilon", last)
        eps_cell = f"{eps:.3f}" if eps is not None and math.isfinite(eps) and eps != 0 else "— (oracle)"
        lines.append(_row([f"**{arm}**", str(len(runs)), f"{last:g}", eps_cell, f"{size:.1f}",
                           _share(runs, last, "hex/purity_class", "hex/chance_class"),
                           _share(runs, last, "hex/purity", "hex/chance_superclass")]))
    if not lines:
        return None
    head = _row(["arm", "seeds", "epoch", "ε", "H(i) size", "H(i) own class % (chance)",
                 "H(i) superclass % (chance)"])
    return "\n".join([head, "|" + "---|" * 7, *lines])


def arm_sections(records: Sequence[RunRecord], out: StoragePath, *, plots: bool = True,
                 link_base: StoragePath | None = None, comparisons: Sequence[Comparison] = ()) -> list[str]:
    """Markdown lines for every (dataset, method) with armed runs; one table per scoring setting, never mixed.
    Plot links are relative to `link_base` (default `out`); `comparisons` add arm − control tables."""
    by_pair: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        method = str(r.get("method.name")) + ("+SEM" if r.get("sem.enabled") else "")
        by_pair[(str(r.get("data.dataset")), method)].append(r)
    lines: list[str] = []
    for (dataset, method), recs in sorted(by_pair.items()):
        for scoring in sorted({r.scoring for r in recs}):
            scored = [r for r in recs if r.scoring == scoring]
            groups = group_runs(scored)
            arms = f"{len(groups)} arm" + ("" if len(groups) == 1 else "s")
            lines += [f"### {dataset}, {method}: {arms}", "", f"Scored by {scoring}. Accuracy in %, "
                      "mean ± sample std over seeds.", "", accuracy_table(groups, scored), ""]
            diff = difference_table(groups)
            if diff:
                lines += ["Paired by seed (same images, order and augmentations): arm − base in points, mean "
                          "[95% t interval over seeds]; ✱ = the interval excludes 0.", "", diff, ""]
            asked = comparison_table(groups, comparisons, method)
            if asked:
                lines += ["Arm against its own control (`--compare`), paired by seed the same way:", "", asked, ""]
        frames = {g.arm: _furthest([read_metrics(r.path) for r in g.runs]) for g in group_runs(recs)}
        if plots:
            path = _hierarchy_plot(dataset, method, frames, out)
            if path is not None:
                rel = path.relative_to(link_base or out)
                lines += [f"![what H(i) holds: {method} on {dataset}]({rel})", ""]
        held = hierarchy_table(frames)
        if held:
            lines += ["What H(i) holds at each arm's last epoch (the figure's end points: mean over the seeds that "
                      "reached it, last logged batch of the epoch; chance = the same share among all negatives):", "",
                      held, ""]
    return lines
