"""Building a job from what a researcher types, and sending it.

An output is written ``NAME:KIND:FIELD[:OPTION=VALUE]...`` (labels hold no ``:``)::

    n:count:PatientAgeYears
    age:histogram:PatientAgeYears:edges=0,40,60,120
    adc:sufficient_stats:adc:groups=PZ/3/v1,PZ/3/v2
    adc_spread:levene_round1:adc:groups=PZ/3/v1,PZ/3/v2

Options: ``groups=g1,g2`` (the group labels), ``edges=e0,e1,...`` (histograms). Only
round-1 kinds are typed (``count``, ``histogram``, ``sufficient_stats``,
``levene_round1``); the later rounds are made by the requester.

A Levene comparison is written ``NAME=g1,g2[,g3...][:mean|:median]`` (default: median,
Brown–Forsythe, as ``scipy.stats.levene``); its groups must all belong to one
``levene_round1`` output (the first that has them). A ``levene_round1`` output that no
comparison names is compared over all its groups, centred on the median.

The job is recorded in the home before it is submitted, so a crash in between loses
nothing (a submit of the same spec again is harmless at the hub).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from jip.errors import Invalid
from jip.federation.crypto import encode_key
from jip.federation.levene import LeveneCentre
from jip.federation.protocol import CohortDocument, DeclaredOutput, JobSpec, OutputKind, WorkflowRef
from jip.federation.requester.client import HubSession
from jip.federation.requester.home import ResearcherHome
from jip.federation.requester.rounds import Comparison, check_comparisons

ROUND1_KINDS = (
    OutputKind.COUNT,
    OutputKind.HISTOGRAM,
    OutputKind.SUFFICIENT_STATS,
    OutputKind.LEVENE_ROUND1,
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _numbers(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise Invalid(f"{what}: expected comma-separated numbers, got {text!r}") from None


def _labels(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_output(text: str) -> DeclaredOutput:
    """One ``NAME:KIND:FIELD[:OPTION=VALUE]...`` (see the module docstring)."""
    parts = text.split(":")
    if len(parts) < 3:
        raise Invalid(f"--output {text!r}: write NAME:KIND:FIELD[:groups=a,b][:edges=0,10]")
    name, kind, field_name, *options = parts
    if kind not in {k.value for k in ROUND1_KINDS}:
        kinds = ", ".join(k.value for k in ROUND1_KINDS)
        raise Invalid(f"--output {text!r}: kind {kind!r} is not one of {kinds}")
    extra: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in {"groups", "edges"}:
            raise Invalid(f"--output {text!r}: {option!r} is not groups=... or edges=...")
        extra[key] = _labels(value) if key == "groups" else _numbers(value, f"{name}: edges")
    try:
        return DeclaredOutput(name=name, kind=OutputKind(kind), field=field_name, **extra)
    except ValidationError as exc:
        raise Invalid(f"--output {text!r}: {_first_error(exc)}") from None


def parse_levene(text: str, outputs: Sequence[DeclaredOutput]) -> Comparison:
    """One ``NAME=g1,g2[:mean|:median]`` against the job's ``levene_round1`` outputs."""
    name, sep, rest = text.partition("=")
    groups_text, _, centre = rest.partition(":")
    if not sep or not name:
        raise Invalid(f"--levene {text!r}: write NAME=group1,group2[:mean|:median]")
    if centre not in {"", "mean", "median"}:
        raise Invalid(f"--levene {text!r}: the centre is mean or median, not {centre!r}")
    groups = _labels(groups_text)
    for output in outputs:
        if output.kind is OutputKind.LEVENE_ROUND1 and set(groups) <= set(output.group_labels):
            return Comparison(name, groups, LeveneCentre(centre or "median"), output.name)
    raise Invalid(
        f"--levene {text!r}: no levene_round1 output has groups {', '.join(groups)}; add "
        f"--output NAME:levene_round1:FIELD:groups={','.join(groups)}"
    )


def parse_deadline(text: str, now: datetime | None = None) -> datetime:
    """``30s``, ``10m``, ``2h``, ``1d`` from now, or an ISO 8601 time with its zone."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now + timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(f"--deadline {text!r}: write 10m, 2h, 1d or an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise Invalid(f"--deadline {text!r}: give the time zone (say +00:00)")
    return moment


def read_cohort(path: Path) -> CohortDocument:
    """The JSON ``jip cohort export`` wrote."""
    try:
        return CohortDocument.model_validate_json(Path(path).read_text())
    except FileNotFoundError:
        raise Invalid(f"--cohort {path}: no such file (`jip cohort export NAME`)") from None
    except ValidationError as exc:
        raise Invalid(f"--cohort {path}: not a cohort export: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


@dataclass(frozen=True)
class Request:
    """What a researcher asks for, before it becomes a :class:`JobSpec`."""

    workflow: WorkflowRef
    cohort: CohortDocument
    project: str
    outputs: tuple[DeclaredOutput, ...]
    min_sites: int
    deadline: datetime
    parameters: Mapping[str, Any] = field(default_factory=dict)
    levene: tuple[str, ...] = ()
    title: str = ""
    fanout: int = 15


def build_job(request: Request, researcher_key: str) -> tuple[JobSpec, list[Comparison]]:
    """The job spec (a fresh id) and its Levene comparisons, checked."""
    try:
        spec = JobSpec(
            id=uuid.uuid4().hex,
            project=request.project,
            researcher_key=researcher_key,
            workflow=request.workflow,
            cohort=request.cohort,
            parameters=dict(request.parameters),
            outputs=request.outputs,
            min_sites=request.min_sites,
            deadline=request.deadline,
        )
    except ValidationError as exc:
        raise Invalid(f"job: {_first_error(exc)}") from None
    comparisons = [parse_levene(text, spec.outputs) for text in request.levene]
    named = {c.output for c in comparisons}
    comparisons += [
        Comparison(o.name, o.group_labels, LeveneCentre.MEDIAN, o.name)
        for o in spec.outputs
        if o.kind is OutputKind.LEVENE_ROUND1 and o.name not in named
    ]
    check_comparisons(spec, comparisons)
    return spec, comparisons


def submit_job(home: ResearcherHome, session: HubSession, request: Request) -> JobSpec:
    """Build, record in the home, then submit; returns the spec (its id is the job's)."""
    if request.fanout < 1:
        raise Invalid("--fanout: at least one threshold per median round")
    spec, comparisons = build_job(request, encode_key(home.box_keys().public))
    home.record_job(
        spec,
        title=request.title or request.cohort.name,
        levene=[c.to_json() for c in comparisons],
        fanout=request.fanout,
    )
    session.submit(spec)
    return spec


def read_spec_file(path: Path) -> dict[str, Any]:
    """A JobSpec-like JSON file (``--spec``): any of workflow, cohort, project,
    parameters, outputs (objects as :class:`DeclaredOutput`), min_sites, deadline,
    levene (list of ``NAME=g1,g2[:centre]``), title; the command line fills the rest."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise Invalid(f"--spec {path}: no such file") from None
    except ValueError as exc:
        raise Invalid(f"--spec {path}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise Invalid(f"--spec {path}: expected a JSON object")
    return document
