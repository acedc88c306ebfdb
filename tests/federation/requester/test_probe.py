"""The centre probe: an exact median search that never asks a site about its tails."""

from __future__ import annotations

import numpy as np
import pytest

from jip.federation.order import (
    Bracket,
    OrderSearch,
    count_at_most,
    median_from,
    median_ranks,
    pool_counts,
)
from jip.federation.requester.probe import CentreProbe, Spread

MIN_CELL = 5


def _ask(sites: list[np.ndarray], thresholds: dict[str, list[float]]) -> dict[str, list[int]]:
    """Each site's counts, held to the minimum cell as a site's disclosure check holds
    them (a count or its complement of 1..4 is refused), then pooled."""
    answers = []
    for values in sites:
        counts = {g: count_at_most(values, t) for g, t in thresholds.items()}
        for found in counts.values():
            for c in found:
                assert not 0 < c < MIN_CELL and not 0 < values.size - c < MIN_CELL, (c, found)
        answers.append(counts)
    return pool_counts(answers)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("skew", [False, True])
def test_the_median_is_exact_and_no_site_is_asked_about_its_tails(seed: int, skew: bool) -> None:
    rng = np.random.default_rng(seed)
    draw = rng.lognormal if skew else rng.normal
    sites = [
        np.round(draw(1.0, 0.5, size) if skew else draw(1600.0, 60.0, size), 1)
        for size in (84, 276, 400)
    ]
    pooled = np.concatenate(sites)
    n = {"g": pooled.size}
    spread = Spread(float(pooled.mean()), float(pooled.std()), Bracket(pooled.min(), pooled.max()))
    probe = CentreProbe(n, {"g": spread})
    rounds = 0
    while not probe.done:
        asked = {g: list(t) for g, t in probe.thresholds().items()}
        probe.feed(_ask(sites, asked))
        rounds += 1
    search = OrderSearch({"g": (n["g"], median_ranks(n["g"]))}, brackets=probe.found(), fanout=15)
    while not search.done:
        search.feed(_ask(sites, search.request()))
    assert median_from(n["g"], search.values()["g"]) == np.median(pooled)
    assert rounds <= 3


def test_a_group_whose_values_are_all_equal_needs_no_probe() -> None:
    probe = CentreProbe({"g": 10}, {"g": Spread(7.0, 0.0, Bracket(7.0, 7.0))})
    assert probe.done and probe.found() == {"g": Bracket(7.0, 7.0)}
