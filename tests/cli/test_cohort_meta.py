"""`jip cohort …` and `jip meta …` against a real site served by uvicorn on a free port."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from tests.base.support import add_user, tokens_for
from tests.meta import reference
from tests.meta.test_indexer import indexer_of, ingest, plan_series
from tests.support.network import free_port
from tests.support.servers import serve_in_thread

from jip.app import build_app
from jip.base import users as users_module
from jip.base.schema import ProjectRole
from jip.cli import cohort as cohort_cli
from jip.cli import meta as meta_cli
from jip.cli.main import cli
from jip.cli.site import save_token
from jip.config import Settings
from jip.embedded import meta_indexer
from jip.meta.fields import ID_FIELD
from jip.runtime import Runtime, build_runtime
from jip.store import SeriesProjects

cli.add_command(cohort_cli.cohort)  # without the other services' commands
cli.add_command(meta_cli.meta)

CT_THIN = {
    "bool": {"filter": [{"term": {"Modality": "CT"}}, {"range": {"SliceThickness": {"lte": 3}}}]}
}
BY_MAKER = {"by_maker": {"terms": {"field": "Manufacturer"}}}


class Site:
    def __init__(
        self, runtime: Runtime, url: str, expected: list[dict[str, Any]], tokens: dict[str, str]
    ) -> None:
        self.runtime, self.url, self.expected, self.tokens = runtime, url, expected, tokens


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    cost = users_module.DEFAULT_COST
    users_module.DEFAULT_COST = users_module.ScryptCost(n=2**10, r=8, p=1)
    root = tmp_path_factory.mktemp("cli")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=root / "data",
        http_port=port,
        auth={"public_url": url},
        meta={"index_interval_s": 0.05},
    )
    runtime = build_runtime(settings)
    runtime.identity.projects.create("liver")  # every series is alice's to search
    SeriesProjects(runtime.engine).add_rule("liver", field="Modality", pattern="*")
    planned = plan_series(40, seed=41)
    ingest(runtime, planned, root / "spool")
    for name, projects in (
        ("alice", {"liver": ProjectRole.RESEARCHER}),
        ("bob", {"lung": ProjectRole.RESEARCHER}),
    ):
        add_user(runtime, name, projects=projects)
    add_user(runtime, "root", admin=True)
    app = build_app(runtime)
    local = TestClient(app, base_url=url)
    tokens = {n: tokens_for(local, n)["access_token"] for n in ("alice", "bob", "root")}
    indexer = meta_indexer(settings)
    indexer.start()
    with serve_in_thread(app, port=port):
        deadline = time.monotonic() + 30
        while runtime.catalog.unindexed(1) != []:
            assert time.monotonic() < deadline, "the site did not index its series"
            time.sleep(0.05)
        yield Site(runtime, url, [p.expected for p in planned], tokens)
    indexer.stop()
    runtime.close()
    users_module.DEFAULT_COST = cost


@pytest.fixture
def login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: Site) -> Any:
    """``login(name)``: the CLI's stored token is ``name``'s (as after `jip login`)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("JIP_API_TOKEN", raising=False)

    def as_user(name: str) -> None:
        save_token(
            {
                "site": site.url,
                "access_token": site.tokens[name],
                "refresh_token": "",
                "expires_at": time.time() + 3600,
                "token_endpoint": f"{site.url}/auth/token",
            }
        )

    return as_user


def jip(site: Site, *args: str, url: bool = True) -> Result:
    data_dir = site.runtime.settings.data_dir
    extra = ["--url", site.url] if url else []
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args, *extra])


def test_search_prints_series_and_facets(site: Site, login: Any) -> None:
    login("alice")
    result = jip(
        site,
        "cohort",
        "search",
        json.dumps(CT_THIN),
        "--aggs",
        json.dumps(BY_MAKER),
        "--limit",
        "3",
    )
    assert result.exit_code == 0, result.output
    matching = reference.search(site.expected, CT_THIN)
    assert f"{len(matching)} series match (showing 1-3)" in result.output
    assert "MODALITY" in result.output and "SERIESINSTANCEUID" in result.output
    for bucket in reference.terms(matching, "Manufacturer")["buckets"]:
        assert any(
            line.split() == [*bucket["key"].split(), str(bucket["doc_count"])]
            for line in result.output.splitlines()
        ), bucket

    as_json = jip(
        site,
        "cohort",
        "search",
        json.dumps(CT_THIN),
        "--json",
        "--limit",
        "100",
        "--fields",
        "Modality",
    )
    found = json.loads(as_json.output)
    assert {h[ID_FIELD] for h in found["hits"]} == {d[ID_FIELD] for d in matching}


def test_errors_are_messages_not_tracebacks(site: Site, login: Any, tmp_path: Path) -> None:
    login("alice")
    bad = jip(site, "cohort", "search", '{"range": {"SliceThickness": {"below": 3}}}')
    assert bad.exit_code == 1
    assert "query.range.SliceThickness: unknown option 'below'" in bad.output
    assert "(HTTP 400)" in bad.output and "Traceback" not in bad.output
    not_json = jip(site, "cohort", "search", "{Modality: CT}")
    assert not_json.exit_code == 2 and "not JSON" in not_json.output
    (tmp_path / "config" / "jip" / "token.json").unlink()
    anonymous = jip(site, "cohort", "list")
    assert anonymous.exit_code == 1 and "missing bearer token" in anonymous.output


def test_save_list_show_export_and_import(site: Site, login: Any, tmp_path: Path) -> None:
    login("alice")
    saved = jip(
        site,
        "cohort",
        "save",
        "CT thin",
        "--query",
        json.dumps(CT_THIN),
        "--description",
        "thin CT",
        "--freeze",
        "--json",
    )
    assert saved.exit_code == 0, saved.output
    cohort = json.loads(saved.output)
    wanted = len(reference.search(site.expected, CT_THIN))
    assert (cohort["project"], cohort["frozen_series"]) == ("liver", wanted)

    listed = jip(site, "cohort", "list")
    assert "CT thin" in listed.output and f"{wanted} series" in listed.output
    shown = jip(site, "cohort", "show", cohort["id"], "--series", "--limit", "2")
    assert "thin CT" in shown.output and f"{wanted} series" in shown.output
    assert '"Modality": "CT"' in shown.output

    exported = tmp_path / "ct-thin.json"
    result = jip(site, "cohort", "export", cohort["id"], "-o", str(exported))
    assert result.exit_code == 0, result.output
    document = json.loads(exported.read_text())
    assert document["query"] == CT_THIN and "series" not in document

    login("bob")
    assert jip(site, "cohort", "show", cohort["id"]).exit_code == 1  # not bob's project
    imported = jip(site, "cohort", "import", str(exported), "--json")
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.output)["project"] == "lung"
    mine = json.loads(jip(site, "cohort", "list", "--json").output)
    assert [(c["name"], c["source_site"]) for c in mine] == [("CT thin", site.url)]


def test_the_running_site_is_found_through_its_state_file(
    site: Site, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JIP_API_TOKEN", site.tokens["alice"])  # a stored login's site comes first
    state = site.runtime.settings.state_file
    state.write_text(json.dumps({"http": site.url.replace("127.0.0.1", "0.0.0.0")}))
    try:
        result = jip(site, "meta", "status", "--json", url=False)
    finally:
        state.unlink()
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"pending": 0, "failed": 0, "documents": len(site.expected)}


def test_meta_reindex_follows_the_running_indexer(site: Site, login: Any) -> None:
    login("alice")
    refused = jip(site, "meta", "reindex")
    assert refused.exit_code == 1 and "only site admins" in refused.output
    login("root")
    before = site.runtime.index.search(limit=100).hits
    result = jip(site, "meta", "reindex")
    assert result.exit_code == 0, result.output
    instances = site.runtime.catalog.counts()["instances"]
    assert f"{instances} instances queued" in result.output and "Done." in result.output
    assert site.runtime.catalog.unindexed(1) == []
    after = site.runtime.index.search(limit=100).hits
    assert sorted(after, key=lambda d: d[ID_FIELD]) == sorted(before, key=lambda d: d[ID_FIELD])
    errors = jip(site, "meta", "errors")
    assert errors.exit_code == 0 and "0 instances failed" in errors.output


def test_local_reindex_rebuilds_a_lost_index_from_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", auth={"enabled": False})
    runtime = build_runtime(settings)
    planned = plan_series(5, seed=43)
    try:
        ingest(runtime, planned, tmp_path / "spool")
        indexer_of(runtime).drain()
        runtime.index.clear()  # the index is derived data: losing it loses nothing
    finally:
        runtime.close()
    result = CliRunner().invoke(
        cli, ["--data-dir", str(settings.data_dir), "meta", "reindex", "--local"]
    )
    assert result.exit_code == 0, result.output
    assert "Done: 5 series indexed, 0 instances failed." in result.output
