"""A small research network in one process: the real hub (``running_hub``), sites with
their own catalog and index of series documents whose values are known, each joined over
mutual TLS and running its agent in a thread, and a researcher's home.

Each series document has a value (``PatientAgeYears``) and the fields its group label is
made of (``<body part>/<field strength>/<sequence>``, grouped by ``GROUP_BY``), so a
test knows every value a job pools and can compare with NumPy and SciPy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from tests.federation.hub.support import RunningHub
from tests.federation.site.support import PROJECT, Researcher

from jip.db import make_engine
from jip.federation import encode_key
from jip.federation.hub import add_site
from jip.federation.requester import ResearcherHome
from jip.federation.site import Backoff, Policies, SiteAgent, SiteFiles, join
from jip.meta.index_sqlite import SqliteIndex
from jip.migrations import upgrade

FIELD = "PatientAgeYears"
GROUP_BY = ["BodyPartExamined", "MagneticFieldStrength", "SequenceName"]
"""A group label ``PZ/3/v1`` is a series' body part, field strength and sequence."""
ALL_OUTPUTS = "count,histogram,sufficient_stats,levene_round1,levene_round2,count_at_most"
UID_ROOT = "1.2.826.0.1.3680043.8.498"


def documents(values: Mapping[str, Sequence[float]], site_number: int) -> list[dict[str, Any]]:
    """One series per value, with the body part, field strength and sequence of its
    group label (``PZ/3/v1``: PZ at 3 T, sequence v1)."""
    docs = []
    for g, (group, found) in enumerate(sorted(values.items())):
        for i, value in enumerate(found):
            uid = f"{UID_ROOT}.{site_number}.{g + 1}.{i + 1}"
            body_part, tesla, sequence = group.split("/")
            docs.append(
                {
                    "SeriesInstanceUID": uid,
                    "StudyInstanceUID": uid + ".1",
                    "Modality": "MR",
                    FIELD: float(value),
                    "BodyPartExamined": body_part,
                    "MagneticFieldStrength": float(tesla),
                    "SequenceName": sequence,
                    "Projects": [PROJECT],
                }
            )
    return docs


@dataclass
class Site:
    name: str
    engine: Engine
    index: SqliteIndex
    agent: SiteAgent


@dataclass
class Network:
    """The hub, the sites (agents running or not) and the researcher's home."""

    hub: RunningHub
    researcher: Researcher
    home: ResearcherHome
    sites: list[Site] = field(default_factory=list)

    def add_site(
        self, name: str, values: Mapping[str, Sequence[float]], *, running: bool = True
    ) -> Site:
        """A site joined to the hub holding ``values`` per group; its policy trusts the
        researcher's publisher, lets every output kind leave and approves by itself."""
        directory = self.hub.tmp / "sites" / name
        directory.mkdir(parents=True)
        url = f"sqlite:///{directory / 'catalog.db'}"
        upgrade(url)
        engine = make_engine(url)
        index = SqliteIndex.from_url(f"sqlite:///{directory / 'index.db'}")
        index.upsert(documents(values, len(self.sites) + 1))
        files = SiteFiles.of(directory)
        enrolment = add_site(self.hub.hub, name)
        join(files, self.hub.url, enrolment.token, ca_file=self.hub.hub.paths.ca_cert)
        policies = Policies(engine)
        policies.trust("publisher", encode_key(self.researcher.publisher.public))
        policies.set(
            {
                "projects": PROJECT,
                "approval": "automatic",
                "allowed_outputs": ALL_OUTPUTS,
                "min_cell_count": "1",
                "min_cohort_size": "3",
            }
        )
        agent = SiteAgent(engine, index, files, wait_s=1, backoff=Backoff(0.01, 0.05))
        site = Site(name, engine, index, agent)
        self.sites.append(site)
        if running:
            agent.start()
        return site

    def cohort_file(self) -> Path:
        """The cohort as `jip cohort export` writes it: every MR series."""
        path = self.hub.tmp / "cohort.json"
        path.write_text(
            json.dumps(
                {
                    "format": "jip.cohort",
                    "format_version": 1,
                    "name": "MR",
                    "query": {"term": {"Modality": "MR"}},
                }
            )
        )
        return path

    def close(self) -> None:
        for site in self.sites:
            site.agent.stop()
            site.index.close()
            site.engine.dispose()


def network(hub: RunningHub) -> Iterator[Network]:
    """The researcher's home at ``<tmp>/researcher``, with the workflow signed."""
    researcher = Researcher.new()
    home = ResearcherHome.init(
        hub.tmp / "researcher", hub.url, hub.researcher_token, hub.hub.paths.ca_cert
    )
    home.save_workflow(researcher.workflow())
    found = Network(hub, researcher, home)
    try:
        yield found
    finally:
        found.close()
