"""Exact order statistics (medians, quantiles) of values spread over sites, by count queries.

No site can send its values, and a median does not combine from per-site medians. What
does combine is a count: "how many of your values are ≤ t" summed over the sites is the
pooled count. The requester searches, per group, for the r-th smallest pooled value: the
smallest t whose pooled count reaches r.

Why it is exact: the search runs over the doubles themselves, ordered as integers
(:func:`float_key`), not over an interval of reals to some tolerance. It stops when the
bracket (lo, hi] holds a single double, with count(lo) < r ≤ count(hi); then hi is a value
some site holds, the r-th smallest, bit for bit. Each round asks ``fanout`` thresholds
per search, so 64 bits take ⌈64 / log2(fanout + 1)⌉ rounds at most (16 with 15).

The search is sans-I/O: :class:`OrderSearch` says which thresholds to ask
(:meth:`~OrderSearch.request`) and takes the pooled answers (:meth:`~OrderSearch.feed`);
how the question reaches the sites (the hub, a file carried by hand, a test calling
:func:`count_at_most` directly) is the caller's business. Every answer a site gives is a
count, so it passes the same minimum-cell check as any other count before it leaves.

The trade-off that check imposes: a threshold in the tail of one site's values gives a
small count there (or a small complement), and the site refuses. Bracket the search with
released extremes (:class:`Bracket`) and keep ``fanout`` low where sites are small: with
``fanout=1`` every threshold lies between the median and the middle of the bracket (about
52 rounds for values within a few binades); a high fanout takes few rounds but asks in
the tails. A refused count leaves the median unknown, never approximated silently.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.typing import ArrayLike

from jip.errors import Invalid
from jip.federation.stats import finite_values

_MAGNITUDE = 0x7FFFFFFFFFFFFFFF
NEG_INF_KEY = -0x7FF0000000000000  # float_key(-inf): below every finite double
MAX_KEY = 0x7FEFFFFFFFFFFFFF  # float_key(largest finite double)

CountRequest = Mapping[str, Sequence[float]]
"""Per group, the thresholds t to count ``x ≤ t`` at."""
CountAnswer = Mapping[str, Sequence[int]]
"""Per group, the count of values ≤ each requested threshold (same order)."""


def float_key(x: float) -> int:
    """An integer whose order is the order of the doubles (−0.0 and 0.0 share one);
    neighbouring doubles have neighbouring keys, so bisection on keys ends on a double."""
    bits: int = struct.unpack("<q", struct.pack("<d", x))[0]
    return bits if bits >= 0 else -(bits & _MAGNITUDE)


def key_float(key: int) -> float:
    """The double of :func:`float_key`."""
    value: float = struct.unpack("<d", struct.pack("<q", abs(key)))[0]
    return -value if key < 0 else value


def count_at_most(values: ArrayLike, thresholds: Sequence[float]) -> list[int]:
    """Site side: how many of the values are ≤ each threshold."""
    x = np.sort(finite_values(values))
    return [int(c) for c in np.searchsorted(x, np.asarray(thresholds, float), side="right")]


def pool_counts(answers: Iterable[CountAnswer]) -> dict[str, list[int]]:
    """Requester side: the pooled counts, the sites' answers added group by group and
    threshold by threshold (a site that lacks a group counts 0 there)."""
    pooled: dict[str, list[int]] = {}
    for answer in answers:
        for group, counts in answer.items():
            total = pooled.setdefault(group, [0] * len(counts))
            if len(total) != len(counts):
                raise Invalid(f"{group}: sites answered different numbers of thresholds")
            pooled[group] = [a + int(b) for a, b in zip(total, counts, strict=True)]
    return pooled


class _RankSearch:
    """The r-th smallest of n pooled values; invariant count(lo) < r ≤ count(hi)."""

    def __init__(self, rank: int, lo: int, hi: int) -> None:
        self.rank, self.lo, self.hi = rank, lo, hi

    @property
    def done(self) -> bool:
        return self.hi - self.lo <= 1

    def thresholds(self, fanout: int) -> list[int]:
        gap = self.hi - self.lo
        if gap <= 1:
            return []
        if gap - 1 <= fanout:
            return list(range(self.lo + 1, self.hi))
        return sorted({self.lo + gap * j // (fanout + 1) for j in range(1, fanout + 1)})

    def feed(self, counts: Mapping[int, int]) -> None:
        for key in sorted(k for k in counts if self.lo < k < self.hi):
            if counts[key] >= self.rank:
                self.hi = key
                break
            self.lo = key


@dataclass(frozen=True)
class Bracket:
    """Known pooled extremes of a group (e.g. from a released ``sufficient_stats``):
    they shorten the search and keep its thresholds inside the data."""

    minimum: float
    maximum: float


class OrderSearch:
    """Find, per group, the pooled order statistics of the given 1-based ranks.

    ``ranks`` maps a group to (n, ranks): the group's pooled count (from round 1) and
    the ranks wanted. Loop ``request()`` → ask the sites → ``feed(pooled answers)``
    until :attr:`done`; then :meth:`values` holds each rank's value."""

    def __init__(
        self,
        ranks: Mapping[str, tuple[int, Sequence[int]]],
        *,
        brackets: Mapping[str, Bracket] | None = None,
        fanout: int = 15,
    ) -> None:
        if fanout < 1:
            raise Invalid(f"fanout: at least one threshold per round, got {fanout}")
        self.fanout = fanout
        self._searches: dict[str, dict[int, _RankSearch]] = {}
        for group, (n, wanted) in ranks.items():
            lo, hi = NEG_INF_KEY, MAX_KEY
            if brackets and group in brackets:
                lo = float_key(brackets[group].minimum) - 1
                hi = float_key(brackets[group].maximum)
            for rank in wanted:
                if not 1 <= rank <= n:
                    raise Invalid(f"{group}: rank {rank} is outside 1..{n}")
            self._searches[group] = {r: _RankSearch(r, lo, hi) for r in sorted(set(wanted))}
        self._asked: dict[str, list[int]] = {}

    @property
    def done(self) -> bool:
        return all(s.done for group in self._searches.values() for s in group.values())

    def request(self) -> dict[str, list[float]]:
        """The thresholds to ask next, per group (groups already found are left out)."""
        self._asked = {}
        for group, searches in self._searches.items():
            keys = sorted({k for s in searches.values() for k in s.thresholds(self.fanout)})
            if keys:
                self._asked[group] = keys
        return {group: [key_float(k) for k in keys] for group, keys in self._asked.items()}

    def feed(self, answer: CountAnswer) -> None:
        """The pooled counts for the last :meth:`request` (see :func:`pool_counts`)."""
        for group, keys in self._asked.items():
            counts = answer.get(group)
            if counts is None or len(counts) != len(keys):
                raise Invalid(f"{group}: expected {len(keys)} pooled counts")
            if any(b < a for a, b in pairwise(counts)):
                raise Invalid(f"{group}: counts must not fall as the threshold rises")
            by_key = dict(zip(keys, (int(c) for c in counts), strict=True))
            for search in self._searches[group].values():
                search.feed(by_key)
        self._asked = {}

    def values(self) -> dict[str, dict[int, float]]:
        """Per group, each rank's value: a double some site holds (exact)."""
        if not self.done:
            raise Invalid("the order statistics are not found yet: keep asking")
        return {
            group: {rank: key_float(s.hi) for rank, s in searches.items()}
            for group, searches in self._searches.items()
        }


def median_ranks(n: int) -> tuple[int, ...]:
    """The 1-based ranks of the median: the middle one, or both middle ones for even n."""
    if n < 1:
        raise Invalid("median: a group needs at least one value")
    return (n // 2 + 1,) if n % 2 else (n // 2, n // 2 + 1)


def median_from(n: int, at_rank: Mapping[int, float]) -> float:
    """The median as ``numpy.median`` computes it: the middle value, or the mean of the
    two middle values, (a + b) / 2."""
    ranks = median_ranks(n)
    return at_rank[ranks[0]] if len(ranks) == 1 else (at_rank[ranks[0]] + at_rank[ranks[1]]) / 2


def quantile_ranks(n: int, q: float) -> tuple[int, ...]:
    """The 1-based ranks ``numpy.quantile(method="linear")`` interpolates between:
    ⌊h⌋ + 1 and ⌈h⌉ + 1 with h = (n − 1) q (Hyndman & Fan 1996, definition 7)."""
    if n < 1 or not 0.0 <= q <= 1.0:
        raise Invalid(f"quantile: needs n ≥ 1 and 0 ≤ q ≤ 1, got n={n}, q={q}")
    h = (n - 1) * q
    return tuple(sorted({math.floor(h) + 1, math.ceil(h) + 1}))


def quantile_from(n: int, q: float, at_rank: Mapping[int, float]) -> float:
    """The q-quantile from its two order statistics, with NumPy's lerp (a + (b − a) t,
    taken from b's side for t ≥ ½) so that it matches ``numpy.quantile`` to the bit."""
    h = (n - 1) * q
    a, b = at_rank[math.floor(h) + 1], at_rank[math.ceil(h) + 1]
    t = h - math.floor(h)
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


Asker = Callable[[CountRequest], CountAnswer]
"""Puts one count request to every site and returns the pooled answer."""


def pooled_medians(
    n_by_group: Mapping[str, int],
    ask: Asker,
    *,
    brackets: Mapping[str, Bracket] | None = None,
    fanout: int = 15,
) -> dict[str, float]:
    """Drive an :class:`OrderSearch` for each group's median to the end (a convenience
    for callers whose ``ask`` is synchronous: tests, bundles, the local reference)."""
    search = OrderSearch(
        {g: (n, median_ranks(n)) for g, n in n_by_group.items()},
        brackets=brackets,
        fanout=fanout,
    )
    while not search.done:
        search.feed(ask(search.request()))
    found = search.values()
    return {g: median_from(n, found[g]) for g, n in n_by_group.items()}
