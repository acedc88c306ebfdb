"""The first workflow, ``fed-stats``: aggregates of numeric metadata, computed in-process.

The cohort is resolved here, by META (the job's exported cohort query, within the job's
project), then held to the differencing guard; each declared output is computed on the
series' values of its ``field`` (a numeric META field such as ``PatientAgeYears``) and
passes every disclosure check (:func:`jip.federation.release`) or nothing leaves.
Groups, when declared, are the values of the field named by ``parameters.group_by``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jip.federation.disclosure import DifferencingGuard, DisclosurePolicy, Released
from jip.federation.outputs import release
from jip.federation.protocol import DeclaredOutput, JobSpec
from jip.meta import FIELDS, MetaIndex, cohort_values

NUMERIC = {"integer", "float"}
PARAMETERS = {"group_by"}


@dataclass(frozen=True)
class Outcome:
    """What a run gives: the released outputs, or the refusal (and the rule's words)."""

    released: dict[str, Released] | None
    series: tuple[str, ...] = ()
    refusal: str | None = None
    refusals: list[dict[str, Any]] = field(default_factory=list)


def group_label(value: object) -> str:
    """A grouping value as the label a job declares (3.0 T is the group ``3``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fields(job: JobSpec, outputs: Sequence[DeclaredOutput]) -> tuple[list[str], str | None]:
    unknown = sorted(set(job.parameters) - PARAMETERS)
    if unknown:
        raise ValueError(f"parameter {unknown[0]}: fed-stats takes only {sorted(PARAMETERS)}")
    group_by = job.parameters.get("group_by")
    if group_by is not None and (not isinstance(group_by, str) or group_by not in FIELDS):
        raise ValueError(f"parameters.group_by: {group_by!r} is not a metadata field")
    names = []
    for output in outputs:
        spec = FIELDS.get(output.field)
        if spec is None or spec.type.value not in NUMERIC:
            raise ValueError(
                f"output {output.name}: {output.field} is not a numeric metadata field"
            )
        if output.groups and group_by is None:
            raise ValueError(f"output {output.name}: declares groups but no parameters.group_by")
        names.append(output.field)
    return list(dict.fromkeys([*names, *([group_by] if group_by else [])])), group_by


def _values(
    docs: Mapping[str, Mapping[str, Any]], output: DeclaredOutput, group_by: str | None
) -> dict[str, list[float]]:
    wanted = set(output.group_labels)
    values: dict[str, list[float]] = {g: [] for g in wanted}
    for doc in docs.values():
        if output.field not in doc:
            continue
        group = "all" if not output.groups else group_label(doc.get(group_by or ""))
        if group in wanted:
            values[group].append(float(doc[output.field]))
    return values


def run_fed_stats(
    job: JobSpec,
    outputs: Sequence[DeclaredOutput],
    index: MetaIndex,
    disclosure: DisclosurePolicy,
    guard: DifferencingGuard,
) -> Outcome:
    """Resolve the cohort, check it, compute and check every output; all or nothing."""
    try:
        fields, group_by = _fields(job, outputs)
    except ValueError as exc:
        return Outcome(None, refusal=str(exc))
    docs = cohort_values(index, job.cohort.query, job.project, fields)
    if job.cohort.series is not None:
        listed = set(job.cohort.series)
        docs = {uid: doc for uid, doc in docs.items() if uid in listed}
    series = tuple(sorted(docs))
    refused = guard.check(job.id, series)
    if refused is not None:
        detail = {"rule": refused.rule.value, "reason": refused.reason}
        return Outcome(None, series, refused.reason, [detail])
    released: dict[str, Released] = {}
    refusals: list[dict[str, Any]] = []
    for output in outputs:
        decision = release(output, _values(docs, output, group_by), disclosure)
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
