"""``/api/flow/forwarding``: forwarding rules, their queue and the dead-letter list.

Site admins only: a rule sends every matching series of the site out, whatever its
project. Changes and the admin's retries and drops are in the audit log.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request, Response, status
from sqlalchemy import Engine

from jip.api_types import RowIdPath
from jip.base import AdminDep, AuditDep, ClientIpDep, require_admin
from jip.flow import forwarding
from jip.flow.deps import FlowAdapters
from jip.flow.forwarding import ForwardItemModel, ForwardRuleIn, ForwardRuleModel
from jip.flow.forwarding_schema import ItemState

router = APIRouter(
    prefix="/api/flow/forwarding", tags=["forwarding"], dependencies=[Depends(require_admin)]
)


def _db(request: Request) -> Engine:
    adapters: FlowAdapters = request.app.state.runtime
    return adapters.engine


DbDep = Annotated[Engine, Depends(_db)]


@router.get("/rules")
def list_rules(db: DbDep) -> list[ForwardRuleModel]:
    """Every forwarding rule with how many of its series are in each state."""
    return forwarding.list_rules(db)


@router.post("/rules", status_code=status.HTTP_201_CREATED)
def add_rule(
    rule: ForwardRuleIn, db: DbDep, admin: AdminDep, audit: AuditDep, ip: ClientIpDep
) -> ForwardRuleModel:
    """Forward every series that becomes complete from now on and matches ``query``."""
    added = forwarding.add_rule(db, rule, user=admin.username)
    detail = rule.model_dump()
    audit.record(
        "forward.rule.add", username=admin.username, target=rule.name, detail=detail, client_ip=ip
    )
    return added


@router.get("/rules/{rule_id}")
def get_rule(rule_id: RowIdPath, db: DbDep) -> ForwardRuleModel:
    return forwarding.get_rule(db, rule_id)


@router.patch("/rules/{rule_id}")
def set_enabled(
    rule_id: RowIdPath,
    db: DbDep,
    admin: AdminDep,
    audit: AuditDep,
    ip: ClientIpDep,
    enabled: Annotated[bool, Body(embed=True)],
) -> ForwardRuleModel:
    """Switch a rule on or off; switched on, it starts from series quiet from now on."""
    rule = forwarding.set_enabled(db, rule_id, enabled)
    action = "forward.rule.enable" if enabled else "forward.rule.disable"
    audit.record(action, username=admin.username, target=rule.name, client_ip=ip)
    return rule


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_rule(
    rule_id: RowIdPath, db: DbDep, admin: AdminDep, audit: AuditDep, ip: ClientIpDep
) -> Response:
    """Remove a rule and its queue."""
    name = forwarding.get_rule(db, rule_id).name
    forwarding.remove_rule(db, rule_id)
    audit.record("forward.rule.remove", username=admin.username, target=name, client_ip=ip)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/items")
def list_items(db: DbDep, state: ItemState | None = None) -> list[ForwardItemModel]:
    """The queue, the latest change first; ``?state=dead`` is the dead-letter list."""
    return forwarding.items(db, state)


@router.post("/items/{item_id}/retry")
def retry(
    item_id: RowIdPath, db: DbDep, admin: AdminDep, audit: AuditDep, ip: ClientIpDep
) -> ForwardItemModel:
    """Send a dead letter again at the forwarder's next pass, with a fresh attempt count."""
    item = forwarding.retry(db, item_id)
    _audit(audit, "forward.retry", admin.username, item, ip)
    return item


@router.post("/items/{item_id}/drop")
def drop(
    item_id: RowIdPath, db: DbDep, admin: AdminDep, audit: AuditDep, ip: ClientIpDep
) -> ForwardItemModel:
    """Give up on a dead letter: it leaves the list and is never sent by its rule."""
    item = forwarding.drop(db, item_id)
    _audit(audit, "forward.drop", admin.username, item, ip)
    return item


def _audit(audit: AuditDep, action: str, user: str, item: ForwardItemModel, ip: str) -> None:
    detail = {"series": [item.series_instance_uid], "rule": item.rule, "item": item.id}
    audit.record(action, username=user, target=item.peer, detail=detail, client_ip=ip)
