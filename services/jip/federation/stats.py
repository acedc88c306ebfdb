"""Per-site sufficient statistics and their exact combination at the requester.

A site computes a small summary of its own values (:func:`summarize`, :func:`histogram`);
only the summary leaves the site, after the disclosure checks. The requester combines the
summaries of every site into the pooled result, which equals the computation on the
pooled values to floating-point precision (the harmonisation study compares sites by
exactly these numbers, so "close" is not enough).

Why (n, x̄, M2) and not (n, Σx, Σx²): the textbook Σx² − (Σx)²/n cancels
catastrophically when the mean is large against the spread (ADC values of 1e-3 mm²/s
stored as 1e9 + noise lose every digit). Chan, Golub & LeVeque's pairwise update keeps
the sum of squared deviations M2 = Σ(x − x̄)² per part and adds the cross term, which is
stable (Chan, Golub, LeVeque, "Algorithms for computing the sample variance", The
American Statistician 37(3), 1983, eq. 2.1).

Quantiles from histograms are approximate and their type says so
(:class:`QuantileEstimate`); exact order statistics come from count queries
(:mod:`jip.federation.order`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from jip.errors import Invalid


def finite_values(values: ArrayLike, what: str = "values") -> NDArray[np.float64]:
    """The values as a flat float64 array; Invalid when one is NaN or infinite, since
    every summary below would silently turn into NaN otherwise."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(array)):
        raise Invalid(f"{what}: every value must be a finite number (found NaN or infinity)")
    return array


# -- means and moments --------------------------------------------------------------------
# A mean far from zero (1e9 + noise) is a double rounded by up to half an ulp (6e-8 at
# 1e9), which is large against the noise. Chan's update needs δ = x̄_b − x̄_a exact to the
# noise's precision, and Levene's mean centre does too; so a mean travels as the double
# x̄ plus its rounding error e (exact mean ≈ x̄ + e, a "double-double"), and the pooling
# works in a frame shifted to the first part's mean, where differences are small and exact.


@dataclass(frozen=True)
class Mean:
    """Count and mean of one part (all a group's centre needs), the mean as x̄ + error."""

    n: int
    mean: float  # 0.0 for an empty part (neutral in the combination, finite on the wire)
    error: float = 0.0

    @property
    def total(self) -> float:
        """Σx = n · x̄."""
        return self.n * (self.mean + self.error)


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics for mean and variance: n, x̄ (+ its rounding error) and
    M2 = Σ(x − x̄)²."""

    n: int
    mean: float  # 0.0 for an empty part
    m2: float
    mean_error: float = 0.0

    @property
    def total(self) -> float:
        """Σx = n · x̄."""
        return self.n * (self.mean + self.mean_error)

    def variance(self, ddof: int = 0) -> float:
        """M2 / (n − ddof), as ``numpy.var(x, ddof=ddof)``; NaN when n ≤ ddof."""
        return self.m2 / (self.n - ddof) if self.n > ddof else math.nan


EMPTY_MOMENTS = Moments(0, 0.0, 0.0)


def _two_sum(big: float, small: float) -> tuple[float, float]:
    """hi + lo = big + small exactly, hi the rounded sum (Dekker's Fast2Sum, |big| ≥ |small|)."""
    hi = big + small
    return hi, small - (hi - big)


def mean_of(values: ArrayLike) -> Mean:
    """(n, x̄, e) of one site's values: x̄₀ = Σx / n, then one correction step
    c = Σ(x − x̄₀) / n (exact differences, so constant data get their value back) and
    x̄ + e = x̄₀ + c split by Fast2Sum. Sums are ``math.fsum`` (correctly rounded)."""
    x = finite_values(values)
    n = int(x.size)
    if n == 0:
        return Mean(0, 0.0)
    rough = math.fsum(x) / n
    mean, error = _two_sum(rough, math.fsum(x - rough) / n)
    return Mean(n, mean, error)


def moments(values: ArrayLike) -> Moments:
    """(n, x̄, M2, e) of one site's values; M2 by the corrected two-pass algorithm,
    Σd² − (Σd)²/n with d = x − x̄ (Chan, Golub, LeVeque 1983, eq. 1.7), which does not
    depend on the rounding of x̄."""
    x = finite_values(values)
    found = mean_of(x)
    if found.n == 0:
        return EMPTY_MOMENTS
    d = x - found.mean
    m2 = math.fsum(d * d) - math.fsum(d) ** 2 / found.n
    return Moments(found.n, found.mean, max(m2, 0.0), found.error)


def _pool(parts: Iterable[tuple[int, float, float, float]]) -> tuple[int, float, float, float]:
    """Chan et al.'s pairwise update over (n, x̄, e, M2) parts: n = n_a + n_b,
    δ = x̄_b − x̄_a, x̄ = x̄_a + δ · n_b / n, M2 = M2_a + M2_b + δ² · n_a n_b / n (Chan,
    Golub, LeVeque 1983, eq. 2.1), in the frame shifted to the first part's x̄ so that δ
    keeps the noise's digits; the pooled x̄ + e comes back out of the frame by Fast2Sum."""
    n, offset, m2, frame = 0, 0.0, 0.0, None
    for count, mean, error, part_m2 in parts:
        if count < 0 or part_m2 < 0:
            raise Invalid(f"moments: n and M2 must not be negative, got n={count}, M2={part_m2}")
        if count == 0:
            continue
        if frame is None:
            frame = mean
        delta = ((mean - frame) + error) - offset
        pooled = n + count
        m2 += part_m2 + delta * delta * n * count / pooled
        offset += delta * count / pooled
        n = pooled
    if frame is None:
        return 0, 0.0, 0.0, 0.0
    mean, error = _two_sum(frame, offset) if abs(frame) >= abs(offset) else _two_sum(offset, frame)
    return n, mean, error, m2


def combine_moments(parts: Iterable[Moments]) -> Moments:
    """The pooled (n, x̄, M2, e) of several parts (see :func:`_pool`); empty parts are
    neutral, so a site without a group's values sends n = 0."""
    n, mean, error, m2 = _pool((p.n, p.mean, p.mean_error, p.m2) for p in parts)
    return Moments(n, mean, m2, error)


def combine_means(parts: Iterable[Mean]) -> Mean:
    """The pooled (n, x̄, e): the same update without M2."""
    n, mean, error, _ = _pool((p.n, p.mean, p.error, 0.0) for p in parts)
    return Mean(n, mean, error)


# -- extremes -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Extremes:
    """Minimum and maximum; both None for an empty part (there is no value to name)."""

    minimum: float | None
    maximum: float | None


def extremes(values: ArrayLike) -> Extremes:
    """The site's smallest and largest value (each is one record's value: the site
    policy decides whether they may leave)."""
    x = finite_values(values)
    if x.size == 0:
        return Extremes(None, None)
    return Extremes(float(x.min()), float(x.max()))


def combine_extremes(parts: Iterable[Extremes]) -> Extremes:
    """min of the minima, max of the maxima, ignoring empty parts."""
    listed = list(parts)
    lows = [p.minimum for p in listed if p.minimum is not None]
    highs = [p.maximum for p in listed if p.maximum is not None]
    return Extremes(min(lows) if lows else None, max(highs) if highs else None)


@dataclass(frozen=True)
class Summary:
    """What the ``sufficient_stats`` output of one site (or the pool) holds."""

    moments: Moments
    extremes: Extremes

    @property
    def n(self) -> int:
        return self.moments.n


def summarize(values: ArrayLike) -> Summary:
    """Moments and extremes of one site's values (site side)."""
    x = finite_values(values)
    return Summary(moments(x), extremes(x))


def combine_summaries(parts: Iterable[Summary]) -> Summary:
    """The pooled summary: moments by Chan's update, extremes by min/max."""
    listed = list(parts)
    return Summary(
        combine_moments(p.moments for p in listed),
        combine_extremes(p.extremes for p in listed),
    )


# -- histograms ---------------------------------------------------------------------------
def check_edges(edges: Sequence[float], what: str = "edges") -> tuple[float, ...]:
    """Declared bin edges: at least two, finite, strictly increasing (Invalid otherwise)."""
    checked = tuple(float(e) for e in edges)
    if len(checked) < 2:
        raise Invalid(f"{what}: at least two bin edges are needed, got {len(checked)}")
    if not all(math.isfinite(e) for e in checked):
        raise Invalid(f"{what}: every bin edge must be a finite number")
    if any(b <= a for a, b in pairwise(checked)):
        raise Invalid(f"{what}: bin edges must increase strictly")
    return checked


@dataclass(frozen=True)
class Histogram:
    """Counts on declared edges, as ``numpy.histogram`` (bins half-open [a, b), the last
    closed), plus the values below the first edge and above the last, so that
    ``below + Σcounts + above = n`` and quantiles know where every value went."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    below: int = 0
    above: int = 0

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.edges) - 1:
            raise Invalid(
                f"histogram: {len(self.edges)} edges need {len(self.edges) - 1} counts, "
                f"got {len(self.counts)}"
            )

    @property
    def n(self) -> int:
        return self.below + sum(self.counts) + self.above


def histogram(values: ArrayLike, edges: Sequence[float]) -> Histogram:
    """One site's histogram on the declared edges (site side)."""
    checked = check_edges(edges)
    x = finite_values(values)
    counts, _ = np.histogram(x, bins=np.asarray(checked))
    below = int(np.count_nonzero(x < checked[0]))
    above = int(np.count_nonzero(x > checked[-1]))
    return Histogram(checked, tuple(int(c) for c in counts), below, above)


def combine_histograms(parts: Iterable[Histogram]) -> Histogram:
    """The pooled histogram: counts add bin by bin (exact); every part must have been
    made on the same declared edges."""
    listed = list(parts)
    if not listed:
        raise Invalid("histograms: nothing to combine")
    edges = listed[0].edges
    for i, part in enumerate(listed):
        if part.edges != edges:
            raise Invalid(f"histograms[{i}]: made on other bin edges than histograms[0]")
    counts = tuple(sum(column) for column in zip(*(p.counts for p in listed), strict=True))
    return Histogram(edges, counts, sum(p.below for p in listed), sum(p.above for p in listed))


# -- approximate quantiles ----------------------------------------------------------------
@dataclass(frozen=True)
class QuantileEstimate:
    """A quantile read off a histogram: ``estimate`` assumes values spread evenly within
    their bin; the true quantile (``numpy.quantile``'s linear definition) lies within
    [lower, upper], the bin bounds. None where it falls below the first edge or above
    the last (the histogram does not know how far out). Always approximate."""

    q: float
    estimate: float | None
    lower: float | None
    upper: float | None
    approximate: Literal[True] = field(default=True, init=False)


def _position(h: Histogram, rank: int) -> tuple[float | None, float | None, float | None]:
    """(estimate, lower, upper) of the 0-based order statistic ``rank``."""
    if rank < h.below:
        return None, None, h.edges[0]
    seen = h.below
    for i, count in enumerate(h.counts):
        if rank < seen + count:
            left, right = h.edges[i], h.edges[i + 1]
            estimate = left + (rank - seen + 0.5) / count * (right - left)
            return estimate, left, right
        seen += count
    return None, h.edges[-1], None


def approximate_quantile(h: Histogram, q: float) -> QuantileEstimate:
    """The q-quantile of the pooled values from their histogram: the order statistics
    at ⌊(n−1)q⌋ and ⌈(n−1)q⌉ are placed evenly within their bins and interpolated
    linearly, as ``numpy.quantile(method="linear")`` interpolates the exact ones."""
    if not 0.0 <= q <= 1.0:
        raise Invalid(f"q: a quantile must be between 0 and 1, got {q}")
    if h.n == 0:
        raise Invalid("histogram: no values, so no quantile")
    position = (h.n - 1) * q
    low, high = math.floor(position), math.ceil(position)
    est_low, lower, _ = _position(h, low)
    est_high, _, upper = _position(h, high)
    if est_low is None or est_high is None:
        return QuantileEstimate(q, None, lower, upper)
    return QuantileEstimate(q, est_low + (position - low) * (est_high - est_low), lower, upper)
