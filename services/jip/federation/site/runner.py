"""The first workflow, ``fed-stats``: aggregates computed in-process, on metadata or on
voxel values inside segmentations.

The cohort is resolved here, by META (the job's exported cohort query, within the job's
project), then held to the differencing guard; each declared output is computed on the
cohort's values and passes every disclosure check (:func:`jip.federation.release`) or
nothing leaves. ``parameters.source`` says which values:

- ``"metadata"`` (the default): per series, its value of the output's ``field`` (a
  numeric META field such as ``PatientAgeYears``);
- ``"roi"``: the voxel values of the cohort's image series inside each segment of the
  SEGs that reference them (an :class:`~jip.federation.site.images.ImageSource`); the
  output's ``field`` names the measure (say ``ADC``), and a group is the segment's label
  (an output declared without groups pools every segment). A group's count is a number
  of voxels, not of series or patients.

``parameters.group_by`` (a META field name or a list of them) splits groups further: a
group label is the segment label (roi) followed by the series' values of those fields,
``/``-joined (``Peripheral_zone/3/dwi_v1``; 3.0 T is ``3``). Characters a label may not
hold (protocol.Label) become ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from jip.federation.disclosure import DifferencingGuard, DisclosurePolicy, Released
from jip.federation.outputs import release
from jip.federation.protocol import DeclaredOutput, JobSpec
from jip.federation.site.images import ImageSource
from jip.meta import FIELDS, MetaIndex, cohort_values

NUMERIC = {"integer", "float"}
PARAMETERS = {"group_by", "source"}
_NOT_IN_LABEL = re.compile(r"[^A-Za-z0-9_.-]")


class Source(StrEnum):
    """Where a ``fed-stats`` job's values come from (``parameters.source``)."""

    METADATA = "metadata"
    ROI = "roi"


@dataclass(frozen=True)
class Outcome:
    """What a run gives: the released outputs, or the refusal (and the rule's words)."""

    released: dict[str, Released] | None
    series: tuple[str, ...] = ()
    refusal: str | None = None
    refusals: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    source: Source
    group_by: tuple[str, ...]
    fields: list[str]  # the META fields to read per series


def group_label(value: object) -> str:
    """A grouping value as the label a job declares (3.0 T is the group ``3``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _NOT_IN_LABEL.sub("_", str(value))


def segment_label(label: str) -> str:
    """A SEG's SegmentLabel as the first part of a group label (spaces become ``_``)."""
    return _NOT_IN_LABEL.sub("_", label.strip())


def _group_by(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise ValueError(f"parameters.group_by: {value!r} is not a field name or a list of them")
    for name in names:
        if not isinstance(name, str) or name not in FIELDS:
            raise ValueError(f"parameters.group_by: {name!r} is not a metadata field")
    return tuple(dict.fromkeys(names))


def _plan(job: JobSpec, outputs: Sequence[DeclaredOutput]) -> _Plan:
    unknown = sorted(set(job.parameters) - PARAMETERS)
    if unknown:
        raise ValueError(f"parameter {unknown[0]}: fed-stats takes only {sorted(PARAMETERS)}")
    raw_source = job.parameters.get("source", Source.METADATA.value)
    if raw_source not in {s.value for s in Source}:
        raise ValueError(f"parameters.source: {raw_source!r} is not 'metadata' or 'roi'")
    source = Source(raw_source)
    group_by = _group_by(job.parameters.get("group_by"))
    names = []
    for output in outputs:
        if source is Source.METADATA:
            spec = FIELDS.get(output.field)
            if spec is None or spec.type.value not in NUMERIC:
                raise ValueError(
                    f"output {output.name}: {output.field} is not a numeric metadata field"
                )
            if output.groups and not group_by:
                raise ValueError(
                    f"output {output.name}: declares groups but no parameters.group_by"
                )
            names.append(output.field)
    return _Plan(source, group_by, list(dict.fromkeys([*names, *group_by])))


def _key(doc: Mapping[str, Any], group_by: Sequence[str]) -> list[str]:
    return [group_label(doc.get(name)) for name in group_by]


def _metadata_values(
    docs: Mapping[str, Mapping[str, Any]], output: DeclaredOutput, group_by: Sequence[str]
) -> dict[str, list[float]]:
    wanted = set(output.group_labels)
    values: dict[str, list[float]] = {g: [] for g in wanted}
    for doc in docs.values():
        if output.field not in doc:
            continue
        group = "all" if not output.groups else "/".join(_key(doc, group_by))
        if group in wanted:
            values[group].append(float(doc[output.field]))
    return values


def _roi_values(
    docs: Mapping[str, Mapping[str, Any]],
    measured: Mapping[str, Mapping[str, np.ndarray]],
    output: DeclaredOutput,
    group_by: Sequence[str],
) -> dict[str, np.ndarray]:
    wanted = set(output.group_labels)
    parts: dict[str, list[np.ndarray]] = {g: [] for g in wanted}
    for uid, doc in docs.items():
        for label, x in measured.get(uid, {}).items():
            group = (
                "all"
                if not output.groups
                else "/".join([segment_label(label), *_key(doc, group_by)])
            )
            if group in wanted:
                parts[group].append(np.asarray(x, dtype=np.float64))
    return {g: np.concatenate(p) if p else np.empty(0) for g, p in parts.items()}


def run_fed_stats(
    job: JobSpec,
    outputs: Sequence[DeclaredOutput],
    index: MetaIndex,
    disclosure: DisclosurePolicy,
    guard: DifferencingGuard,
    images: ImageSource | None = None,
) -> Outcome:
    """Resolve the cohort, check it, compute and check every output; all or nothing."""
    try:
        plan = _plan(job, outputs)
    except ValueError as exc:
        return Outcome(None, refusal=str(exc))
    if plan.source is Source.ROI and images is None:
        return Outcome(None, refusal="parameters.source 'roi': this site reads no images")
    docs = cohort_values(index, job.cohort.query, job.project, plan.fields)
    if job.cohort.series is not None:
        listed = set(job.cohort.series)
        docs = {uid: doc for uid, doc in docs.items() if uid in listed}
    series = tuple(sorted(docs))
    refused = guard.check(job.id, series)
    if refused is not None:
        detail = {"rule": refused.rule.value, "reason": refused.reason}
        return Outcome(None, series, refused.reason, [detail])
    measured = (
        images.segment_values(series, job.project)
        if plan.source is Source.ROI and images is not None
        else {}
    )
    released: dict[str, Released] = {}
    refusals: list[dict[str, Any]] = []
    for output in outputs:
        values: Mapping[str, Any] = (
            _roi_values(docs, measured, output, plan.group_by)
            if plan.source is Source.ROI
            else _metadata_values(docs, output, plan.group_by)
        )
        decision = release(output, values, disclosure)
        if decision.released is None:
            refusals += [
                {"rule": r.rule.value, "output": r.output, "field": r.field, "reason": r.reason}
                for r in decision.refusals
            ]
        else:
            released[output.name] = decision.released
    if refusals:
        reason = "; ".join(r["reason"] for r in refusals[:5])
        return Outcome(None, series, reason, refusals)
    return Outcome(released, series)
