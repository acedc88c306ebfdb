"""Forwarding rules against Orthanc 1.10 as the peer: a rule sends newly ingested matching
series and not the others; with the peer down a series is retried with back-off, then a
dead letter the admin sees, and a retry after the peer is back delivers it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from tests.base.conftest import cheap_password_hashing  # noqa: F401  (autouse)
from tests.base.support import Stored, ingest_series, series_datasets
from tests.store.conftest import Orthanc, running_orthanc
from tests.store.test_forward_send import series_in
from tests.support.network import free_port
from tests.support.send_site import SendSite, send_site

from jip.config import DicomPeer
from jip.db import Base, make_engine
from jip.flow.forwarder import Forwarder
from jip.flow.forwarding import now
from jip.meta import SeriesMatcher
from jip.migrations import alembic_config, upgrade
from jip.store.forward_send import StoredSeriesSender

RULE = {"name": "to-pacs", "peer": "pacs", "query": {"term": {"Modality": "PT"}}}
ITEMS = "/api/flow/forwarding/items"


@pytest.fixture
def pacs_port() -> int:
    return free_port()


@pytest.fixture
def site(tmp_path: Path, pacs_port: int) -> SendSite:
    pacs = DicomPeer(ae_title="ORTHANC", host="127.0.0.1", port=pacs_port)
    return send_site(tmp_path / "data", peers={"pacs": pacs}, max_attempts=3, backoff_base_s=60)


@pytest.fixture
def orthanc(tmp_path: Path, pacs_port: int) -> Iterator[Any]:
    """Starts Orthanc on the peer's port when called; stops it at the end."""
    with contextlib.ExitStack() as stack:

        def start() -> Orthanc:
            workdir = tmp_path / "orthanc"
            workdir.mkdir(exist_ok=True)
            return stack.enter_context(running_orthanc(workdir, {}, False, pacs_port))

        yield start


def forwarder(site: SendSite) -> Forwarder:
    runtime = site.runtime
    settings = runtime.settings
    return Forwarder(
        db=runtime.engine,
        matcher=SeriesMatcher(
            catalog=runtime.catalog, storage=runtime.storage, index=runtime.index
        ),
        sender=StoredSeriesSender(
            settings=settings, catalog=runtime.catalog, storage=runtime.storage
        ),
        settings=settings.forward,
        quiet_period_s=0,
    )


def add_rule(site: SendSite) -> None:
    response = site.client.post(
        "/api/flow/forwarding/rules", json=RULE, headers=site.headers["root"]
    )
    assert response.status_code == 201, response.text


def ingest(site: SendSite, index: int, modality: str) -> Stored:
    spool = site.runtime.settings.data_dir.parent / "spool"
    return ingest_series(site.runtime, spool, series_datasets(index, Modality=modality))


def items(site: SendSite, state: str | None = None) -> list[dict[str, Any]]:
    params = {"state": state} if state else {}
    response = site.client.get(ITEMS, params=params, headers=site.headers["root"])
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


@pytest.mark.orthanc
def test_a_rule_forwards_newly_ingested_matching_series_and_not_the_others(
    site: SendSite, orthanc: Any
) -> None:
    pacs = orthanc()
    add_rule(site)
    match, miss = ingest(site, 10, "PT"), ingest(site, 11, "MR")
    assert forwarder(site).run_once() == {"queued": 1, "sent": 1, "failed": 0}
    assert len(series_in(pacs, match.series)) == len(match.sops)
    assert series_in(pacs, miss.series) == []
    assert series_in(pacs, site.series["liver"].series) == []  # CT, ingested before: no match
    [item] = items(site)
    assert (item["series_instance_uid"], item["state"], item["attempts"]) == (
        match.series,
        "sent",
        0,
    )
    [entry] = site.audit("dicom.forward")
    assert (entry.username, entry.target, entry.detail["series"]) == (
        "jip-forward",
        "pacs",
        [match.series],
    )
    assert forwarder(site).run_once() == {"queued": 0, "sent": 0, "failed": 0}  # once per rule


@pytest.mark.orthanc
def test_with_the_peer_down_a_series_is_retried_then_dead_and_a_retry_delivers_it(
    site: SendSite, orthanc: Any
) -> None:
    add_rule(site)
    match = ingest(site, 12, "PT")
    start = now()
    assert forwarder(site).run_once(start)["failed"] == 1
    [item] = items(site, "pending")
    assert item["attempts"] == 1 and "ORTHANC" in item["last_error"]
    assert forwarder(site).run_once(start)["failed"] == 0  # backing off: not due yet
    assert forwarder(site).run_once(start + timedelta(hours=1))["failed"] == 1
    assert forwarder(site).run_once(start + timedelta(hours=2))["failed"] == 1
    [dead] = items(site, "dead")
    assert (dead["series_instance_uid"], dead["attempts"]) == (match.series, 3)
    assert "cannot reach" in dead["last_error"] or "association" in dead["last_error"]
    assert forwarder(site).run_once(start + timedelta(hours=9))["failed"] == 0  # dead: left alone
    assert (
        len(site.audit("dicom.forward.failed")) == 2 and len(site.audit("dicom.forward.dead")) == 1
    )

    pacs = orthanc()  # the peer is back
    retry = f"{ITEMS}/{dead['id']}/retry"
    assert site.client.post(retry, headers=site.headers["alice"]).status_code == 403
    response = site.client.post(retry, headers=site.headers["root"])
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["attempts"]) == ("pending", 0)
    assert forwarder(site).run_once()["sent"] == 1
    assert len(series_in(pacs, match.series)) == len(match.sops)
    assert items(site, "dead") == []
    assert [e.username for e in site.audit("forward.retry")] == ["root"]


def test_a_dropped_dead_letter_leaves_the_list_and_is_never_sent_again(site: SendSite) -> None:
    add_rule(site)
    ingest(site, 13, "PT")
    fwd = forwarder(site)
    start = now()
    for hours in range(3):
        fwd.run_once(start + timedelta(hours=hours))
    [dead] = items(site, "dead")
    assert (
        site.client.post(f"{ITEMS}/{dead['id']}/drop", headers=site.headers["alice"]).status_code
        == 403
    )
    response = site.client.post(f"{ITEMS}/{dead['id']}/drop", headers=site.headers["root"])
    assert response.json()["state"] == "dropped"
    assert items(site, "dead") == []
    assert fwd.run_once(start + timedelta(hours=5)) == {"queued": 0, "sent": 0, "failed": 0}
    again = site.client.post(f"{ITEMS}/{dead['id']}/drop", headers=site.headers["root"])
    assert again.status_code == 400 and "only dead letters" in again.json()["detail"]


def test_rules_are_for_admins_and_a_bad_query_is_a_400_naming_it(site: SendSite) -> None:
    rules = "/api/flow/forwarding/rules"
    assert site.client.get(rules, headers=site.headers["alice"]).status_code == 403
    assert site.client.post(rules, json=RULE, headers=site.headers["sam"]).status_code == 403
    bad = {**RULE, "query": {"term": {"NoSuchField": "x"}}}
    response = site.client.post(rules, json=bad, headers=site.headers["root"])
    assert response.status_code == 400 and "NoSuchField" in response.json()["detail"]
    add_rule(site)
    assert site.client.post(rules, json=RULE, headers=site.headers["root"]).status_code == 409
    [rule] = site.client.get(rules, headers=site.headers["root"]).json()
    off = site.client.patch(
        f"{rules}/{rule['id']}", json={"enabled": False}, headers=site.headers["root"]
    )
    assert off.json()["enabled"] is False
    ingest(site, 14, "PT")
    assert forwarder(site).run_once()["queued"] == 0  # a disabled rule queues nothing
    assert (
        site.client.delete(f"{rules}/{rule['id']}", headers=site.headers["root"]).status_code == 204
    )
    assert [e.action for e in site.audit("forward.rule.")] == [
        "forward.rule.remove",
        "forward.rule.disable",
        "forward.rule.add",
    ]


def test_migration_0013_creates_the_forwarding_tables_as_declared_and_downgrades(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert [d for d in diff if "forward_" in repr(d)] == []
        config = alembic_config(url)
        command.downgrade(config, "0012_pacs_retrievals")
        assert not inspect(engine).has_table("forward_items")
        command.upgrade(config, "head")
        assert inspect(engine).has_table("forward_rules")
    finally:
        engine.dispose()


@pytest.mark.orthanc
def test_jip_up_runs_the_forwarder_in_the_indexer_role(site: SendSite, orthanc: Any) -> None:
    from jip.embedded import Role, forward_component, service_components

    pacs = orthanc()
    base = site.runtime.settings
    settings = base.model_copy(
        update={
            "forward": base.forward.model_copy(update={"interval_s": 0.05}),
            "meta": base.meta.model_copy(update={"series_quiet_period_s": 0}),
        }
    )
    assert "forwarder" in [c.name for c in service_components(settings, Role.INDEXER)]
    assert "forwarder" not in [c.name for c in service_components(settings, Role.FLOW)]
    add_rule(site)
    match = ingest(site, 15, "PT")
    component = forward_component(settings)
    assert component.not_ready() == "the forwarder is not running"
    component.start()
    try:
        deadline = time.monotonic() + 60
        while not items(site, "sent") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert component.not_ready() is None
    finally:
        component.stop()
    assert [i["series_instance_uid"] for i in items(site, "sent")] == [match.series]
    assert len(series_in(pacs, match.series)) == len(match.sops)
