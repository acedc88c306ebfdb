"""The wire models, and a whole federated study through them: each site computes its
declared outputs, passes the disclosure checks, seals them to the researcher; the
researcher opens, pools and gets SciPy's answer on the pooled values."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import scipy.stats
from numpy.typing import NDArray
from pydantic import ValidationError

from jip.errors import Forbidden
from jip.federation import (
    Bracket,
    Centre,
    DeclaredOutput,
    DisclosurePolicy,
    JobSpec,
    LeveneCentre,
    OrderSearch,
    OutputKind,
    SiteJobState,
    SiteJobStatus,
    SiteResult,
    WorkflowRef,
    combine_histograms,
    combine_summaries,
    encode_key,
    generate_box_keys,
    generate_signing_keys,
    levene_from_deviations,
    median_from,
    median_ranks,
    open_result,
    pool_counts,
    pooled_means,
    read_count_at_most,
    read_histograms,
    read_means,
    read_moments,
    read_summaries,
    release,
    seal_result,
    sign_workflow,
)

DIGEST = "sha256:" + "0f" * 32
GROUPS = ("pz/3T/before", "pz/3T/after")
Site = Mapping[str, NDArray[np.float64]]


def make_sites() -> dict[str, Site]:
    """ADC values (mm²/s) of two protocol eras at three sites; large enough that every
    count the study asks for is 0 or at least the minimum cell count at every site."""
    rng = np.random.default_rng(2024)
    before, after = GROUPS
    return {
        "mannheim": {before: rng.normal(1.6e-3, 2e-4, 180), after: rng.normal(1.6e-3, 1e-4, 120)},
        "heidelberg": {before: rng.normal(1.58e-3, 2e-4, 150), after: np.array([])},
        "dresden": {before: rng.normal(1.65e-3, 2e-4, 75), after: rng.normal(1.58e-3, 1.2e-4, 165)},
    }


def workflow() -> WorkflowRef:
    publisher = generate_signing_keys()
    return WorkflowRef(
        name="fed-stats",
        image_digest=DIGEST,
        signature=encode_key(sign_workflow("fed-stats", DIGEST, publisher.private)),
        signer=encode_key(publisher.public),
    )


def job(outputs: tuple[DeclaredOutput, ...], researcher_key: str) -> JobSpec:
    return JobSpec(
        id=uuid.uuid4().hex,
        project="harmonisation",
        researcher_key=researcher_key,
        workflow=workflow(),
        cohort={"format": "jip.cohort", "format_version": 1, "name": "prostate DWI", "query": {}},
        outputs=outputs,
        min_sites=2,
        deadline=datetime.now(UTC) + timedelta(days=2),
    )


def run_round(
    spec_id: str, round: int, outputs: tuple[DeclaredOutput, ...], sites: dict[str, Site], key: str
) -> list[SiteResult]:
    """What each site agent will do: release every output, seal what passed."""
    results = []
    for site_id, values in sites.items():
        decisions = [release(o, values, DisclosurePolicy()) for o in outputs]
        assert all(d.allowed for d in decisions), [r.reason for d in decisions for r in d.refusals]
        released = {d.output: d.released for d in decisions if d.released is not None}
        results.append(seal_result(spec_id, site_id, round, released, key))
    return results


@pytest.mark.parametrize("centre", [LeveneCentre.MEAN, LeveneCentre.MEDIAN])
def test_a_federated_levene_through_the_wire_equals_scipy(centre: LeveneCentre) -> None:
    sites, researcher = make_sites(), generate_box_keys()
    key = encode_key(researcher.public)
    summary = DeclaredOutput(
        name="adc", kind=OutputKind.SUFFICIENT_STATS, field="adc", groups=GROUPS
    )
    round1 = DeclaredOutput(
        name="centres", kind=OutputKind.LEVENE_ROUND1, field="adc", groups=GROUPS
    )
    spec = job((summary, round1), key)
    opened = [
        open_result(r, researcher.private) for r in run_round(spec.id, 1, spec.outputs, sites, key)
    ]
    everything = combine_summaries(
        s for o in opened for s in read_summaries(summary, o["adc"]).values()
    )
    assert everything.n == sum(v.size for s in sites.values() for v in s.values())

    if centre is LeveneCentre.MEAN:
        centres = pooled_means(read_means(round1, o["centres"]) for o in opened)
    else:
        n = {g: sum(read_means(round1, o["centres"])[g].n for o in opened) for g in GROUPS}
        # released extremes bracket the search, and one threshold per round keeps every
        # threshold between the median and the bracket's middle: no tail counts, which
        # small sites would refuse (see test_a_count_query_in_the_tail_is_refused)
        extremes = {
            g: combine_summaries(read_summaries(summary, o["adc"])[g] for o in opened).extremes
            for g in GROUPS
        }
        brackets = {g: Bracket(e.minimum or 0.0, e.maximum or 0.0) for g, e in extremes.items()}
        search = OrderSearch(
            {g: (n[g], median_ranks(n[g])) for g in GROUPS}, brackets=brackets, fanout=1
        )
        round_no = 1
        while not search.done:
            round_no += 1
            query = DeclaredOutput(
                name="counts",
                kind=OutputKind.COUNT_AT_MOST,
                field="adc",
                groups=GROUPS,
                thresholds={g: tuple(t) for g, t in search.request().items()},
            )
            answers = run_round(spec.id, round_no, (query,), sites, key)
            search.feed(
                pool_counts(
                    read_count_at_most(query, open_result(a, researcher.private)["counts"])
                    for a in answers
                )
            )
        found = search.values()
        centres = {g: Centre(median_from(n[g], found[g])) for g in GROUPS}

    round2 = DeclaredOutput(
        name="deviations",
        kind=OutputKind.LEVENE_ROUND2,
        field="adc",
        groups=GROUPS,
        centres={g: (c.value, c.error) for g, c in centres.items()},
    )
    answers = run_round(spec.id, 99, (round2,), sites, key)
    parts = [
        read_moments(round2, open_result(a, researcher.private)["deviations"]) for a in answers
    ]
    result = levene_from_deviations(parts, centres, centre)

    pooled = [np.concatenate([s[g] for s in sites.values()]) for g in sorted(GROUPS)]
    expected = scipy.stats.levene(*pooled, center=centre.value)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert result.pvalue == pytest.approx(expected.pvalue, rel=1e-9)


def test_a_histogram_through_the_wire_equals_numpy() -> None:
    sites, researcher = make_sites(), generate_box_keys()
    edges = (0.0, 1.5e-3, 1.65e-3, 3e-3)
    output = DeclaredOutput(name="h", kind=OutputKind.HISTOGRAM, field="adc", edges=edges)
    values = {name: {"all": np.concatenate(list(s.values()))} for name, s in sites.items()}
    key = encode_key(researcher.public)
    answers = run_round(uuid.uuid4().hex, 1, (output,), values, key)
    parts = [
        read_histograms(output, open_result(a, researcher.private)["h"])["all"] for a in answers
    ]
    pooled = np.concatenate([v["all"] for v in values.values()])
    assert combine_histograms(parts).counts == tuple(np.histogram(pooled, bins=edges)[0])


def test_a_result_envelope_checks_size_and_hash() -> None:
    researcher = generate_box_keys()
    result = seal_result(
        "a" * 32, "mannheim", 1, {"x": {"all:n": 5}}, encode_key(researcher.public)
    )
    assert result.size == len(base64.b64decode(result.ciphertext))
    with pytest.raises(ValidationError, match="size"):
        SiteResult(**{**result.model_dump(), "size": result.size + 1})
    with pytest.raises(ValidationError, match="sha256"):
        SiteResult(**{**result.model_dump(), "sha256": "0" * 64})


def test_a_result_moved_to_another_envelope_is_refused() -> None:
    researcher = generate_box_keys()
    result = seal_result(
        "a" * 32, "mannheim", 1, {"x": {"all:n": 5}}, encode_key(researcher.public)
    )
    moved = SiteResult(**{**result.model_dump(), "job_id": "b" * 32})
    with pytest.raises(Forbidden, match="another job"):
        open_result(moved, researcher.private)


def test_declared_outputs_need_what_their_kind_needs() -> None:
    with pytest.raises(ValidationError, match="needs edges"):
        DeclaredOutput(name="h", kind=OutputKind.HISTOGRAM, field="adc")
    with pytest.raises(ValidationError, match="takes no edges"):
        DeclaredOutput(name="n", kind=OutputKind.COUNT, field="adc", edges=(0.0, 1.0))
    with pytest.raises(ValidationError, match="one entry per group"):
        DeclaredOutput(
            name="d",
            kind=OutputKind.LEVENE_ROUND2,
            field="adc",
            groups=("a", "b"),
            centres={"a": (1.0, 0.0)},
        )
    with pytest.raises(ValidationError):
        DeclaredOutput(name="bad name", kind=OutputKind.COUNT, field="adc")
    with pytest.raises(ValidationError):
        DeclaredOutput(name="h", kind=OutputKind.HISTOGRAM, field="adc", edges=(0.0, float("inf")))


def test_a_job_refuses_unknown_keys_duplicate_outputs_and_naive_deadlines() -> None:
    key = encode_key(generate_box_keys().public)
    output = DeclaredOutput(name="n", kind=OutputKind.COUNT, field="adc")
    spec = job((output,), key)
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValidationError, match="unique"):
        job((output, output), key)
    with pytest.raises(ValidationError, match="extra"):
        JobSpec.model_validate({**spec.model_dump(), "free_text": "hello"})
    with pytest.raises(ValidationError):
        JobSpec.model_validate({**spec.model_dump(), "deadline": datetime(2030, 1, 1)})
    with pytest.raises(ValidationError, match="format"):
        JobSpec.model_validate(
            {**spec.model_dump(), "cohort": {**spec.cohort.model_dump(), "format": "x"}}
        )


def test_a_workflow_runs_only_when_signed_by_a_trusted_key() -> None:
    publisher = generate_signing_keys()
    ref = WorkflowRef(
        name="fed-stats",
        image_digest=DIGEST,
        signature=encode_key(sign_workflow("fed-stats", DIGEST, publisher.private)),
        signer=encode_key(publisher.public),
    )
    ref.verify({ref.signer_id: publisher.public})
    with pytest.raises(Forbidden, match="not a trusted key"):
        ref.verify({})
    tampered = ref.model_copy(update={"image_digest": "sha256:" + "1f" * 32})
    with pytest.raises(Forbidden, match="signature"):
        tampered.verify({ref.signer_id: publisher.public})


def test_a_refused_or_failed_site_state_says_why() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValidationError, match="must say why"):
        SiteJobStatus(
            job_id="a" * 32, site_id="mannheim", state=SiteJobState.REFUSED, updated_at=now
        )
    status = SiteJobStatus(
        job_id="a" * 32, site_id="mannheim", state=SiteJobState.MISSED_DEADLINE, updated_at=now
    )
    assert status.state.final and not SiteJobState.RUNNING.final


def test_a_count_query_in_the_tail_is_refused() -> None:
    sites = make_sites()
    lowest = float(np.sort(sites["heidelberg"][GROUPS[0]])[2])
    query = DeclaredOutput(
        name="counts",
        kind=OutputKind.COUNT_AT_MOST,
        field="adc",
        groups=(GROUPS[0],),
        thresholds={GROUPS[0]: (lowest,)},
    )
    decision = release(query, sites["heidelberg"], DisclosurePolicy())
    assert not decision.allowed
    assert "counts.pz/3T/before:at_most[0]: a bin of 3" in decision.refusals[0].reason
