"""Levene's test (centred on the mean) and Brown–Forsythe's (on the median) where the
groups span sites: the harmonisation study of the JIP paper compares ADC spread across
sites and protocol eras with exactly this test.

The statistic (Levene 1960; Brown & Forsythe 1974; as ``scipy.stats.levene``):

    Z_ij = |x_ij − c_i|,  c_i the mean (Levene) or the median (Brown–Forsythe) of group i
    W = (N − k)/(k − 1) · Σ_i n_i (Z̄_i − Z̄)² / Σ_i Σ_j (Z_ij − Z̄_i)²
    p = F.sf(W; k − 1, N − k)

Two rounds, because c_i needs every site's values before any Z can be formed:

1. centres. Each site sends per group (n, x̄) (:func:`group_means`); the requester pools
   them into each group's mean (:func:`pooled_means`). The median comes from count
   queries (:mod:`jip.federation.order`), exact to the data's values.
2. deviations. Each site gets the centres and sends per group the moments of Z
   (:func:`deviation_moments`): (n, Z̄, M2_Z). Pooled with Chan's update, they give
   Z̄_i and Σ_j (Z_ij − Z̄_i)² = M2_i without a sum of squares
   (:func:`levene_from_deviations`).

Precision: W equals the pooled computation to about 1e-15 relative. Far from zero
(1e9 + noise) a mean rounded to a double is off by half an ulp (6e-8), which moves W by
1e-8 relative at 1e9 ± 0.3 (SciPy's own centre does); so the mean centre travels as
value + rounding error (:class:`Centre`) and Z = |(x − value) − error| keeps every digit.
The median centre is what ``numpy.median`` gives: a data value or the rounded mean of two.

Groups are labels the job declares (say ``"pz/3T/before"``); a site that has no value of
a group sends n = 0 for it, or leaves it out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from jip.errors import Invalid
from jip.federation.order import Bracket, count_at_most, pool_counts, pooled_medians
from jip.federation.stats import (
    Mean,
    Moments,
    combine_means,
    combine_moments,
    finite_values,
    mean_of,
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


class Centre(NamedTuple):
    """A group's centre as value + rounding error (error 0 for a median)."""

    value: float
    error: float = 0.0


def group_means(groups: GroupValues) -> dict[str, Mean]:
    """Round 1 at a site: (n, x̄) per group."""
    return {group: mean_of(finite_values(values, group)) for group, values in groups.items()}


def pooled_means(parts: Iterable[Mapping[str, Mean]]) -> dict[str, Centre]:
    """Round 1 at the requester: each group's pooled mean, as a :class:`Centre`."""
    by_group: dict[str, list[Mean]] = {}
    for part in parts:
        for group, mean in part.items():
            by_group.setdefault(group, []).append(mean)
    centres = {}
    for group, means in by_group.items():
        pooled = combine_means(means)
        if pooled.n == 0:
            raise Invalid(f"{group}: no site holds a value of this group")
        centres[group] = Centre(pooled.mean, pooled.error)
    return centres


def deviation_moments(groups: GroupValues, centres: Mapping[str, Centre]) -> dict[str, Moments]:
    """Round 2 at a site: per group the moments (n, Z̄, M2_Z) of Z = |(x − c) − e| (a
    group without a centre is a protocol error: the requester names every group)."""
    found = {}
    for group, values in groups.items():
        if group not in centres:
            raise Invalid(f"{group}: no centre was sent for this group")
        x = finite_values(values, group)
        value, error = centres[group]
        found[group] = moments(np.abs((x - value) - error))
    return found


def levene_from_deviations(
    parts: Iterable[Mapping[str, Moments]],
    centres: Mapping[str, Centre],
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
    grand = math.fsum(m.n * m.mean for m in pooled) / big_n
    between = math.fsum(m.n * (m.mean - grand) ** 2 for m in pooled)
    within = math.fsum(m.m2 for m in pooled)
    if within > 0:
        statistic = (big_n - k) / (k - 1) * between / within
    else:
        statistic = math.inf if between > 0 else math.nan
    from scipy.stats import f as f_distribution  # scipy only where a p-value is asked

    pvalue = float(f_distribution.sf(statistic, k - 1, big_n - k))
    return LeveneResult(
        centre=centre,
        statistic=statistic,
        pvalue=pvalue,
        df_between=k - 1,
        df_within=big_n - k,
        groups=groups,
        centres=tuple(centres[g].value for g in groups),
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
    round1 = [group_means(site) for site in sites]
    if centre is LeveneCentre.MEAN:
        centres = pooled_means(round1)
    else:
        n_by_group: dict[str, int] = {}
        for part in round1:
            for group, mean in part.items():
                n_by_group[group] = n_by_group.get(group, 0) + mean.n
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

        medians = pooled_medians(n_by_group, ask, brackets=brackets, fanout=fanout)
        centres = {group: Centre(median) for group, median in medians.items()}
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
