"""Helpers of the BASE tests: a site's settings, users and logins, series ingested into it."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from tests.store.dicomweb.support import part10

from jip.base.keys import KEY_FILE
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.meta.indexer import Indexer
from jip.runtime import Runtime
from jip.samples import image_series, random_patient

SITE = "http://testserver"  # TestClient's base URL, used as the issuer identifier
PASSWORD = "correct horse battery"
DW = "/dicom-web"


def site_settings(data_dir: Path, **auth: Any) -> Settings:
    return Settings(data_dir=data_dir, auth={"public_url": SITE, **auth})


def install_key(settings: Settings, key: Path) -> None:
    target = settings.data_dir / "keys"
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy2(key, target / KEY_FILE)
    (target / KEY_FILE).chmod(0o600)


def add_user(
    runtime: Runtime,
    username: str,
    *,
    admin: bool = False,
    projects: dict[str, ProjectRole] | None = None,
) -> None:
    identity = runtime.identity
    identity.users.create(username, PASSWORD, is_admin=admin)
    for project, role in (projects or {}).items():
        if project not in identity.projects.names():
            identity.projects.create(project)
        identity.projects.set_member(project, username, role)


def password_login(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "client_id": "jip-cli",
            "username": username,
            "password": password,
        },
    )


def tokens_for(client: TestClient, username: str) -> dict[str, Any]:
    response = password_login(client, username)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_for(client: TestClient, username: str) -> dict[str, str]:
    return bearer(tokens_for(client, username)["access_token"])


@dataclass(frozen=True)
class Stored:
    study: str
    series: str
    sops: list[str]

    @property
    def path(self) -> str:
        return f"{DW}/studies/{self.study}/series/{self.series}"


@dataclass
class Site:
    """A site with projects (the ``site`` fixture): its users' headers and series."""

    runtime: Runtime
    client: TestClient
    tokens: dict[str, dict[str, str]]
    series: dict[str, Stored]

    def index(self) -> None:
        runtime = self.runtime
        Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).drain()


def series_datasets(index: int, **attributes: str) -> list[Any]:
    """A small two-slice series of a patient made from ``index``, attributes overridden."""
    datasets = image_series(
        patient=random_patient(random.Random(index), index), slices=2, rows=16, columns=16
    )
    for ds in datasets:
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
    return datasets


def ingest_series(
    runtime: Runtime, spool: Path, datasets: list[Any], calling_ae: str = ""
) -> Stored:
    spool.mkdir(parents=True, exist_ok=True)
    for number, ds in enumerate(datasets):
        path = spool / f"{ds.SOPInstanceUID}-{number}.dcm"
        path.write_bytes(part10(ds))
        runtime.ingestor.ingest_file(path, calling_ae)
    first = datasets[0]
    return Stored(
        str(first.StudyInstanceUID),
        str(first.SeriesInstanceUID),
        [str(ds.SOPInstanceUID) for ds in datasets],
    )
