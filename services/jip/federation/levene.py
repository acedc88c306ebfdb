"""Levene's test (centred on the mean) and Brown–Forsythe's (on the median) where the
groups span sites: the harmonisation study of the JIP paper compares ADC spread across
sites and protocol eras with exactly this test.

The statistic (Levene 1960; Brown & Forsythe 1974; as ``scipy.stats.levene``):

    Z_ij = |x_ij − c_i|,  c_i the mean (Levene) or the median (Brown–Forsythe) of group i
    W = (N − k)/(k − 1) · Σ_i n_i (Z̄_i − Z̄)² / Σ_i Σ_j (Z_ij − Z̄_i)²
    p = F.sf(W; k − 1, N − k)

Two rounds, because c_i needs every site's values before any Z can be formed:

1. centres. Each site sends per group (n, Σx) (:func:`group_totals`); the requester pools
   them, and the group mean is Σx / n exactly (:func:`pooled_means`). The median comes
   from count queries (:mod:`jip.federation.order`), exact to the data's values.
2. deviations. Each site gets the centres and sends per group the moments of Z
   (:func:`deviation_moments`): (n, ΣZ, M2_Z). Pooled with Chan's update, they give
   Z̄_i and Σ_j (Z_ij − Z̄_i)² = M2_i without a sum of squares
   (:func:`levene_from_deviations`).

Precision: W equals the pooled computation to about 1e-15 relative on ordinary data. Far
from zero (1e9 + noise) the mean centre itself is a double, rounded by half an ulp of the
mean, which moves W by about that over the spread (1e-8 relative at 1e9 ± 3); SciPy's
centre carries the same rounding. The median centre is a data value, hence exact.

Groups are labels the job declares (say ``"pz/3T/before"``); a site that has no value of
a group sends n = 0 for it, or leaves it out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import f as f_distribution

from jip.errors import Invalid
from jip.federation.order import Bracket, count_at_most, pool_counts, pooled_medians
from jip.federation.stats import (
    Moments,
    Total,
    combine_moments,
    combine_totals,
    finite_values,
    moments,
)

GroupValues = Mapping[str, ArrayLike]
"""One site's values, per group label."""


class LeveneCentre(StrEnum):
    """What each group's deviations are measured from."""

    MEAN = "mean"  # Levene (1960)
    MEDIAN = "median"  # Brown & Forsythe (1974), robust to skewed data


@dataclass(frozen=True)
class LeveneResult:
    """W, its p value and what went into them, per group in the order of ``groups``."""

    centre: LeveneCentre
    statistic: float
    pvalue: float
    df_between: int  # k − 1
    df_within: int  # N − k
    groups: tuple[str, ...]
    centres: tuple[float, ...]
    n: tuple[int, ...]
    mean_deviation: tuple[float, ...]  # Z̄_i


def group_totals(groups: GroupValues) -> dict[str, Total]:
    """Round 1 at a site: (n, Σx) per group (Σ correctly rounded)."""
    totals = {}
    for group, values in groups.items():
        x = finite_values(values, group)
        totals[group] = Total(int(x.size), math.fsum(x))
    return totals


def pooled_means(parts: Iterable[Mapping[str, Total]]) -> dict[str, float]:
    """Round 1 at the requester: each group's mean Σx / n from the sites' pooled totals."""
    by_group: dict[str, list[Total]] = {}
    for part in parts:
        for group, total in part.items():
            by_group.setdefault(group, []).append(total)
    means = {}
    for group, totals in by_group.items():
        pooled = combine_totals(totals)
        if pooled.n == 0:
            raise Invalid(f"{group}: no site holds a value of this group")
        means[group] = pooled.mean
    return means


def deviation_moments(groups: GroupValues, centres: Mapping[str, float]) -> dict[str, Moments]:
    """Round 2 at a site: per group the moments (n, ΣZ, M2_Z) of Z = |x − c| (a group
    without a centre is a protocol error: the requester names every group it tests)."""
    found = {}
    for group, values in groups.items():
        if group not in centres:
            raise Invalid(f"{group}: no centre was sent for this group")
        x = finite_values(values, group)
        found[group] = moments(np.abs(x - centres[group]))
    return found


def levene_from_deviations(
    parts: Iterable[Mapping[str, Moments]],
    centres: Mapping[str, float],
    centre: LeveneCentre,
) -> LeveneResult:
    """Round 2 at the requester: W and p from the sites' moments of Z (module docstring).

    Σ_i n_i (Z̄_i − Z̄)² is formed from the pooled group means and Σ_i Σ_j (Z_ij − Z̄_i)²
    is Σ_i M2_i. As SciPy: W is NaN when every deviation equals its group's mean
    deviation and the group means agree (0/0), infinite when only the latter fails."""
    by_group: dict[str, list[Moments]] = {g: [] for g in centres}
    for part in parts:
        for group, m in part.items():
            if group not in by_group:
                raise Invalid(f"{group}: a site answered for a group that was not asked")
            by_group[group].append(m)
    groups = tuple(sorted(by_group))
    pooled = [combine_moments(by_group[g]) for g in groups]
    empty = [g for g, m in zip(groups, pooled, strict=True) if m.n == 0]
    if empty:
        raise Invalid(f"{empty[0]}: no site holds a value of this group")
    k, big_n = len(groups), sum(m.n for m in pooled)
    if k < 2:
        raise Invalid(f"levene: needs at least two groups, got {k}")
    if big_n <= k:
        raise Invalid(f"levene: needs more values ({big_n}) than groups ({k})")
    grand = math.fsum(m.total for m in pooled) / big_n
    between = math.fsum(m.n * (m.mean - grand) ** 2 for m in pooled)
    within = math.fsum(m.m2 for m in pooled)
    if within > 0:
        statistic = (big_n - k) / (k - 1) * between / within
    else:
        statistic = math.inf if between > 0 else math.nan
    pvalue = float(f_distribution.sf(statistic, k - 1, big_n - k))
    return LeveneResult(
        centre=centre,
        statistic=statistic,
        pvalue=pvalue,
        df_between=k - 1,
        df_within=big_n - k,
        groups=groups,
        centres=tuple(centres[g] for g in groups),
        n=tuple(m.n for m in pooled),
        mean_deviation=tuple(m.mean for m in pooled),
    )


def levene(
    sites: Sequence[GroupValues],
    centre: LeveneCentre = LeveneCentre.MEDIAN,
    *,
    fanout: int = 15,
) -> LeveneResult:
    """The whole two-round protocol with every site in this process: the reference the
    federated run must equal, and the shape a hub's rounds follow (round 1 totals,
    median searches when centred on the median, round 2 deviations)."""
    round1 = [group_totals(site) for site in sites]
    if centre is LeveneCentre.MEAN:
        centres = pooled_means(round1)
    else:
        n_by_group: dict[str, int] = {}
        for part in round1:
            for group, total in part.items():
                n_by_group[group] = n_by_group.get(group, 0) + total.n
        empty = sorted(g for g, n in n_by_group.items() if n == 0)
        if empty:
            raise Invalid(f"{empty[0]}: no site holds a value of this group")
        brackets = _brackets(sites)

        def ask(request: Mapping[str, Sequence[float]]) -> dict[str, list[int]]:
            return pool_counts(
                {
                    g: count_at_most(site[g], t) if g in site else [0] * len(t)
                    for g, t in request.items()
                }
                for site in sites
            )

        centres = pooled_medians(n_by_group, ask, brackets=brackets, fanout=fanout)
    round2 = [deviation_moments(site, centres) for site in sites]
    return levene_from_deviations(round2, centres, centre)


def _brackets(sites: Sequence[GroupValues]) -> dict[str, Bracket]:
    """Pooled extremes per group (what a released ``sufficient_stats`` would give)."""
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for site in sites:
        for group, values in site.items():
            x = finite_values(values, group)
            if x.size:
                lows[group] = min(lows.get(group, math.inf), float(x.min()))
                highs[group] = max(highs.get(group, -math.inf), float(x.max()))
    return {g: Bracket(lows[g], highs[g]) for g in lows}
