"""Paired comparisons between arms: differences per seed, their mean and a 95% interval (Student t over the seeds).

Arms run with the same seed see the same images, order and augmentations, so the per-seed difference removes the
seed-to-seed noise the arms share; a difference whose interval covers 0 is "no detectable effect" at that many
seeds, whatever its sign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# two-sided 95% Student-t quantiles t_{0.975, df}; beyond 30 degrees of freedom the normal's 1.96 is within 2%
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclass(frozen=True)
class PairedDifference:
    """Mean of (arm − base) over the seeds both ran, with its 95% interval (None with a single seed)."""

    seeds: tuple
    mean: float
    low: float | None
    high: float | None

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def detectable(self) -> bool:
        """The interval excludes 0 (never with fewer than 2 seeds)."""
        return self.low is not None and (self.low > 0 or self.high < 0)


def paired_difference(arm: Mapping, base: Mapping) -> PairedDifference | None:
    """`arm` and `base` map seed → value; None when they share no seed."""
    seeds = tuple(sorted((s for s in arm if s in base), key=str))
    if not seeds:
        return None
    diffs = [arm[s] - base[s] for s in seeds]
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return PairedDifference(seeds, mean, None, None)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    half = t975(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return PairedDifference(seeds, mean, mean - half, mean + half)


def format_difference(d: PairedDifference | None, scale: float = 100.0) -> str:
    """'+1.2 [+0.3, +2.1]' in points (× `scale`); a single seed shows no interval; none shows '—'."""
    if d is None:
        return "—"
    if d.low is None:
        return f"{scale * d.mean:+.2f} (1 seed)"
    mark = " ✱" if d.detectable else ""
    return f"{scale * d.mean:+.2f} [{scale * d.low:+.2f}, {scale * d.high:+.2f}]{mark}"


def reading(differences: Sequence[tuple[str, PairedDifference | None]], scale: float = 100.0) -> str:
    """One phrase for a row of differences: which metrics moved (interval excludes 0), else no detectable effect."""
    moved = [f"{name} {'up' if d.mean > 0 else 'down'} {abs(scale * d.mean):.2f}"
             for name, d in differences if d is not None and d.detectable]
    known = [d for _, d in differences if d is not None]
    if not known:
        return "—"
    if all(d.low is None for d in known):
        return "one seed: no interval"
    return "; ".join(moved) if moved else "no detectable effect at this scale"


def chance_count(differences: Sequence[PairedDifference | None]) -> str:
    """'k of n intervals exclude 0; by chance alone about m would': many differences at the 95% level give a ✱ or
    two with no effect anywhere, so a reader weighs a lone ✱ against that count. '' when no interval exists."""
    tested = [d for d in differences if d is not None and d.low is not None]
    if not tested:
        return ""
    hits = sum(d.detectable for d in tested)
    return (f"{hits} of {len(tested)} intervals exclude 0; with no effect anywhere, about {0.05 * len(tested):.1f} "
            "would by chance alone (5% each).")
