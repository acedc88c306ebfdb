"""The checks every output passes at a site before it may leave (statistical disclosure
control). Nothing here encrypts or sends: the site agent runs :func:`check_output` on the
plain payload, releases only an allowed :class:`Decision`, and writes every decision, with
its reasons, to the site's audit log.

The rules, each a function of its own so that a refusal names the rule:

- **schema** (:func:`check_schema`): a payload holds exactly the keys its output declares,
  and every value is a finite number (a vector where the schema says so): no strings,
  so no UIDs, dates, names or free text can ride along; no NaN that hides a code.
- **minimum cell count** (:func:`check_cells`): every count and every histogram bin is 0
  or at least ``k`` (5 by default). A zero is released, as DataSHIELD's ``nfilter.tab``
  does; 1..k−1 refuses the whole output, naming output, field and bin. Never silently
  zeroed: a zero that means "suppressed" would be read as "none". With the ``suppress``
  policy (a documented option) small bins of a vector become None instead, each listed,
  plus one complementary bin so the first cannot be recovered from the total; a small
  scalar count still refuses, since every other field describes the same few records.
- **dominance** (:func:`check_dominance`): the (n, k) rule on sums: the n largest
  contributions may not make up more than k % of the total of absolute contributions
  (defaults (1, 80 %) and (2, 90 %)). It needs the per-record contributions, which only
  the site has.
- **differencing** (:class:`DifferencingGuard`): a cohort smaller than the minimum cohort
  size is refused, and so is one whose series differ from a cohort this site already
  released by fewer than that size (in either direction), since the two results
  subtracted describe those few series alone (DataSHIELD's open differencing gap).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

Number = int | float
Payload = Mapping[str, object]
"""What a site wants to send for one output: declared keys to numbers or vectors."""
Released = dict[str, Number | list[Number | None] | None]


class Rule(StrEnum):
    """Which check refused (the audit log and the researcher see it)."""

    SCHEMA = "schema"
    MIN_CELL = "min_cell"
    DOMINANCE = "dominance"
    MIN_COHORT = "min_cohort"
    DIFFERENCING = "differencing"


class SmallCells(StrEnum):
    """What a small cell does to its output."""

    REFUSE = "refuse"  # the default: nothing of the output leaves
    SUPPRESS = "suppress"  # small bins of a vector leave as None, listed in the decision


class Role(StrEnum):
    """What a field of an output is, which decides the rules that apply to it."""

    COUNT = "count"  # a number of records: minimum cell count
    SUM = "sum"  # a sum or mean over records: dominance (needs the contributions)
    VALUE = "value"  # any other finite number (a mean, an extreme, a statistic)


@dataclass(frozen=True)
class FieldSpec:
    """One declared key: its role, whether a vector (its length) and whether it may be
    None (a minimum of no values)."""

    role: Role
    length: int | None = None
    nullable: bool = False


@dataclass(frozen=True)
class OutputSchema:
    """The declared shape of one output: its name and its keys."""

    name: str
    fields: Mapping[str, FieldSpec]


@dataclass(frozen=True)
class DominanceRule:
    """(n, k): the n largest contributions may make up at most ``percent`` of the sum."""

    n: int
    percent: float


@dataclass(frozen=True)
class DisclosurePolicy:
    """A site's disclosure settings (the site policy holds one; safe defaults)."""

    min_cell_count: int = 5
    small_cells: SmallCells = SmallCells.REFUSE
    dominance: tuple[DominanceRule, ...] = (DominanceRule(1, 80.0), DominanceRule(2, 90.0))
    min_cohort_size: int = 10


@dataclass(frozen=True)
class Refusal:
    """Why an output may not leave: the rule, the output, the field and bin at fault and
    a sentence a site admin and the researcher can act on."""

    rule: Rule
    output: str
    reason: str
    field: str | None = None
    index: int | None = None


@dataclass(frozen=True)
class Suppression:
    """A cell released as None under the ``suppress`` policy (and why)."""

    output: str
    field: str
    index: int
    complementary: bool


@dataclass(frozen=True)
class Decision:
    """The verdict on one output. ``released`` is what may leave (None when refused)."""

    output: str
    released: Released | None
    refusals: tuple[Refusal, ...] = ()
    suppressed: tuple[Suppression, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return not self.refusals


# -- schema -------------------------------------------------------------------------------
def _number(value: object, integral: bool) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    if integral:
        return isinstance(value, numbers.Integral) and int(value) >= 0
    return isinstance(value, numbers.Real) and math.isfinite(float(value))


def check_schema(schema: OutputSchema, payload: Payload) -> list[Refusal]:
    """Only declared keys, every declared key, and each value a finite number (counts:
    a non-negative integer) or a vector of them of the declared length."""
    name, found = schema.name, []
    if not isinstance(payload, Mapping):
        return [Refusal(Rule.SCHEMA, name, f"{name}: the output is not a mapping of numbers")]
    for key in sorted(set(payload) - set(schema.fields), key=str):
        found.append(Refusal(Rule.SCHEMA, name, f"{name}.{key}: not a declared key", str(key)))
    for key, spec in schema.fields.items():
        where = f"{name}.{key}"
        if key not in payload:
            found.append(Refusal(Rule.SCHEMA, name, f"{where}: declared but missing", key))
            continue
        value, integral = payload[key], spec.role is Role.COUNT
        what = "a non-negative integer" if integral else "a finite number"
        if spec.length is None:
            if value is None and spec.nullable:
                continue
            if not _number(value, integral):
                found.append(
                    Refusal(
                        Rule.SCHEMA,
                        name,
                        f"{where}: expected {what}, got {type(value).__name__}",
                        key,
                    )
                )
            continue
        if not isinstance(value, list | tuple) or len(value) != spec.length:
            found.append(
                Refusal(
                    Rule.SCHEMA, name, f"{where}: expected a list of {spec.length} numbers", key
                )
            )
            continue
        for i, item in enumerate(value):
            if not _number(item, integral):
                reason = f"{where}[{i}]: expected {what}, got {type(item).__name__}"
                found.append(Refusal(Rule.SCHEMA, name, reason, key, i))
    return found


def _plain(value: object) -> Number | None:
    """A checked number as a plain int or float (NumPy scalars do not serialise)."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)  # type: ignore[arg-type]


# -- minimum cell count -------------------------------------------------------------------
def _small(count: int, k: int) -> bool:
    return 0 < count < k


def check_cells(
    schema: OutputSchema, payload: Payload, policy: DisclosurePolicy
) -> tuple[list[Refusal], list[Suppression]]:
    """Every COUNT field (scalar or each bin) is 0 or ≥ k; see the module docstring for
    what ``suppress`` does. Run after :func:`check_schema` (it trusts the types)."""
    k, name = policy.min_cell_count, schema.name
    refusals: list[Refusal] = []
    suppressions: list[Suppression] = []
    for key, spec in schema.fields.items():
        if spec.role is not Role.COUNT:
            continue
        value = payload[key]
        if spec.length is None:
            if isinstance(value, numbers.Integral) and _small(int(value), k):
                reason = (
                    f"{name}.{key}: a count of {int(value)} is below the minimum cell count {k}"
                )
                refusals.append(Refusal(Rule.MIN_CELL, name, reason, key))
            continue
        cells = [int(c) for c in value]  # type: ignore[attr-defined]
        small = [i for i, c in enumerate(cells) if _small(c, k)]
        if not small:
            continue
        if policy.small_cells is SmallCells.REFUSE:
            for i in small:
                reason = (
                    f"{name}.{key}[{i}]: a bin of {cells[i]} is below the minimum cell count {k}"
                )
                refusals.append(Refusal(Rule.MIN_CELL, name, reason, key, i))
            continue
        suppressions += [Suppression(name, key, i, False) for i in small]
        if len(small) == 1:
            others = [i for i, c in enumerate(cells) if c >= k]
            if others:
                complement = min(others, key=lambda i: (cells[i], i))
                suppressions.append(Suppression(name, key, complement, True))
    return refusals, suppressions


# -- dominance ----------------------------------------------------------------------------
def check_dominance(
    output: str, key: str, contributions: ArrayLike, policy: DisclosurePolicy
) -> list[Refusal]:
    """The (n, k) dominance rule on one released sum: with c the absolute per-record
    contributions sorted descending, refuse when Σ_{i≤n} c_i > k/100 · Σ c (Hundepool et
    al., Statistical Disclosure Control, 2012, §4.2.2). Needs the site's raw values.
    A sum of no records or of zeros has nobody to dominate it."""
    c = np.sort(np.abs(np.asarray(contributions, dtype=np.float64).ravel()))[::-1]
    if not np.all(np.isfinite(c)):
        return [
            Refusal(Rule.DOMINANCE, output, f"{output}.{key}: contributions must be finite", key)
        ]
    total = math.fsum(c)
    refusals = []
    for rule in policy.dominance:
        if total <= 0 or c.size == 0:
            break
        top = math.fsum(c[: rule.n])
        share = 100.0 * top / total
        if share > rule.percent:
            who = "the largest record" if rule.n == 1 else f"the {rule.n} largest records"
            reason = (
                f"{output}.{key}: {who} make up {share:.1f} % of the sum, above the "
                f"({rule.n}, {rule.percent:g} %) dominance limit"
            )
            refusals.append(Refusal(Rule.DOMINANCE, output, reason, key))
    return refusals


# -- the whole output ---------------------------------------------------------------------
def check_output(
    schema: OutputSchema,
    payload: Payload,
    policy: DisclosurePolicy,
    contributions: Mapping[str, ArrayLike] | None = None,
) -> Decision:
    """All per-output rules in order: schema, cells, dominance. ``contributions`` gives,
    for each SUM field, the per-record terms it adds up; a SUM field without them is
    refused (unchecked is not released). The differencing guard is per cohort, not per
    output: run :meth:`DifferencingGuard.check` once per job."""
    name = schema.name
    refusals = check_schema(schema, payload)
    if refusals:
        return Decision(name, None, tuple(refusals))
    cell_refusals, suppressions = check_cells(schema, payload, policy)
    refusals += cell_refusals
    for key, spec in schema.fields.items():
        if spec.role is not Role.SUM:
            continue
        terms = (contributions or {}).get(key)
        if terms is None:
            reason = f"{name}.{key}: a sum needs its contributions for the dominance check"
            refusals.append(Refusal(Rule.DOMINANCE, name, reason, key))
        else:
            refusals += check_dominance(name, key, terms, policy)
    if refusals:
        return Decision(name, None, tuple(refusals))
    released: Released = {
        key: [_plain(v) for v in value] if isinstance(value, list | tuple) else _plain(value)
        for key, value in payload.items()
    }
    for s in suppressions:
        vector = released[s.field]
        assert isinstance(vector, list)
        vector[s.index] = None
    return Decision(name, released, (), tuple(suppressions))


# -- differencing -------------------------------------------------------------------------
def hash_series(series_uids: Iterable[str], key: bytes) -> frozenset[str]:
    """The cohort as the site's ledger keeps it: HMAC-SHA256 of each SeriesInstanceUID
    under a site secret, so that the ledger does not list UIDs and a guessed UID cannot be
    checked against it without the key."""
    return frozenset(hmac.new(key, uid.encode(), hashlib.sha256).hexdigest() for uid in series_uids)


@dataclass(frozen=True)
class ReleasedCohort:
    """A cohort whose outputs left this site, for later differencing checks."""

    job_id: str
    series: frozenset[str]  # hashed (see :func:`hash_series`)


class CohortLedger(Protocol):
    """Where a site keeps the cohorts it has released (the site agent persists it)."""

    def released(self) -> Iterable[ReleasedCohort]:
        """Every cohort released so far."""
        ...

    def record(self, cohort: ReleasedCohort) -> None:
        """Remember a cohort once its outputs have left."""
        ...


class InMemoryCohortLedger:
    """A :class:`CohortLedger` in a list (tests, one-shot runs)."""

    def __init__(self, cohorts: Sequence[ReleasedCohort] = ()) -> None:
        self._cohorts = list(cohorts)

    def released(self) -> Iterable[ReleasedCohort]:
        return list(self._cohorts)

    def record(self, cohort: ReleasedCohort) -> None:
        self._cohorts.append(cohort)


class DifferencingGuard:
    """Refuses small cohorts and cohorts that differ from a released one by a few series.

    Check with :meth:`check` before anything of a job leaves; call :meth:`record` once it
    has left (a refused job is not recorded, so it does not block later ones)."""

    def __init__(self, ledger: CohortLedger, policy: DisclosurePolicy, key: bytes) -> None:
        self.ledger, self.policy, self._key = ledger, policy, key

    def check(self, job_id: str, series_uids: Iterable[str]) -> Refusal | None:
        """None when the cohort may be used; else the refusal, naming the released job.
        The same cohort again (difference 0) is allowed: it discloses nothing new."""
        series = hash_series(series_uids, self._key)
        minimum = self.policy.min_cohort_size
        if len(series) < minimum:
            reason = f"{job_id}: the cohort has {len(series)} series, below the minimum cohort size {minimum}"
            return Refusal(Rule.MIN_COHORT, job_id, reason)
        for cohort in self.ledger.released():
            differ = len(series ^ cohort.series)
            if 0 < differ < minimum:
                reason = (
                    f"{job_id}: the cohort differs from the one released for job "
                    f"{cohort.job_id} by {differ} series, fewer than the minimum cohort "
                    f"size {minimum}"
                )
                return Refusal(Rule.DIFFERENCING, job_id, reason)
        return None

    def record(self, job_id: str, series_uids: Iterable[str]) -> None:
        """Remember the cohort of a job whose outputs have left."""
        self.ledger.record(ReleasedCohort(job_id, hash_series(series_uids, self._key)))
