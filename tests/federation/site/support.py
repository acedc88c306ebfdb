"""A site for the agent's tests: a migrated catalog, an index of series documents with
known values, a fake hub joined over mutual TLS, and the jobs researchers send."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from tests.federation.site.fakehub import FakeHub

from jip.base import AuditFilter, AuditLog
from jip.db import make_engine
from jip.federation import (
    BoxKeyPair,
    DeclaredOutput,
    JobSpec,
    SigningKeyPair,
    WorkflowRef,
    encode_key,
    generate_box_keys,
    generate_signing_keys,
    sign_workflow,
)
from jip.federation.site import Backoff, Policies, SiteAgent, SiteFiles, join
from jip.meta.index_sqlite import SqliteIndex
from jip.migrations import upgrade

DIGEST = "sha256:" + "ab" * 32
PROJECT = "prostate"
EDGES = (0.0, 40.0, 60.0, 80.0, 120.0)


def ages(n: int, seed: int = 0) -> list[float]:
    """``n`` ages in [30, 90): every 20-year bin gets at least five of 60 or more."""
    return [30.0 + (i * 7 + seed) % 60 for i in range(n)]


def series_docs(
    values: Sequence[float], project: str = PROJECT, start: int = 0
) -> list[dict[str, Any]]:
    return [
        {
            "SeriesInstanceUID": f"1.2.826.0.1.3680043.8.498.{start + i + 1}",
            "StudyInstanceUID": f"1.2.826.0.1.3680043.8.499.{start + i + 1}",
            "Modality": "MR",
            "PatientAgeYears": value,
            "Projects": [project],
        }
        for i, value in enumerate(values)
    ]


@dataclass
class Site:
    data_dir: Path
    engine: Engine
    index: SqliteIndex
    files: SiteFiles
    hub: FakeHub

    def agent(self, **kwargs: Any) -> SiteAgent:
        kwargs.setdefault("backoff", Backoff(base_s=0.01, cap_s=0.05))
        return SiteAgent(self.engine, self.index, self.files, wait_s=0, **kwargs)

    @property
    def policies(self) -> Policies:
        return Policies(self.engine)

    def audit(self, action: str) -> list[dict[str, Any]]:
        records = AuditLog(self.engine).list(AuditFilter(action=action), limit=1000)
        return [{"target": r.target, "username": r.username, **r.detail} for r in records]


def make_site(directory: Path, hub: FakeHub, values: Sequence[float] = ()) -> Site:
    """A site joined to ``hub`` with one series per value (in project ``prostate``)."""
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{directory / 'catalog.db'}"
    upgrade(url)
    engine = make_engine(url)
    index = SqliteIndex.from_url(f"sqlite:///{directory / 'index.db'}")
    index.upsert(series_docs(values))
    files = SiteFiles.of(directory)
    token = uuid.uuid4().hex
    hub.tokens.add(token)
    join(files, hub.url, token, ca_file=directory.parent / "ca.pem")
    return Site(directory, engine, index, files, hub)


@dataclass
class Researcher:
    box: BoxKeyPair
    publisher: SigningKeyPair

    @classmethod
    def new(cls) -> Researcher:
        return cls(generate_box_keys(), generate_signing_keys())

    def workflow(self, digest: str = DIGEST, name: str = "fed-stats") -> WorkflowRef:
        signature = sign_workflow(name, digest, self.publisher.private)
        return WorkflowRef(
            name=name,
            image_digest=digest,
            signature=encode_key(signature),
            signer=encode_key(self.publisher.public),
        )

    def job(
        self,
        outputs: Sequence[DeclaredOutput] | None = None,
        *,
        query: dict[str, Any] | None = None,
        workflow: WorkflowRef | None = None,
        project: str = PROJECT,
        deadline: datetime | None = None,
    ) -> JobSpec:
        outputs = outputs or (
            DeclaredOutput(name="n", kind="count", field="PatientAgeYears"),
            DeclaredOutput(name="age", kind="histogram", field="PatientAgeYears", edges=EDGES),
        )
        return JobSpec(
            id=uuid.uuid4().hex,
            project=project,
            researcher_key=encode_key(self.box.public),
            workflow=workflow or self.workflow(),
            cohort={
                "format": "jip.cohort",
                "format_version": 1,
                "name": "MR",
                "query": query or {"term": {"Modality": "MR"}},
            },
            outputs=tuple(outputs),
            min_sites=1,
            deadline=deadline or datetime.now(UTC) + timedelta(days=1),
        )


def open_policy(site: Site, researcher: Researcher, **changes: str) -> None:
    """The site trusts the researcher's publisher, lets ``prostate`` take part and
    approves automatically (tests that need more set it themselves)."""
    site.policies.trust("publisher", encode_key(researcher.publisher.public))
    site.policies.set({"projects": PROJECT, "approval": "automatic", **changes})


def close(sites: Iterator[Site] | Sequence[Site]) -> None:
    for site in sites:
        site.index.close()
        site.engine.dispose()
