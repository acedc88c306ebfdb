"""Where to start an exact median search so that no site is asked about its tails.

A median search by count queries (:mod:`jip.federation.order`) asks each site "how many
of your values are ≤ t". Bracketed by the pooled extremes, its first thresholds spread
over the whole range, and a threshold near one site's smallest or largest values gives
a count of 1 to 4 there: a small cell, which the site refuses, and with it the round.

Near the centre of the data every site's counts are large. So before the search, one
round asks per group two thresholds around the pooled mean, mean ∓ z·sd (z = ¼ first:
about 40 % and 60 % of each site's values lie below them when the data are roughly
symmetric). When the pooled counts show the median ranks between them, they are the
bracket, and the whole search stays between the two (every later threshold is inside).
Where they do not (skewed data), z grows fourfold and the group is asked again; past
``MAX_Z`` the group falls back to the pooled extremes. Exactness is untouched: the search
still ends on the doubles some site holds; only where it starts changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from jip.federation.order import Bracket, float_key, key_float, median_ranks

FIRST_Z = 0.25
GROWTH = 4.0
MAX_Z = 16.0


@dataclass(frozen=True)
class Spread:
    """A group's pooled mean and standard deviation (from a ``sufficient_stats``
    output), and its extremes when released."""

    mean: float
    sd: float
    extremes: Bracket | None = None


class CentreProbe:
    """Per group, the bracket (lo, hi] around the median ranks, found by count queries
    near the pooled mean (see the module docstring)."""

    def __init__(self, n: Mapping[str, int], spreads: Mapping[str, Spread]) -> None:
        self.n = dict(n)
        self.spreads = dict(spreads)
        self.z: dict[str, float] = {}
        self.brackets: dict[str, Bracket | None] = {}
        for group in self.n:
            spread = spreads[group]
            if spread.sd > 0 and math.isfinite(spread.sd):
                self.z[group] = FIRST_Z
            else:  # all values equal (or one): the extremes are the median already
                self.brackets[group] = spread.extremes

    @property
    def done(self) -> bool:
        return not self.z

    def thresholds(self) -> dict[str, tuple[float, float]]:
        """The two thresholds to ask per group still without a bracket."""
        return {
            group: (self.spreads[group].mean - z * self.spreads[group].sd,
                    self.spreads[group].mean + z * self.spreads[group].sd)
            for group, z in sorted(self.z.items())
        }  # fmt: skip

    def feed(self, pooled: Mapping[str, list[int]]) -> None:
        """The pooled counts ≤ each asked threshold, per group."""
        asked = self.thresholds()
        for group, (low, high) in asked.items():
            below, at_high = pooled[group]
            ranks = median_ranks(self.n[group])
            if below < ranks[0] and at_high >= ranks[-1]:
                # (low, high] as a Bracket: its minimum is the double just above low
                self.brackets[group] = Bracket(key_float(float_key(low) + 1), high)
                del self.z[group]
            elif self.z[group] * GROWTH > MAX_Z:
                self.brackets[group] = self.spreads[group].extremes
                del self.z[group]
            else:
                self.z[group] *= GROWTH

    def found(self) -> dict[str, Bracket]:
        """The brackets found (groups left to their extremes or to none are absent when
        no extremes were released)."""
        return {g: b for g, b in self.brackets.items() if b is not None}
