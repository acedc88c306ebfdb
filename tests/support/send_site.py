"""A site with auth on, for the send and forwarding tests: an admin, a researcher who may
read but not send, a researcher listed in ``forward.senders``; a ``liver`` series (its
project) and an ``other`` series outside every project of theirs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from tests.base.support import (
    Stored,
    add_user,
    auth_for,
    ingest_series,
    series_datasets,
    site_settings,
)

from jip.app import build_app
from jip.base import AuditFilter, AuditRecord
from jip.base.schema import ProjectRole
from jip.config import DicomPeer, DicomWebPeer, ForwardSettings, StoreSettings
from jip.runtime import Runtime, build_runtime


@dataclass
class SendSite:
    runtime: Runtime
    client: TestClient
    headers: dict[str, dict[str, str]]
    series: dict[str, Stored] = field(default_factory=dict)

    def audit(self, action: str) -> list[AuditRecord]:
        return self.runtime.identity.audit.list(AuditFilter(action=action))


def send_site(
    data_dir: Path,
    *,
    peers: dict[str, DicomPeer] | None = None,
    dicomweb_peers: dict[str, DicomWebPeer] | None = None,
    **forward: Any,
) -> SendSite:
    settings = site_settings(data_dir).model_copy(
        update={
            "store": StoreSettings(peers=peers or {}),
            "forward": ForwardSettings(
                senders=["sam"], dicomweb_peers=dicomweb_peers or {}, **forward
            ),
        }
    )
    runtime = build_runtime(settings)
    add_user(runtime, "root", admin=True)
    add_user(runtime, "alice", projects={"liver": ProjectRole.RESEARCHER})
    add_user(runtime, "sam", projects={"liver": ProjectRole.RESEARCHER})
    client = TestClient(build_app(runtime))
    headers = {name: auth_for(client, name) for name in ("root", "alice", "sam")}
    rule = {"project": "liver", "calling_ae_title": "LIVER_CT"}
    assert client.post("/api/projects/rules", json=rule, headers=headers["root"]).is_success
    spool = data_dir.parent / "spool"
    site = SendSite(runtime, client, headers)
    site.series["liver"] = ingest_series(runtime, spool, series_datasets(1), "LIVER_CT")
    site.series["other"] = ingest_series(runtime, spool, series_datasets(2, Modality="MR"))
    return site
