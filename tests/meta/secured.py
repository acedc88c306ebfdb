"""A small site with authentication ON, for tests that ask the API as a given role.

Series in ``liver`` (all of them), some of them in ``lung`` and ``trial-x`` as well:
``alice`` researches in ``liver``, ``vic`` views ``liver``, ``bob`` researches in
``lung``, ``root`` is a site admin.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from tests.base.support import SITE, add_user, auth_for
from tests.meta.test_indexer import indexer_of, ingest, plan_series

from jip.app import build_app
from jip.base import users as users_module
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.meta.fields import ID_FIELD
from jip.runtime import Runtime, build_runtime
from jip.store import SeriesProjects

USERS = ("root", "alice", "vic", "bob")


@dataclass(frozen=True)
class SecuredSite:
    runtime: Runtime
    client: TestClient
    tokens: dict[str, dict[str, str]]
    series: list[str]  # every series, all in liver
    shared: list[str]  # of those, the ones also in lung and trial-x


@contextmanager
def secured_site(root: Path, series: int = 8, **meta: Any) -> Iterator[SecuredSite]:
    """The site above; ``meta``: settings of its ``meta`` section."""
    cost = users_module.DEFAULT_COST
    users_module.DEFAULT_COST = users_module.ScryptCost(n=2**10, r=8, p=1)
    users_module._dummy_hash.cache_clear()
    runtime = build_runtime(
        Settings(data_dir=root / "data", auth={"public_url": SITE}, meta=meta)
    )
    try:
        add_user(runtime, "root", admin=True)
        add_user(runtime, "alice", projects={"liver": ProjectRole.RESEARCHER})
        add_user(runtime, "vic", projects={"liver": ProjectRole.VIEWER})
        add_user(runtime, "bob", projects={"lung": ProjectRole.RESEARCHER})
        runtime.identity.projects.create("trial-x")
        assignments = SeriesProjects(runtime.engine)
        assignments.add_rule("liver", field="Modality", pattern="*")
        planned = plan_series(series, seed=5)
        ingest(runtime, planned, root / "spool")
        uids = [p.expected[ID_FIELD] for p in planned]
        shared = uids[: len(uids) // 2]
        for uid in shared:
            assignments.assign(uid, "lung")
            assignments.assign(uid, "trial-x")
        indexer_of(runtime).drain()
        client = TestClient(build_app(runtime))
        tokens = {name: auth_for(client, name) for name in USERS}
        yield SecuredSite(runtime, client, tokens, uids, shared)
    finally:
        runtime.close()
        users_module.DEFAULT_COST = cost
        users_module._dummy_hash.cache_clear()
