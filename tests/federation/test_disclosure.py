"""Each disclosure rule passes at its threshold, refuses below it and names the reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jip.federation import (
    DifferencingGuard,
    DisclosurePolicy,
    DominanceRule,
    FieldSpec,
    InMemoryCohortLedger,
    OutputSchema,
    Role,
    Rule,
    SmallCells,
    check_output,
)

POLICY = DisclosurePolicy()  # k = 5, dominance (1, 80 %) and (2, 90 %), cohorts ≥ 10
COUNTS = OutputSchema("sizes", {"all:n": FieldSpec(Role.COUNT)})
BINS = OutputSchema(
    "adc_hist",
    {"all:counts": FieldSpec(Role.COUNT, length=4), "all:below": FieldSpec(Role.COUNT)},
)
SUMS = OutputSchema(
    "adc_stats",
    {
        "all:n": FieldSpec(Role.COUNT),
        "all:mean": FieldSpec(Role.SUM),
        "all:min": FieldSpec(Role.VALUE, nullable=True),
    },
)


# -- minimum cell count -----------------------------------------------------------------
def test_a_count_at_the_threshold_passes() -> None:
    decision = check_output(COUNTS, {"all:n": 5}, POLICY)
    assert decision.allowed and decision.released == {"all:n": 5}


def test_a_count_of_zero_passes() -> None:
    assert check_output(COUNTS, {"all:n": 0}, POLICY).allowed


def test_a_count_below_the_threshold_is_refused_with_its_name() -> None:
    decision = check_output(COUNTS, {"all:n": 4}, POLICY)
    assert not decision.allowed and decision.released is None
    (refusal,) = decision.refusals
    assert refusal.rule is Rule.MIN_CELL and refusal.field == "all:n"
    assert "sizes.all:n" in refusal.reason and "4" in refusal.reason and "5" in refusal.reason


def test_a_small_histogram_bin_refuses_the_whole_output_naming_the_bin() -> None:
    payload = {"all:counts": [7, 3, 0, 12], "all:below": 0}
    decision = check_output(BINS, payload, POLICY)
    assert decision.released is None
    (refusal,) = decision.refusals
    assert (refusal.rule, refusal.field, refusal.index) == (Rule.MIN_CELL, "all:counts", 1)
    assert "adc_hist.all:counts[1]" in refusal.reason


def test_bins_at_the_threshold_pass_unchanged() -> None:
    payload = {"all:counts": [5, 5, 0, 12], "all:below": 5}
    decision = check_output(BINS, payload, POLICY)
    assert decision.allowed and decision.released == payload


def test_suppress_policy_releases_small_bins_as_none_with_a_complement() -> None:
    policy = DisclosurePolicy(small_cells=SmallCells.SUPPRESS)
    decision = check_output(BINS, {"all:counts": [7, 3, 0, 12], "all:below": 0}, policy)
    assert decision.allowed
    # never silently zeroed: the small bin and the smallest other one become None
    assert decision.released == {"all:counts": [None, None, 0, 12], "all:below": 0}
    assert [(s.index, s.complementary) for s in decision.suppressed] == [(1, False), (0, True)]


def test_suppress_policy_still_refuses_a_small_scalar_count() -> None:
    policy = DisclosurePolicy(small_cells=SmallCells.SUPPRESS)
    decision = check_output(COUNTS, {"all:n": 2}, policy)
    assert not decision.allowed and decision.refusals[0].rule is Rule.MIN_CELL


def test_the_threshold_is_configurable() -> None:
    assert not check_output(COUNTS, {"all:n": 9}, DisclosurePolicy(min_cell_count=10)).allowed
    assert check_output(COUNTS, {"all:n": 10}, DisclosurePolicy(min_cell_count=10)).allowed


# -- dominance ---------------------------------------------------------------------------
def stats_payload(values: list[float]) -> dict[str, object]:
    return {"all:n": len(values), "all:mean": float(np.mean(values)), "all:min": min(values)}


def test_a_sum_without_a_dominant_record_passes() -> None:
    values = [1.0] * 10
    assert check_output(SUMS, stats_payload(values), POLICY, {"all:mean": values}).allowed


def test_one_record_at_exactly_eighty_percent_passes() -> None:
    values = [8.0, 0.5, 0.5, 0.5, 0.5]  # 8 / 10 = 80 %; the top two are 85 % < 90 %
    assert check_output(SUMS, stats_payload(values), POLICY, {"all:mean": values}).allowed


def test_one_record_above_eighty_percent_is_refused_with_its_share() -> None:
    values = [81.0, 5.0, 5.0, 5.0, 4.0]
    decision = check_output(SUMS, stats_payload(values), POLICY, {"all:mean": values})
    assert not decision.allowed
    reasons = [r for r in decision.refusals if r.rule is Rule.DOMINANCE]
    assert reasons and "81.0 %" in reasons[0].reason and "(1, 80 %)" in reasons[0].reason
    assert reasons[0].field == "all:mean"


def test_two_records_above_ninety_percent_are_refused() -> None:
    values = [50.0, 45.0, 2.0, 2.0, 1.0]  # top one 50 %, top two 95 %
    decision = check_output(SUMS, stats_payload(values), POLICY, {"all:mean": values})
    (refusal,) = decision.refusals
    assert "2 largest records" in refusal.reason and "(2, 90 %)" in refusal.reason


def test_dominance_rules_are_configurable() -> None:
    values = [81.0, 5.0, 5.0, 5.0, 4.0]
    lenient = DisclosurePolicy(dominance=(DominanceRule(1, 85.0),))
    assert check_output(SUMS, stats_payload(values), lenient, {"all:mean": values}).allowed


def test_a_sum_without_contributions_is_refused() -> None:
    decision = check_output(SUMS, stats_payload([1.0] * 6), POLICY)
    assert decision.refusals[0].rule is Rule.DOMINANCE
    assert "contributions" in decision.refusals[0].reason


# -- schema ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.840.113619.2.55.3.1", "got str"),
        ("2024-03-01", "got str"),
        (math.nan, "got float"),
        (math.inf, "got float"),
        (True, "got bool"),
        (None, "got NoneType"),
        ([1.0], "got list"),
    ],
)
def test_anything_but_a_finite_number_is_refused(value: object, expected: str) -> None:
    payload = {"all:n": 6, "all:mean": value, "all:min": 1.0}
    decision = check_output(SUMS, payload, POLICY, {"all:mean": [1.0] * 6})
    (refusal,) = decision.refusals
    assert refusal.rule is Rule.SCHEMA and refusal.field == "all:mean"
    assert "adc_stats.all:mean" in refusal.reason and expected in refusal.reason


def test_an_undeclared_key_is_refused_by_name() -> None:
    payload = {"all:n": 6, "all:mean": 1.0, "all:min": 1.0, "patient_id": 42}
    decision = check_output(SUMS, payload, POLICY, {"all:mean": [1.0] * 6})
    (refusal,) = decision.refusals
    assert refusal.rule is Rule.SCHEMA and "patient_id: not a declared key" in refusal.reason


def test_a_missing_key_and_a_wrong_vector_length_are_refused() -> None:
    decision = check_output(BINS, {"all:counts": [5, 5, 5]}, POLICY)
    reasons = sorted(r.reason for r in decision.refusals)
    assert any("all:below: declared but missing" in r for r in reasons)
    assert any("expected a list of 4 numbers" in r for r in reasons)


def test_a_count_must_be_a_non_negative_integer() -> None:
    assert check_output(COUNTS, {"all:n": 5.0}, POLICY).refusals[0].rule is Rule.SCHEMA
    assert check_output(COUNTS, {"all:n": -5}, POLICY).refusals[0].rule is Rule.SCHEMA


def test_a_declared_nullable_value_may_be_none_and_numpy_numbers_are_plain() -> None:
    payload = {"all:n": np.int64(0), "all:mean": np.float64(0.0), "all:min": None}
    decision = check_output(SUMS, payload, POLICY, {"all:mean": []})
    assert decision.allowed and decision.released == {"all:n": 0, "all:mean": 0.0, "all:min": None}
    assert type(decision.released["all:n"]) is int


# -- differencing ------------------------------------------------------------------------
KEY = b"site-secret-for-tests"


def uids(numbers: range) -> list[str]:
    return [f"1.2.826.0.1.3680043.2.{i}" for i in numbers]


def guard(min_cohort_size: int = 10) -> DifferencingGuard:
    return DifferencingGuard(
        InMemoryCohortLedger(), DisclosurePolicy(min_cohort_size=min_cohort_size), KEY
    )


def test_a_cohort_at_the_minimum_size_passes_and_below_is_refused() -> None:
    g = guard()
    assert g.check("job1", uids(range(10))) is None
    refusal = g.check("job2", uids(range(9)))
    assert refusal is not None and refusal.rule is Rule.MIN_COHORT
    assert "9 series" in refusal.reason and "10" in refusal.reason


def test_a_cohort_differing_by_fewer_than_the_minimum_is_refused_naming_the_job() -> None:
    g = guard()
    g.record("job1", uids(range(50)))
    added = g.check("job2", uids(range(51)))  # one series more: its values by subtraction
    removed = g.check("job3", uids(range(1, 50)))  # one series fewer
    swapped = g.check("job4", uids(range(1, 51)))  # one out, one in
    for refusal, differ in ((added, 1), (removed, 1), (swapped, 2)):
        assert refusal is not None and refusal.rule is Rule.DIFFERENCING
        assert f"by {differ} series" in refusal.reason and "job1" in refusal.reason


def test_a_cohort_differing_by_exactly_the_minimum_passes() -> None:
    g = guard()
    g.record("job1", uids(range(50)))
    assert g.check("job2", uids(range(60))) is None


def test_the_same_cohort_again_passes() -> None:
    g = guard()
    g.record("job1", uids(range(50)))
    assert g.check("job2", uids(range(50))) is None


def test_the_ledger_holds_keyed_hashes_not_uids() -> None:
    ledger = InMemoryCohortLedger()
    g = DifferencingGuard(ledger, POLICY, KEY)
    g.record("job1", uids(range(20)))
    (released,) = ledger.released()
    assert released.job_id == "job1" and len(released.series) == 20
    assert not any(uid in released.series for uid in uids(range(20)))
    other_key = DifferencingGuard(InMemoryCohortLedger(), POLICY, b"another site")
    other_key.record("job1", uids(range(20)))
    (elsewhere,) = other_key.ledger.released()
    assert elsewhere.series.isdisjoint(released.series)  # keyed: no cross-site linking
