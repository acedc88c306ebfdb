"""Jobs and results carried by hand: a signed job bundle goes through the site's policy,
approval and audit like a hub's job; its sealed result comes back signed by the site;
unsigned, tampered, foreign, untrusted and replayed bundles are refused and audited."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine
from tests.federation.site.fakehub import FakeHub, running_hub
from tests.federation.site.support import Researcher, ages, make_site, series_docs

from jip.base import AuditFilter, AuditLog
from jip.cli.main import _register, cli
from jip.db import make_engine
from jip.errors import Conflict, Forbidden, Invalid, NotFound
from jip.federation import encode_key, generate_signing_keys, open_result
from jip.federation.site import (
    JobBook,
    Policies,
    SiteAgent,
    SiteFiles,
    approve,
    export_result,
    hub_agent,
    import_job,
    init_offline,
    make_job_bundle,
    read_result_bundle,
    settle_carried,
    site_identity,
)
from jip.meta.index_sqlite import SqliteIndex
from jip.migrations import upgrade

SITE = "lakeside"


@dataclass
class OfflineSite:
    """A site that never reaches a hub: bundles are its only channel."""

    data_dir: Path
    engine: Engine
    index: SqliteIndex
    files: SiteFiles

    def audit(self, action: str) -> list[dict[str, Any]]:
        records = AuditLog(self.engine).list(AuditFilter(action=action), limit=1000)
        return [{"target": r.target, "username": r.username, **r.detail} for r in records]

    def take(self, data: bytes) -> Any:
        return import_job(self.engine, self.index, self.files, data, by="cli:admin")

    def export(self, job_id: str) -> bytes:
        return export_result(self.engine, self.index, self.files, job_id, by="cli:admin")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[OfflineSite]:
    data_dir = tmp_path / "site"
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'catalog.db'}"
    upgrade(url)
    engine = make_engine(url)
    index = SqliteIndex.from_url(f"sqlite:///{data_dir / 'index.db'}")
    index.upsert(series_docs(ages(60)))
    files = SiteFiles.of(data_dir)
    init_offline(files, SITE)
    yield OfflineSite(data_dir, engine, index, files)
    index.close()
    engine.dispose()


@pytest.fixture
def researcher(site: OfflineSite) -> Researcher:
    found = Researcher.new()
    Policies(site.engine).trust("publisher", encode_key(found.publisher.public))
    Policies(site.engine).set({"projects": "prostate", "approval": "automatic"})
    return found


def test_a_bundle_job_runs_under_the_policy_and_the_researcher_opens_its_result(
    site: OfflineSite, researcher: Researcher
) -> None:
    job = researcher.job()
    data = make_job_bundle(job, researcher.publisher, site_id=SITE)
    assert site.take(data).state.value == "done"  # automatic approval: it ran at once
    released = site.export(job.id)
    identity = site_identity(site.files).keys.public
    result = read_result_bundle(released, encode_key(identity))
    outputs = open_result(result, researcher.box.private)
    assert outputs["n"] == {"all:n": 60}
    assert sum(outputs["age"]["all:counts"]) == 60
    imported, exported = site.audit("fed.bundle.imported"), site.audit("fed.bundle.exported")
    assert imported[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert imported[0]["size"] == len(data) and imported[0]["target"] == f"job:{job.id}"
    assert exported[0]["sha256"] == hashlib.sha256(released).hexdigest()
    assert exported[0]["size"] == len(released)
    assert exported[0]["result_sha256"] == result.sha256
    assert [r["via"] for r in site.audit("fed.job.received")] == ["bundle"]
    assert len(site.audit("fed.result.released")) == 1


def test_a_carried_job_waits_for_manual_approval_before_anything_leaves(
    site: OfflineSite, researcher: Researcher
) -> None:
    Policies(site.engine).set({"approval": "manual"})
    job = researcher.job()
    assert site.take(make_job_bundle(job, researcher.publisher, site_id=SITE)).state.value == (
        "queued"
    )
    with pytest.raises(Conflict, match="queued"):
        site.export(job.id)
    assert site.audit("fed.bundle.exported") == []
    approve(site.engine, job.id, "cli:approver")
    settle_carried(site.engine, site.index, site.files)
    assert JobBook(site.engine).get(job.id).state.value == "done"
    assert site.export(job.id) == site.export(job.id)  # the same stored result, signed alike


def test_a_bundle_refused_by_policy_says_why_and_releases_nothing(
    site: OfflineSite, researcher: Researcher
) -> None:
    job = researcher.job(project="liver")
    record = site.take(make_job_bundle(job, researcher.publisher, site_id=SITE))
    assert record.state.value == "refused" and "liver" in (record.reason or "")
    with pytest.raises(Conflict, match="refused"):
        site.export(job.id)


def test_unsigned_tampered_untrusted_foreign_and_replayed_bundles_are_refused(
    site: OfflineSite, researcher: Researcher
) -> None:
    job = researcher.job()
    signed = make_job_bundle(job, researcher.publisher, site_id=SITE)
    unsigned = json.dumps(job.model_dump(mode="json")).encode()
    envelope = json.loads(signed)
    envelope["bundle"]["job"]["cohort"]["query"] = {"match_all": {}}
    tampered = json.dumps(envelope).encode()
    stranger = make_job_bundle(job, generate_signing_keys(), site_id=SITE)
    foreign = make_job_bundle(job, researcher.publisher, site_id="elsewhere")
    with pytest.raises(Invalid, match="unsigned"):
        site.take(unsigned)
    with pytest.raises(Forbidden, match="signature"):
        site.take(tampered)
    with pytest.raises(Forbidden, match="does not trust"):
        site.take(stranger)
    with pytest.raises(Forbidden, match="elsewhere"):
        site.take(foreign)
    with pytest.raises(Invalid, match="JSON"):
        site.take(b"PK\x03\x04 not json")
    site.take(signed)
    with pytest.raises(Conflict, match="already"):
        site.take(signed)
    refused = site.audit("fed.bundle.refused")
    assert len(refused) == 6 and all(r["sha256"] and r["size"] and r["reason"] for r in refused)
    assert [r.job_id for r in JobBook(site.engine).all()] == [job.id]
    assert len(site.audit("fed.result.released")) == 1  # the replay ran nothing


def test_the_researcher_refuses_a_result_bundle_of_another_key_or_altered(
    site: OfflineSite, researcher: Researcher
) -> None:
    job = researcher.job()
    site.take(make_job_bundle(job, researcher.publisher, site_id=SITE))
    released = site.export(job.id)
    with pytest.raises(Forbidden, match="not by the site"):
        read_result_bundle(released, generate_signing_keys().public)
    envelope = json.loads(released)
    envelope["bundle"]["result"]["round"] = 2
    with pytest.raises(Forbidden, match="signature"):
        read_result_bundle(json.dumps(envelope).encode(), site_identity(site.files).keys.public)


def test_only_a_job_that_came_by_bundle_leaves_by_bundle(site: OfflineSite) -> None:
    with pytest.raises(NotFound, match="bundle"):
        site.export("0" * 32)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    with running_hub(tmp_path) as fake:
        yield fake


def test_the_hub_agent_leaves_a_carried_job_to_its_bundle(tmp_path: Path, hub: FakeHub) -> None:
    joined = make_site(tmp_path / "joined", hub, ages(60))
    researcher = Researcher.new()
    joined.policies.trust("publisher", encode_key(researcher.publisher.public))
    joined.policies.set({"projects": "prostate", "approval": "manual"})
    site_id = joined.files.hub()["site_id"]
    job = researcher.job()
    import_job(
        joined.engine,
        joined.index,
        joined.files,
        make_job_bundle(job, researcher.publisher, site_id=site_id),
        by="cli:admin",
    )
    approve(joined.engine, job.id, "cli:approver")
    agent = hub_agent(SiteAgent(joined.engine, joined.index, joined.files, wait_s=0))
    agent.cycle()
    agent.hub.close()
    assert hub.state_of(job.id) is None and hub.results == {}  # the hub never heard of it
    assert JobBook(joined.engine).get(job.id).state.value == "approved"
    settle_carried(joined.engine, joined.index, joined.files)
    assert JobBook(joined.engine).get(job.id).state.value == "done"
    joined.index.close()
    joined.engine.dispose()


def test_bundles_from_the_command_line(tmp_path: Path) -> None:
    _register()
    data_dir = tmp_path / "data"

    def fed(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "fed", *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "identity key" in fed("offline-init", SITE)
    about = json.loads(fed("identity", "--json"))
    researcher = Researcher.new()
    fed("trust", "add", "publisher", encode_key(researcher.publisher.public))
    fed("policy", "set", "projects=prostate")
    index = SqliteIndex.from_url(f"sqlite:///{data_dir / 'index.db'}")
    index.upsert(series_docs(ages(60)))
    index.close()
    job = researcher.job()
    bundle, answer = tmp_path / "job.json", tmp_path / "result.json"
    bundle.write_bytes(make_job_bundle(job, researcher.publisher, site_id=about["site_id"]))
    assert "queued" in fed("import-job", str(bundle))
    assert "done" in fed("approve", job.id)
    fed("export-result", job.id, str(answer))
    result = read_result_bundle(answer.read_bytes(), about["identity_key"])
    assert open_result(result, researcher.box.private)["n"] == {"all:n": 60}
    again = CliRunner().invoke(
        cli, ["--data-dir", str(data_dir), "fed", "export-result", job.id, str(answer)]
    )
    assert again.exit_code != 0 and "exists" in again.output
