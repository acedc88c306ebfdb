"""Forwarding rules and their queue: which series go to which peer, and what became of them.

A forwarding rule sends every complete series that matches its cohort query to a peer.
Why not an auto-rule whose workflow is ``send``: a send needs no operator, and its
failures are the peer's (down, refusing), which want per-series retries with back-off and
a dead-letter list the admin acts on, not a failed Airflow run per series; the forwarder
(:mod:`jip.flow.forwarder`) works without Airflow. It decides "complete" and "matches"
exactly as auto-rules do (the catalog's quiet period, :class:`jip.meta.SeriesMatcher`).

This module holds the stored rules and the queue operations; the API is
:mod:`jip.flow.forwarding_routes`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jip.api_types import MAX_ROW_ID
from jip.db import insert_ignoring_duplicates
from jip.errors import Conflict, Invalid, NotFound
from jip.flow.forwarding_schema import ForwardItem, ForwardRule, ItemState
from jip.meta import check_query

log = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every one stored here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ForwardRuleIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)
    query: dict[str, Any] = Field(default_factory=dict)
    peer: str = Field(min_length=1, max_length=64)
    enabled: bool = True


class ForwardRuleModel(ForwardRuleIn):
    id: int
    created_by: str
    created_at: datetime
    counts: dict[str, int] = Field(default_factory=dict)  # items per state


class ForwardItemModel(BaseModel):
    id: int
    rule_id: int
    rule: str
    series_instance_uid: str
    peer: str
    state: ItemState
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    updated_at: datetime


# -- rules ------------------------------------------------------------------------------------
def add_rule(db: Engine, rule: ForwardRuleIn, *, user: str) -> ForwardRuleModel:
    """Store a rule; it looks only at series that go quiet from now on."""
    check_query(rule.query)
    stamp = now()
    row = ForwardRule(
        name=rule.name,
        query=rule.query,
        peer=rule.peer,
        enabled=rule.enabled,
        created_by=user[:64],
        created_at=stamp,
        checked_until=stamp,
    )
    try:
        with Session(db, expire_on_commit=False) as session, session.begin():
            session.add(row)
    except IntegrityError as exc:
        raise Conflict(f"a forwarding rule named {rule.name!r} already exists") from exc
    log.info("forwarding rule added", extra={"rule": rule.name, "peer": rule.peer, "user": user})
    return get_rule(db, row.id)


def list_rules(db: Engine) -> list[ForwardRuleModel]:
    counts = _counts(db)
    with Session(db) as session:
        rows = session.scalars(select(ForwardRule).order_by(ForwardRule.id))
        return [_rule_model(row, counts.get(row.id, {})) for row in rows]


def get_rule(db: Engine, rule_id: int) -> ForwardRuleModel:
    with Session(db) as session:
        row = session.get(ForwardRule, rule_id) if rule_id <= MAX_ROW_ID else None
        if row is None:
            raise NotFound(f"forwarding rule {rule_id} not found")
        return _rule_model(row, _counts(db).get(rule_id, {}))


def set_enabled(db: Engine, rule_id: int, enabled: bool) -> ForwardRuleModel:
    with Session(db) as session, session.begin():
        row = session.get(ForwardRule, rule_id) if rule_id <= MAX_ROW_ID else None
        if row is None:
            raise NotFound(f"forwarding rule {rule_id} not found")
        if enabled and not row.enabled:
            row.checked_until = now()  # series that went quiet while it was off stay here
        row.enabled = enabled
    return get_rule(db, rule_id)


def remove_rule(db: Engine, rule_id: int) -> None:
    """Remove a rule and its queue (sends not made yet are not made)."""
    with Session(db) as session, session.begin():
        row = session.get(ForwardRule, rule_id) if rule_id <= MAX_ROW_ID else None
        if row is None:
            raise NotFound(f"forwarding rule {rule_id} not found")
        session.query(ForwardItem).filter(ForwardItem.rule_id == rule_id).delete()
        session.delete(row)


def _counts(db: Engine) -> dict[int, dict[str, int]]:
    query = select(ForwardItem.rule_id, ForwardItem.state, func.count()).group_by(
        ForwardItem.rule_id, ForwardItem.state
    )
    counts: dict[int, dict[str, int]] = {}
    with Session(db) as session:
        for rule_id, state, n in session.execute(query):
            counts.setdefault(int(rule_id), {})[str(state)] = int(n)
    return counts


def _rule_model(row: ForwardRule, counts: dict[str, int]) -> ForwardRuleModel:
    return ForwardRuleModel(
        id=row.id,
        name=row.name,
        query=row.query,
        peer=row.peer,
        enabled=row.enabled,
        created_by=row.created_by,
        created_at=aware(row.created_at),
        counts=counts,
    )


# -- the queue --------------------------------------------------------------------------------
def enqueue(db: Engine, rule: ForwardRule, series_uids: Sequence[str]) -> int:
    """Queue ``series_uids`` for ``rule`` (each once per rule, ever); how many were new."""
    if not series_uids:
        return 0
    stamp = now()
    rows = [
        {
            "rule_id": rule.id,
            "series_instance_uid": uid,
            "peer": rule.peer,
            "state": ItemState.PENDING.value,
            "attempts": 0,
            "next_attempt_at": stamp,
            "last_error": "",
            "created_at": stamp,
            "updated_at": stamp,
        }
        for uid in series_uids
    ]
    with db.begin() as conn:
        statement = insert_ignoring_duplicates(db, ForwardItem.__table__)
        return sum(conn.execute(statement, row).rowcount for row in rows)


def due(db: Engine, at: datetime, limit: int = 100) -> list[ForwardItemModel]:
    """Pending items whose time has come, the longest waiting first."""
    return _items(
        db,
        (ForwardItem.state == ItemState.PENDING.value, ForwardItem.next_attempt_at <= at),
        order=ForwardItem.next_attempt_at,
        limit=limit,
    )


def items(db: Engine, state: ItemState | None = None, limit: int = 200) -> list[ForwardItemModel]:
    """Items in ``state`` (all if None), the latest change first."""
    where = () if state is None else (ForwardItem.state == state.value,)
    return _items(db, where, order=ForwardItem.updated_at.desc(), limit=limit)


def get_item(db: Engine, item_id: int) -> ForwardItemModel:
    found = _items(db, (ForwardItem.id == item_id,), order=ForwardItem.id, limit=1)
    if not found or item_id > MAX_ROW_ID:
        raise NotFound(f"forwarding item {item_id} not found")
    return found[0]


def _items(db: Engine, where: Sequence[Any], *, order: Any, limit: int) -> list[ForwardItemModel]:
    query = (
        select(ForwardItem, ForwardRule.name)
        .join(ForwardRule, ForwardRule.id == ForwardItem.rule_id)
        .where(*where)
        .order_by(order)
        .limit(limit)
    )
    with Session(db) as session:
        return [
            ForwardItemModel(
                id=item.id,
                rule_id=item.rule_id,
                rule=name,
                series_instance_uid=item.series_instance_uid,
                peer=item.peer,
                state=ItemState(item.state),
                attempts=item.attempts,
                next_attempt_at=aware(item.next_attempt_at),
                last_error=item.last_error,
                created_at=aware(item.created_at),
                updated_at=aware(item.updated_at),
            )
            for item, name in session.execute(query)
        ]


def mark_sent(db: Engine, item_id: int) -> None:
    _set(db, item_id, state=ItemState.SENT.value, last_error="", updated_at=now())


def mark_failed(
    db: Engine, item: ForwardItemModel, error: str, *, max_attempts: int, backoff: timedelta
) -> ItemState:
    """One more failed attempt: pending again after ``backoff``, or dead at the limit."""
    attempts = item.attempts + 1
    state = ItemState.DEAD if attempts >= max_attempts else ItemState.PENDING
    stamp = now()
    _set(
        db,
        item.id,
        state=state.value,
        attempts=attempts,
        last_error=error[:4000],
        next_attempt_at=stamp + backoff,
        updated_at=stamp,
    )
    return state


def retry(db: Engine, item_id: int) -> ForwardItemModel:
    """A dead letter (or a dropped one) goes back to the queue with a fresh count."""
    item = get_item(db, item_id)
    if item.state not in (ItemState.DEAD, ItemState.DROPPED):
        raise Invalid(f"forwarding item {item_id} is {item.state.value}: only dead letters retry")
    stamp = now()
    _set(
        db,
        item_id,
        state=ItemState.PENDING.value,
        attempts=0,
        next_attempt_at=stamp,
        updated_at=stamp,
    )
    return get_item(db, item_id)


def drop(db: Engine, item_id: int) -> ForwardItemModel:
    """The admin gives up on a dead letter; it stays recorded, never queued again."""
    item = get_item(db, item_id)
    if item.state is not ItemState.DEAD:
        raise Invalid(f"forwarding item {item_id} is {item.state.value}: only dead letters drop")
    _set(db, item_id, state=ItemState.DROPPED.value, updated_at=now())
    return get_item(db, item_id)


def _set(db: Engine, item_id: int, **values: Any) -> None:
    with db.begin() as conn:
        conn.execute(update(ForwardItem).where(ForwardItem.id == item_id).values(**values))
