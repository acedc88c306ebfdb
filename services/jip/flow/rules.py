"""Auto-rules: "when a complete series matches this cohort query, start this workflow".

A series is complete once no instance arrived for ``meta.series_quiet_period_s`` (the
catalog's ``series.updated_at``). The evaluator looks at series that became complete
since a rule last looked (``checked_until``), asks meta's query engine which match
(:class:`jip.meta.SeriesMatcher`), and starts one run per matching series. A firing row,
inserted before the run starts and unique per (rule, series), makes each series fire each
rule at most once, even with two evaluators. A series a run of the rule produced,
directly or through further runs, never fires that rule: results carry their run in the
results table and runs their rule in the runs table.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Engine, delete, func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jip.api_types import MAX_ROW_ID
from jip.db import insert_ignoring_duplicates
from jip.errors import Conflict, JipError, NotFound, Unavailable
from jip.flow import records
from jip.flow.models import FiringModel, RuleIn, RuleModel, StartRun
from jip.flow.schema import FiringOutcome, FlowRule, FlowRuleFiring, FlowRun
from jip.flow.service import FlowService
from jip.meta import SeriesMatcher, check_query
from jip.store import Catalog, visible_series

log = logging.getLogger(__name__)

# Instances committed a moment after a look are caught by looking back this far again.
LOOKBACK = timedelta(seconds=30)
_PROVENANCE_DEPTH = 8


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- stored rules -----------------------------------------------------------------------------


def add_rule(db: Engine, rule: RuleIn, *, user: str) -> RuleModel:
    check_query(rule.query)
    row = FlowRule(
        name=rule.name,
        dag_id=rule.dag_id,
        query=rule.query,
        params=rule.params,
        enabled=rule.enabled,
        created_by=user,
        created_at=records.now(),
    )
    try:
        with Session(db, expire_on_commit=False) as session, session.begin():
            session.add(row)
    except IntegrityError as exc:
        raise Conflict(f"a rule named {rule.name!r} already exists") from exc
    log.info("rule added", extra={"rule": rule.name, "dag_id": rule.dag_id, "user": user})
    return get_rule(db, row.id)


def _visible_firings(scope: Collection[str] | None) -> ColumnElement[bool]:
    """Firings on series of the projects in ``scope`` (None: every firing): a firing names
    its series, so counting or listing the others would tell they exist."""
    if scope is None:
        return true()
    return FlowRuleFiring.series_instance_uid.in_(visible_series(scope))


def list_rules(db: Engine, *, scope: Collection[str] | None = None) -> list[RuleModel]:
    with Session(db) as session:
        rows_counted = session.execute(
            select(FlowRuleFiring.rule_id, func.count())
            .where(_visible_firings(scope))
            .group_by(FlowRuleFiring.rule_id)
        )
        counts: dict[int, int] = {int(rule_id): int(n) for rule_id, n in rows_counted}
        rows = session.scalars(select(FlowRule).order_by(FlowRule.id))
        return [_model(r, counts.get(r.id, 0)) for r in rows]


def find_rule_id(db: Engine, ref: str | int) -> int:
    """A rule's id from its id or its name."""
    with Session(db) as session:
        if isinstance(ref, int) or str(ref).isdecimal():
            row = session.get(FlowRule, int(ref)) if int(ref) <= MAX_ROW_ID else None
        else:
            row = session.scalars(select(FlowRule).where(FlowRule.name == ref)).first()
        if row is None:
            raise NotFound(f"rule {ref!r} not found")
        return row.id


def get_rule(db: Engine, rule_id: int, *, scope: Collection[str] | None = None) -> RuleModel:
    with Session(db) as session:
        row = session.get(FlowRule, rule_id)
        if row is None:
            raise NotFound(f"rule {rule_id} not found")
        count = session.scalar(
            select(func.count())
            .select_from(FlowRuleFiring)
            .where(FlowRuleFiring.rule_id == rule_id, _visible_firings(scope))
        )
        return _model(row, int(count or 0))


def set_enabled(db: Engine, rule_id: int, enabled: bool) -> RuleModel:
    with Session(db) as session, session.begin():
        row = session.get(FlowRule, rule_id)
        if row is None:
            raise NotFound(f"rule {rule_id} not found")
        if enabled and not row.enabled:
            # Series that went quiet while the rule was off are not fired retroactively.
            row.checked_until = records.now()
        row.enabled = enabled
    return get_rule(db, rule_id)


def remove_rule(db: Engine, rule_id: int) -> None:
    with Session(db) as session, session.begin():
        row = session.get(FlowRule, rule_id)
        if row is None:
            raise NotFound(f"rule {rule_id} not found")
        session.execute(delete(FlowRuleFiring).where(FlowRuleFiring.rule_id == rule_id))
        session.delete(row)


def firings(
    db: Engine, rule_id: int, limit: int = 100, *, scope: Collection[str] | None = None
) -> list[FiringModel]:
    get_rule(db, rule_id)
    query = (
        select(FlowRuleFiring)
        .where(FlowRuleFiring.rule_id == rule_id, _visible_firings(scope))
        .order_by(FlowRuleFiring.id.desc())
        .limit(limit)
    )
    with Session(db) as session:
        return [
            FiringModel(
                rule_id=f.rule_id,
                series_instance_uid=f.series_instance_uid,
                run_id=f.run_id,
                outcome=str(f.outcome),
                message=f.message,
                fired_at=_aware(f.fired_at),
            )
            for f in session.scalars(query)
        ]


def _model(row: FlowRule, firing_count: int) -> RuleModel:
    return RuleModel(
        id=row.id,
        name=row.name,
        dag_id=row.dag_id,
        query=row.query,
        params=row.params,
        enabled=row.enabled,
        created_by=row.created_by,
        created_at=_aware(row.created_at),
        firings=firing_count,
    )


# -- evaluation -------------------------------------------------------------------------------


class RuleEvaluator:
    """Fires enabled rules for series that became complete; call :meth:`evaluate` often."""

    def __init__(
        self,
        *,
        service: FlowService,
        matcher: SeriesMatcher,
        quiet_period_s: float,
        user: str = "jip-rules",
    ) -> None:
        self.service = service
        self.db = service.db
        self.matcher = matcher
        self.quiet = timedelta(seconds=quiet_period_s)
        self.user = user

    def evaluate(self, now: datetime | None = None) -> list[FiringModel]:
        """One pass over every enabled rule; returns the firings it made."""
        horizon = (now or records.now()) - self.quiet
        with Session(self.db) as session:
            rules = list(session.scalars(select(FlowRule).where(FlowRule.enabled.is_(True))))
            session.expunge_all()
        fired: list[FiringModel] = []
        for rule in rules:
            since = _aware(rule.checked_until or rule.created_at) - LOOKBACK
            candidates = self._complete_series(since, horizon)
            try:
                if candidates:
                    fired += self._evaluate_rule(rule, candidates)
            except Unavailable as exc:  # the engine is away: look at these again next time
                log.warning(
                    "rule evaluation postponed", extra={"rule": rule.name, "error": str(exc)}
                )
                continue
            with self.db.begin() as conn:
                conn.execute(
                    update(FlowRule).where(FlowRule.id == rule.id).values(checked_until=horizon)
                )
        return fired

    def _complete_series(self, since: datetime, until: datetime) -> list[str]:
        return Catalog(self.db).series_updated_between(since, until)

    def _evaluate_rule(self, rule: FlowRule, candidates: Sequence[str]) -> list[FiringModel]:
        with Session(self.db) as session:
            done = set(
                session.scalars(
                    select(FlowRuleFiring.series_instance_uid).where(
                        FlowRuleFiring.rule_id == rule.id,
                        FlowRuleFiring.series_instance_uid.in_(list(candidates)),
                    )
                )
            )
        fresh = [uid for uid in candidates if uid not in done]
        own = self._made_by_rule(fresh, rule.id)
        try:
            matched = self.matcher.matching(rule.query, [u for u in fresh if u not in own])
        except Unavailable:
            raise
        except JipError as exc:
            log.error("rule cannot be evaluated", extra={"rule": rule.name, "error": str(exc)})
            return []
        return [self._fire(rule, uid) for uid in fresh if uid in matched]

    def _made_by_rule(self, series_uids: Sequence[str], rule_id: int) -> set[str]:
        """The given series that runs of this rule produced, directly or further down."""
        own: set[str] = set()
        frontier = {uid: {uid} for uid in series_uids}  # ancestor -> the candidates it explains
        for _ in range(_PROVENANCE_DEPTH):
            producers = records.runs_producing(self.db, frontier)
            if not producers:
                break
            run_ids = {r for runs in producers.values() for r in runs}
            with Session(self.db) as session:
                runs = {
                    run.run_id: run
                    for run in session.scalars(select(FlowRun).where(FlowRun.run_id.in_(run_ids)))
                }
            next_frontier: dict[str, set[str]] = {}
            for uid, run_ids_of in producers.items():
                for run_id in run_ids_of:
                    run = runs.get(run_id)
                    if run is None:
                        continue
                    if run.rule_id == rule_id:
                        own |= frontier[uid]
                    for source in run.series:
                        next_frontier.setdefault(source, set()).update(frontier[uid])
            frontier = {k: v - own for k, v in next_frontier.items() if v - own}
            if not frontier:
                break
        return own

    def _fire(self, rule: FlowRule, series_uid: str) -> FiringModel:
        stamp = records.now()
        with self.db.begin() as conn:
            inserted = conn.execute(
                insert_ignoring_duplicates(self.db, FlowRuleFiring.__table__),
                {
                    "rule_id": rule.id,
                    "series_instance_uid": series_uid,
                    "outcome": FiringOutcome.STARTED,
                    "message": "",
                    "fired_at": stamp,
                },
            ).rowcount
        if not inserted:  # another evaluator fired it meanwhile
            return self._firing(rule.id, series_uid)
        outcome, run_id, message = FiringOutcome.STARTED, None, ""
        try:
            run = self.service.start(
                rule.dag_id,
                StartRun(series=[series_uid], params=rule.params),
                user=self.user,
                rule_id=rule.id,
            )
            run_id = run.run_id
        except Unavailable:
            with self.db.begin() as conn:  # not fired after all: the next pass tries again
                conn.execute(
                    delete(FlowRuleFiring).where(
                        FlowRuleFiring.rule_id == rule.id,
                        FlowRuleFiring.series_instance_uid == series_uid,
                    )
                )
            raise
        except Exception as exc:  # a failed write too: the firing must not stay STARTED
            outcome, message = FiringOutcome.FAILED, str(exc) or type(exc).__name__
            log.error(
                "rule could not start its workflow", extra={"rule": rule.name, "error": message}
            )
        with self.db.begin() as conn:
            conn.execute(
                update(FlowRuleFiring)
                .where(
                    FlowRuleFiring.rule_id == rule.id,
                    FlowRuleFiring.series_instance_uid == series_uid,
                )
                .values(outcome=outcome, run_id=run_id, message=message)
            )
        log.info(
            "rule fired",
            extra={"rule": rule.name, "series_instance_uid": series_uid, "run_id": run_id},
        )
        return self._firing(rule.id, series_uid)

    def _firing(self, rule_id: int, series_uid: str) -> FiringModel:
        with Session(self.db) as session:
            f = session.scalars(
                select(FlowRuleFiring).where(
                    FlowRuleFiring.rule_id == rule_id,
                    FlowRuleFiring.series_instance_uid == series_uid,
                )
            ).one()
            return FiringModel(
                rule_id=f.rule_id,
                series_instance_uid=f.series_instance_uid,
                run_id=f.run_id,
                outcome=str(f.outcome),
                message=f.message,
                fired_at=_aware(f.fired_at),
            )
