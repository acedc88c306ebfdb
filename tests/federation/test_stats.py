"""Per-site statistics combined at the requester equal NumPy and SciPy on the pooled values.

Three "sites" with unequal sizes; group ``b`` is empty at the second site and group ``c``
is absent there, so every group spans sites unevenly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats
from numpy.typing import NDArray

from jip.errors import Invalid
from jip.federation import (
    Bracket,
    Histogram,
    LeveneCentre,
    OrderSearch,
    approximate_quantile,
    combine_histograms,
    combine_moments,
    combine_summaries,
    count_at_most,
    histogram,
    levene,
    moments,
    pool_counts,
    pooled_medians,
    quantile_from,
    quantile_ranks,
    summarize,
)

Site = Mapping[str, NDArray[np.float64]]
GROUPS = ("a", "b", "c")
REL = 1e-9


def make_sites(seed: int = 7, offset: float = 0.0) -> list[Site]:
    rng = np.random.default_rng(seed)
    return [
        {
            "a": offset + rng.normal(1.1, 0.20, 41),
            "b": offset + rng.normal(0.9, 0.35, 23),
            "c": offset + rng.gamma(2.0, 0.4, 18),
        },
        {"a": offset + rng.normal(1.0, 0.25, 9), "b": np.array([])},
        {
            "a": offset + rng.normal(1.2, 0.22, 30),
            "b": offset + rng.normal(1.0, 0.30, 12),
            "c": offset + rng.gamma(2.5, 0.3, 27),
        },
    ]


def pooled(sites: Sequence[Site], group: str) -> NDArray[np.float64]:
    return np.concatenate([site[group] for site in sites if group in site])


@pytest.fixture
def sites() -> list[Site]:
    return make_sites()


# -- moments, extremes, histograms -----------------------------------------------------
@pytest.mark.parametrize("group", GROUPS)
def test_pooled_moments_equal_numpy_on_the_pooled_values(sites: list[Site], group: str) -> None:
    combined = combine_moments(moments(site[group]) for site in sites if group in site)
    values = pooled(sites, group)
    assert combined.n == values.size
    assert combined.total == pytest.approx(values.sum(), rel=REL)
    assert combined.mean == pytest.approx(values.mean(), rel=REL)
    assert combined.variance(0) == pytest.approx(values.var(ddof=0), rel=REL)
    assert combined.variance(1) == pytest.approx(values.var(ddof=1), rel=REL)


@pytest.mark.parametrize("group", GROUPS)
def test_pooled_extremes_equal_numpy(sites: list[Site], group: str) -> None:
    combined = combine_summaries(summarize(site[group]) for site in sites if group in site)
    values = pooled(sites, group)
    assert combined.extremes.minimum == values.min()
    assert combined.extremes.maximum == values.max()


def test_pooled_histogram_equals_numpy_on_declared_edges(sites: list[Site]) -> None:
    edges = [0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6]
    combined = combine_histograms(histogram(site["a"], edges) for site in sites)
    values = pooled(sites, "a")
    expected, _ = np.histogram(values, bins=edges)
    assert combined.counts == tuple(int(c) for c in expected)
    assert combined.below == np.count_nonzero(values < edges[0])
    assert combined.above == np.count_nonzero(values > edges[-1])
    assert combined.n == values.size


def test_histograms_on_other_edges_are_not_combined() -> None:
    with pytest.raises(Invalid, match=r"histograms\[1\]"):
        combine_histograms([histogram([1.0], [0, 2]), histogram([1.0], [0, 3])])


def test_order_of_combination_does_not_change_the_result(sites: list[Site]) -> None:
    parts = [moments(site["a"]) for site in sites]
    forward, backward = combine_moments(parts), combine_moments(parts[::-1])
    assert forward.n == backward.n
    assert forward.m2 == pytest.approx(backward.m2, rel=1e-13)


# -- edge cases -------------------------------------------------------------------------
def test_no_values_give_n_zero_a_neutral_mean_and_no_variance() -> None:
    empty = summarize([])
    # mean 0.0, not NaN: it travels as a finite number and is neutral when combined
    assert (empty.n, empty.moments.mean, empty.moments.m2) == (0, 0.0, 0.0)
    assert math.isnan(empty.moments.variance(0)) and math.isnan(empty.moments.variance(1))
    assert empty.extremes.minimum is None and empty.extremes.maximum is None
    assert combine_moments([empty.moments, moments([2.0, 4.0])]) == moments([2.0, 4.0])


def test_one_value_has_variance_zero_and_no_sample_variance() -> None:
    single = moments([3.5])
    assert single.mean == 3.5 and single.variance(0) == 0.0
    assert math.isnan(single.variance(1))  # as numpy.var(ddof=1) of one value


def test_constant_data_have_variance_exactly_zero() -> None:
    parts = [moments(np.full(n, 0.1)) for n in (3, 7, 11)]
    combined = combine_moments(parts)
    assert combined.m2 == 0.0 and combined.variance(1) == 0.0
    assert combined.mean == pytest.approx(0.1, rel=1e-15)


def test_huge_offsets_keep_the_variance_where_sums_of_squares_lose_it() -> None:
    sites = make_sites(offset=1e9)
    values = pooled(sites, "a")
    combined = combine_moments(moments(site["a"]) for site in sites)
    assert combined.mean == pytest.approx(values.mean(), rel=REL)
    assert combined.variance(1) == pytest.approx(values.var(ddof=1), rel=REL)
    # the textbook Σx² − (Σx)²/n on the same data is off by orders of magnitude
    naive = (np.sum(values**2) - np.sum(values) ** 2 / values.size) / (values.size - 1)
    assert abs(naive / values.var(ddof=1) - 1) > 1


def test_non_finite_values_are_refused() -> None:
    with pytest.raises(Invalid, match="finite"):
        moments([1.0, math.nan])


# -- exact order statistics by count queries --------------------------------------------
def ask_sites(
    sites: Sequence[Site],
) -> Callable[[Mapping[str, Sequence[float]]], dict[str, list[int]]]:
    """Every site answers every request, as the site agent will; the requester pools."""

    def ask(request: Mapping[str, Sequence[float]]) -> dict[str, list[int]]:
        return pool_counts(
            {g: count_at_most(site[g], t) for g, t in request.items() if g in site}
            for site in sites
        )

    return ask


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_median_by_bisection_equals_numpy_median_exactly(seed: int) -> None:
    sites = make_sites(seed)
    n = {g: pooled(sites, g).size for g in GROUPS}
    assert {n["a"] % 2, n["b"] % 2, n["c"] % 2} == {0, 1}  # odd and even counts
    medians = pooled_medians(n, ask_sites(sites))
    for group in GROUPS:
        assert medians[group] == np.median(pooled(sites, group))


def test_median_with_ties_and_an_even_count_is_the_mean_of_both_middle_values() -> None:
    sites = [{"g": np.array([1.0, 2.0, 2.0, 7.0])}, {"g": np.array([2.0, 3.0, 9.0, 9.0])}]
    assert pooled_medians({"g": 8}, ask_sites(sites))["g"] == 2.5
    sites = [{"g": np.array([5.0, 5.0])}, {"g": np.array([5.0, 5.0, 1.0, 8.0])}]
    assert pooled_medians({"g": 6}, ask_sites(sites))["g"] == 5.0


def test_median_search_ends_within_sixteen_rounds_over_all_doubles() -> None:
    sites = make_sites(offset=1e9)
    n = {g: pooled(sites, g).size for g in GROUPS}
    search = OrderSearch({g: (n[g], (n[g] // 2, n[g] // 2 + 1)) for g in GROUPS}, fanout=15)
    ask, rounds = ask_sites(sites), 0
    while not search.done:
        search.feed(ask(search.request()))
        rounds += 1
    assert rounds <= 16
    for group in GROUPS:
        ordered = np.sort(pooled(sites, group))
        found = search.values()[group]
        assert found[n[group] // 2] == ordered[n[group] // 2 - 1]


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_exact_quantile_from_order_statistics_equals_numpy(sites: list[Site], q: float) -> None:
    values = pooled(sites, "a")
    n = values.size
    ranks = quantile_ranks(n, q)
    bracket = {"a": Bracket(float(values.min()), float(values.max()))}
    search = OrderSearch({"a": (n, ranks)}, brackets=bracket)
    ask = ask_sites(sites)
    while not search.done:
        search.feed(ask(search.request()))
    assert quantile_from(n, q, search.values()["a"]) == np.quantile(values, q)


def test_a_rank_outside_the_group_is_refused() -> None:
    with pytest.raises(Invalid, match=r"rank 4 is outside 1\.\.3"):
        OrderSearch({"g": (3, (4,))})


# -- approximate quantiles ---------------------------------------------------------------
def test_histogram_quantile_says_approximate_and_brackets_the_exact_one(sites: list[Site]) -> None:
    values = pooled(sites, "a")
    edges = list(np.linspace(0.0, 2.5, 26))
    combined = combine_histograms(histogram(site["a"], edges) for site in sites)
    for q in (0.05, 0.5, 0.95):
        estimate = approximate_quantile(combined, q)
        assert estimate.approximate is True
        assert estimate.lower is not None and estimate.upper is not None
        assert estimate.lower <= np.quantile(values, q) <= estimate.upper
        assert estimate.estimate is not None
        assert estimate.lower <= estimate.estimate <= estimate.upper


def test_histogram_quantile_outside_the_edges_has_no_estimate() -> None:
    h = Histogram((0.0, 1.0), (1,), below=5, above=0)
    estimate = approximate_quantile(h, 0.1)
    assert estimate.estimate is None and estimate.lower is None and estimate.upper == 0.0


# -- Levene and Brown–Forsythe -----------------------------------------------------------
@pytest.mark.parametrize("centre", [LeveneCentre.MEAN, LeveneCentre.MEDIAN])
@pytest.mark.parametrize("seed", [7, 11])
def test_levene_across_sites_equals_scipy_on_the_pooled_values(
    centre: LeveneCentre, seed: int
) -> None:
    sites = make_sites(seed)
    result = levene(sites, centre)
    expected = scipy.stats.levene(*(pooled(sites, g) for g in GROUPS), center=centre.value)
    assert result.groups == GROUPS
    assert result.statistic == pytest.approx(expected.statistic, rel=REL)
    assert result.pvalue == pytest.approx(expected.pvalue, rel=REL)
    assert result.n == tuple(pooled(sites, g).size for g in GROUPS)
    assert (result.df_between, result.df_within) == (2, sum(result.n) - 3)


def test_brown_forsythe_centres_are_the_pooled_medians(sites: list[Site]) -> None:
    result = levene(sites, LeveneCentre.MEDIAN)
    assert result.centres == tuple(np.median(pooled(sites, g)) for g in GROUPS)


def test_levene_at_huge_offsets_median_equals_scipy(sites: list[Site]) -> None:
    shifted = make_sites(offset=1e9)
    result = levene(shifted, LeveneCentre.MEDIAN)
    expected = scipy.stats.levene(*(pooled(shifted, g) for g in GROUPS), center="median")
    assert result.statistic == pytest.approx(expected.statistic, rel=REL)
    assert result.pvalue == pytest.approx(expected.pvalue, rel=REL)


def exact_levene_mean(groups: Sequence[NDArray[np.float64]]) -> float:
    """W in rational arithmetic on the pooled doubles: the truth both are measured by."""
    deviations = []
    for g in groups:
        x = [Fraction(float(v)) for v in g]
        centre = sum(x, Fraction(0)) / len(x)
        deviations.append([abs(v - centre) for v in x])
    big_n, k = sum(len(z) for z in deviations), len(deviations)
    means = [sum(z, Fraction(0)) / len(z) for z in deviations]
    grand = sum((sum(z, Fraction(0)) for z in deviations), Fraction(0)) / big_n
    between = sum(len(z) * (m - grand) ** 2 for z, m in zip(deviations, means, strict=True))
    within = sum(sum((v - m) ** 2 for v in z) for z, m in zip(deviations, means, strict=True))
    return float(Fraction(big_n - k, k - 1) * between / within)


def test_levene_at_huge_offsets_mean_keeps_every_digit() -> None:
    shifted = make_sites(offset=1e9)
    groups = [pooled(shifted, g) for g in GROUPS]
    result = levene(shifted, LeveneCentre.MEAN)
    assert result.statistic == pytest.approx(exact_levene_mean(groups), rel=1e-12)
    # SciPy's own mean centre is rounded at 1e9 (half an ulp, 6e-8, against a spread of
    # ~0.3), so it is compared where it is exact: on the values shifted back by the
    # offset (x − 1e9 is exact for these doubles)
    reference = scipy.stats.levene(*(g - 1e9 for g in groups), center="mean")
    assert result.statistic == pytest.approx(reference.statistic, rel=REL)
    assert result.pvalue == pytest.approx(reference.pvalue, rel=REL)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_levene_on_constant_groups_is_nan_as_in_scipy() -> None:
    sites = [{"a": np.full(4, 1.0), "b": np.full(3, 2.0)}, {"a": np.full(2, 1.0)}]
    result = levene(sites, LeveneCentre.MEAN)
    expected = scipy.stats.levene(np.full(6, 1.0), np.full(3, 2.0))
    assert math.isnan(result.statistic) and math.isnan(expected.statistic)
    assert math.isnan(result.pvalue)


def test_levene_needs_two_groups_with_values() -> None:
    with pytest.raises(Invalid, match="at least two groups"):
        levene([{"a": np.arange(5.0)}], LeveneCentre.MEAN)
    with pytest.raises(Invalid, match="b: no site holds"):
        levene([{"a": np.arange(5.0), "b": np.array([])}], LeveneCentre.MEDIAN)
