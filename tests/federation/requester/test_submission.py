"""What a researcher types becomes a checked job: compact outputs, Levene comparisons,
deadlines; mistakes say what to write instead. The home keeps keys private and lists
jobs without a hub."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.federation.site.support import Researcher

from jip.errors import Invalid, NotFound
from jip.federation import LeveneCentre, OutputKind
from jip.federation.requester import (
    Request,
    ResearcherHome,
    build_job,
    parse_deadline,
    parse_levene,
    parse_output,
)

COHORT = {"format": "jip.cohort", "format_version": 1, "name": "MR", "query": {}}


def test_compact_outputs_become_declared_outputs() -> None:
    hist = parse_output("age:histogram:PatientAgeYears:edges=0,40,60,120")
    assert (hist.kind, hist.edges) == (OutputKind.HISTOGRAM, (0.0, 40.0, 60.0, 120.0))
    stats = parse_output("adc:sufficient_stats:adc:groups=PZ/3/v1,PZ/3/v2")
    assert stats.groups == ("PZ/3/v1", "PZ/3/v2")
    with pytest.raises(Invalid, match="needs edges"):
        parse_output("age:histogram:PatientAgeYears")
    with pytest.raises(Invalid, match="is not one of count"):
        parse_output("x:count_at_most:adc")


def test_a_levene_comparison_needs_a_round1_output_with_its_groups() -> None:
    outputs = [parse_output("spread:levene_round1:adc:groups=a,b,c")]
    found = parse_levene("ab=a,b:mean", outputs)
    assert (found.groups, found.centre, found.output) == (("a", "b"), LeveneCentre.MEAN, "spread")
    assert parse_levene("abc=a,b,c", outputs).centre is LeveneCentre.MEDIAN
    with pytest.raises(Invalid, match="add --output NAME:levene_round1:FIELD:groups=a,z"):
        parse_levene("az=a,z", outputs)


def test_an_unnamed_round1_output_is_compared_over_all_its_groups() -> None:
    request = Request(
        workflow=Researcher.new().workflow(),
        cohort=COHORT,  # type: ignore[arg-type]
        project="prostate",
        outputs=(parse_output("spread:levene_round1:adc:groups=a,b"),),
        min_sites=1,
        deadline=datetime.now(UTC) + timedelta(hours=1),
    )
    key = "A" * 43 + "="
    _, comparisons = build_job(request, key)
    assert [(c.name, c.groups, c.centre) for c in comparisons] == [
        ("spread", ("a", "b"), LeveneCentre.MEDIAN)
    ]


def test_deadlines_are_durations_or_zoned_times() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_deadline("10m", now) == now + timedelta(minutes=10)
    assert parse_deadline("2026-01-02T00:00:00+00:00") == now + timedelta(days=1)
    with pytest.raises(Invalid, match="give the time zone"):
        parse_deadline("2026-01-02T00:00:00")


def test_the_home_keeps_keys_private_and_lists_jobs_offline(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until the hub is called")
    with pytest.raises(NotFound, match="jip fed researcher init"):
        ResearcherHome.open(tmp_path / "home")
    home = ResearcherHome.init(tmp_path / "home", "https://hub.test:8443", "t0k3n", ca)
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    for path in (home.box_key, home.token_file, home.ca, home.hub_json):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ResearcherHome.init(tmp_path / "home", "https://hub.test:8443", "new", ca)
    assert again.public_key == home.public_key and again.token == "new"
    assert ResearcherHome.open(tmp_path / "home").list_jobs() == []
