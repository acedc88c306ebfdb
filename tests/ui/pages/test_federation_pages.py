"""The federation pages: the site admin's queue, policy, trusted keys and audit
(/ui/admin/federation/...), and the researcher's federated studies (/ui/federation).

In-process tests (TestClient, auth on) check who may see what and each form; the last
test runs a real network (the hub on HTTPS, two sites with their agents, this site
joined) and drives the pages in Debian's Chromium: policy, trust, approve, audit, report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.base.support import PASSWORD, add_user
from tests.federation.hub.conftest import running_hub
from tests.federation.hub.support import RunningHub
from tests.federation.site.support import EDGES, PROJECT, Researcher
from tests.support.network import free_port
from tests.support.servers import serve_in_thread
from tests.ui.pages.support import browser_login, csrf_of, flash_of

from jip.app import build_app
from jip.base import AuditFilter, AuditLog
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.federation import DeclaredOutput, JobSpec, SiteJobState, encode_key, key_id, schema_for
from jip.federation.hub import add_site
from jip.federation.site import JobBook, Policies, SiteAgent, SiteFiles, join
from jip.runtime import Runtime, build_runtime

__all__ = ["running_hub"]

FED = "/ui/admin/federation"
ZONES = ("PZ/3/v1", "TZ/3/v1")  # group labels of the requester tests' series documents
ADMIN_GETS = [FED, f"{FED}/policy", f"{FED}/keys", f"{FED}/audit"]
OUTPUTS = (
    DeclaredOutput(name="n", kind="count", field="PatientAgeYears"),
    DeclaredOutput(name="age", kind="histogram", field="PatientAgeYears", edges=EDGES),
    DeclaredOutput(
        name="adc", kind="sufficient_stats", field="PatientAgeYears", groups=("PZ", "TZ")
    ),
)


def admin_posts(job_id: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"{FED}/jobs/{job_id}/approve", {}),
        (f"{FED}/jobs/{job_id}/reject", {"reason": "no"}),
        (f"{FED}/policy", {"approval": "automatic", "min_cohort_size": "1", "min_cell_count": "1"}),
        (f"{FED}/keys", {"name": "k", "public_key": encode_key(bytes(32))}),
        (f"{FED}/keys/k/remove", {}),
    ]


@pytest.fixture
def people(runtime: Runtime) -> None:
    add_user(runtime, "ada", admin=True)
    add_user(runtime, "rita", projects={PROJECT: ProjectRole.RESEARCHER})
    add_user(runtime, "vic", projects={PROJECT: ProjectRole.VIEWER})


@pytest.fixture
def researcher() -> Researcher:
    return Researcher.new()


@pytest.fixture
def job(runtime: Runtime, researcher: Researcher) -> JobSpec:
    """A job as the agent persists it on delivery: queued for a person's approval."""
    spec = researcher.job(OUTPUTS)
    spec = spec.model_copy(update={"parameters": {"group_by": "BodyPartExamined"}})
    assert JobBook(runtime.engine).add(spec.id, 1, spec.model_dump(mode="json"))
    return spec


def signed_in(app: FastAPI, username: str) -> TestClient:
    client = TestClient(app)
    browser_login(client, username)
    return client


def post(client: TestClient, url: str, **fields: str) -> Any:
    csrf = csrf_of(client.get("/ui/admin/projects").text)
    return client.post(url, data={**fields, "csrf_token": csrf}, follow_redirects=False)


def followed(client: TestClient, url: str, **fields: str) -> str:
    response = post(client, url, **fields)
    assert response.status_code == 303, response.text
    return client.get(response.headers["location"]).text


def state_of(runtime: Runtime, job: JobSpec) -> SiteJobState:
    return JobBook(runtime.engine).get(job.id).state


# -- who may see what -------------------------------------------------------------------------
@pytest.mark.parametrize("username", ["rita", "vic"])
def test_a_non_admin_gets_403_on_every_federation_admin_page_and_form(
    people: None, job: JobSpec, app: FastAPI, runtime: Runtime, username: str
) -> None:
    client = signed_in(app, username)
    for url in ADMIN_GETS:
        assert client.get(url).status_code == 403, url
    for url, fields in admin_posts(job.id):
        response = post(client, url, **fields)
        assert response.status_code == 403, url
        assert "this page is for site admins" in response.text
    assert state_of(runtime, job) is SiteJobState.QUEUED
    assert Policies(runtime.engine).get().approval.value == "manual"
    assert Policies(runtime.engine).trusted_list() == []


def test_anonymous_is_sent_to_the_login_and_changes_nothing(
    people: None, job: JobSpec, client: TestClient, runtime: Runtime
) -> None:
    for url in [*ADMIN_GETS, "/ui/federation"]:
        response = client.get(url, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/ui/login"), url
    for url, fields in admin_posts(job.id):
        response = client.post(url, data=fields, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/ui/login"), url
    assert state_of(runtime, job) is SiteJobState.QUEUED
    assert Policies(runtime.engine).trusted_list() == []


def test_the_admin_navigation_links_the_federation_pages_and_says_the_site_is_not_joined(
    people: None, app: FastAPI
) -> None:
    ada = signed_in(app, "ada")
    assert f'<a href="{FED}">Federation</a>' in ada.get("/ui/admin/users").text
    page = ada.get(FED).text
    assert "Not joined to a hub." in page and "jip fed join" in page
    assert "No job is waiting for approval." in page


# -- the approval queue -----------------------------------------------------------------------
def test_the_queue_shows_exactly_what_would_leave_and_whether_the_signer_is_trusted(
    people: None, job: JobSpec, researcher: Researcher, app: FastAPI, runtime: Runtime
) -> None:
    ada = signed_in(app, "ada")
    page = ada.get(FED).text
    article = page[page.index(f'data-job="{job.id}"') :]
    signer = key_id(researcher.publisher.public)
    assert key_id(researcher.box.public) in article  # the researcher's key id
    assert job.workflow.image_digest in article and signer in article
    assert f"signed by {signer}, not a trusted key" in article
    assert "The policy refuses this job as it stands" in article
    assert '"Modality": "MR"' in article.replace("&#34;", '"')  # the cohort query
    rows = dict(re.findall(r'<tr data-output="([^"]+)">(.*?)</tr>', article, re.S))
    assert set(rows) == {"n", "age", "adc"}
    assert "histogram" in rows["age"] and ", ".join(map(str, EDGES)) in rows["age"]
    assert "sufficient_stats" in rows["adc"] and "PZ, TZ" in rows["adc"]
    for output in OUTPUTS:  # every value each output sends, and nothing else
        sent = re.findall(r"<code>([^<]+)</code> \(", rows[output.name])
        assert sorted(sent) == sorted(schema_for(output).fields), output.name

    Policies(runtime.engine).trust("publisher", encode_key(researcher.publisher.public))
    article = ada.get(FED).text
    assert "trusted as publisher" in article


def test_approve_and_reject_do_what_jip_fed_approve_and_reject_do(
    people: None, job: JobSpec, researcher: Researcher, app: FastAPI, runtime: Runtime
) -> None:
    ada = signed_in(app, "ada")
    page = followed(ada, f"{FED}/jobs/{job.id}/reject", reason="   ")
    assert "give a reason to reject it" in flash_of(page) and 'class="error flash"' in page
    assert state_of(runtime, job) is SiteJobState.QUEUED

    response = ada.post(f"{FED}/jobs/{job.id}/approve", data={}, follow_redirects=False)
    assert response.status_code == 403  # no CSRF token
    assert state_of(runtime, job) is SiteJobState.QUEUED

    page = followed(ada, f"{FED}/jobs/{job.id}/approve")
    assert flash_of(page) == f"job {job.id} approved: the agent runs it on its next cycle"
    record = JobBook(runtime.engine).get(job.id)
    assert (record.state, record.decided_by) == (SiteJobState.APPROVED, "ada")
    assert "No job is waiting for approval." in page

    other = researcher.job()
    JobBook(runtime.engine).add(other.id, 1, other.model_dump(mode="json"))
    page = followed(ada, f"{FED}/jobs/{other.id}/reject", reason="cohort too broad")
    assert flash_of(page) == f"job {other.id} rejected"
    refused = JobBook(runtime.engine).get(other.id)
    assert refused.state is SiteJobState.REFUSED
    assert refused.reason == "refused by the site's approver: cohort too broad"
    page = followed(ada, f"{FED}/jobs/{other.id}/approve")  # decided already: a message
    assert f"job {other.id}: is refused, not queued" in flash_of(page)

    audit = ada.get(f"{FED}/audit").text
    actions = re.findall(r'<tr data-action="([^"]+)">', audit)
    assert actions == ["fed.job.refused", "fed.job.approved"]  # newest first, fed.* only
    entries = AuditLog(runtime.engine).list(AuditFilter(action="fed."))
    assert [(e.action, e.username) for e in entries] == [
        ("fed.job.refused", "ada"),
        ("fed.job.approved", "ada"),
    ]


# -- policy and keys --------------------------------------------------------------------------
def test_the_policy_form_saves_and_names_each_field_it_refuses(
    people: None, app: FastAPI, runtime: Runtime
) -> None:
    runtime.identity.projects.create("liver")
    ada = signed_in(app, "ada")
    page = ada.get(f"{FED}/policy").text
    assert 'value="min_cohort_size"' not in page and 'name="min_cohort_size"' in page
    assert re.search(r'value="manual" checked', page)

    bad = post(
        ada,
        f"{FED}/policy",
        projects="liver",
        approval="sometimes",
        min_cohort_size="ten",
        min_cell_count="0",
        allowed_outputs="histogram",
    )
    assert bad.status_code == 400
    text = bad.text.replace("&#39;", "'")
    assert "Approval: choose manual or automatic (not 'sometimes')" in text
    assert "Minimum cohort size: enter a whole number of 1 or more (not 'ten')" in text
    assert "Minimum cell count: enter a whole number of 1 or more (not '0')" in text
    assert 'value="ten"' in bad.text  # what was typed stays on the form
    assert Policies(runtime.engine).get().approval.value == "manual"

    fields = {"approval": "automatic", "min_cohort_size": "20", "min_cell_count": "3"}
    response = ada.post(
        f"{FED}/policy",
        data={
            **fields,
            "projects": [PROJECT, "liver"],
            "allowed_outputs": ["count", "sufficient_stats"],
            "csrf_token": csrf_of(page),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert flash_of(ada.get(response.headers["location"]).text) == "policy saved"
    policy = Policies(runtime.engine).get()
    assert policy.projects == (PROJECT, "liver") and policy.approval.value == "automatic"
    assert (policy.min_cohort_size, policy.min_cell_count) == (20, 3)
    assert [k.value for k in policy.allowed_outputs] == ["count", "sufficient_stats"]
    (entry,) = AuditLog(runtime.engine).list(AuditFilter(action="fed.policy.set"))
    assert entry.username == "ada" and entry.detail["min_cohort_size"] == 20


def test_trusted_keys_are_listed_added_and_removed(
    people: None, researcher: Researcher, app: FastAPI, runtime: Runtime
) -> None:
    ada = signed_in(app, "ada")
    public = encode_key(researcher.publisher.public)
    kid = key_id(researcher.publisher.public)
    page = followed(ada, f"{FED}/keys", name="publisher", public_key=public)
    assert flash_of(page) == f"trusting publisher (key {kid})"
    assert f"<code>{kid}</code>" in page and public in page
    page = followed(ada, f"{FED}/keys", name="again", public_key=public)
    assert f"key {kid}: already trusted" in flash_of(page)
    page = followed(ada, f"{FED}/keys", name="short", public_key="c2hvcnQ=")
    assert "public key" in flash_of(page) and 'class="error flash"' in page
    page = followed(ada, f"{FED}/keys/publisher/remove")
    assert flash_of(page) == "publisher is no longer trusted"
    assert Policies(runtime.engine).trusted_list() == []
    actions = [e.action for e in AuditLog(runtime.engine).list(AuditFilter(action="fed.trust."))]
    assert actions == ["fed.trust.remove", "fed.trust.add"]


# -- federated studies ------------------------------------------------------------------------
def test_studies_are_for_researchers_and_say_what_is_missing(people: None, app: FastAPI) -> None:
    pytest.importorskip("jip.federation.requester")
    assert signed_in(app, "vic").get("/ui/federation").status_code == 403
    page = signed_in(app, "rita").get("/ui/federation").text
    assert "no researcher home is set: set federation.researcher_home" in page


# -- the whole path in a browser --------------------------------------------------------------
def with_researcher_home(runtime: Runtime, home: Path) -> None:
    """Point ``federation.researcher_home`` at ``home`` (a copy of the settings)."""
    settings = runtime.settings
    federation = settings.federation.model_copy(update={"researcher_home": home})
    runtime.settings = settings.model_copy(update={"federation": federation})


@pytest.fixture
def network_site(
    running_hub: RunningHub, tmp_path: Path, issuer_key: Path
) -> Iterator[tuple[str, Runtime, SiteAgent, Any]]:
    """This site (joined, manual approval, its agent cycled by the test), two other sites
    approving by themselves, the hub, and the researcher's home; served on a socket."""
    support = pytest.importorskip("tests.federation.requester.support")
    from tests.base.support import install_key

    pz, tz = ZONES
    values = {pz: [41.0, 47.0, 52.0, 58.0, 63.0], tz: [44.0, 55.0, 61.0, 66.0, 70.0]}
    networks = support.network(running_hub)
    network = next(networks)
    network.add_site("site-b", {pz: [45.0, 50.0, 55.0, 60.0], tz: [50.0, 52.0, 57.0, 62.0]})
    network.add_site("site-c", {pz: [48.0, 49.0, 53.0, 71.0], tz: [42.0, 46.0, 59.0, 68.0]})
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "ui-site", auth={"public_url": f"http://127.0.0.1:{port}"}
    )
    install_key(settings, issuer_key)
    runtime = build_runtime(settings)
    add_user(runtime, "ada", admin=True)
    runtime.identity.projects.create(PROJECT)
    runtime.index.upsert(support.documents(values, 9))
    files = SiteFiles.of(settings.data_dir)
    enrolment = add_site(running_hub.hub, "site-a")
    join(files, running_hub.url, enrolment.token, ca_file=running_hub.hub.paths.ca_cert)
    with_researcher_home(runtime, network.home.root)
    agent = SiteAgent(runtime.engine, runtime.index, files, wait_s=0)
    try:
        with serve_in_thread(build_app(runtime), port=port) as origin:
            yield origin, runtime, agent, network
    finally:
        networks.close()
        runtime.close()


def test_an_admin_sets_the_policy_trusts_approves_and_reads_the_report_in_a_browser(
    network_site: tuple[str, Runtime, SiteAgent, Any], browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect
    from tests.federation.requester.support import GROUP_BY

    from jip.federation.requester import HubSession, Request, read_cohort, submit_job

    origin, runtime, agent, network = network_site
    by_zone = DeclaredOutput(
        name="adc", kind="sufficient_stats", field="PatientAgeYears", groups=ZONES
    )
    request = Request(
        workflow=network.researcher.workflow(),
        cohort=read_cohort(network.cohort_file()),
        project=PROJECT,
        outputs=(*OUTPUTS[:2], by_zone),
        min_sites=2,
        deadline=datetime.now(UTC) + timedelta(hours=1),
        parameters={"group_by": GROUP_BY},
        title="Ages by zone",
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{origin}/ui/admin")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{origin}/ui/admin")
    page.click("nav[aria-label=Administration] >> text=Federation")
    expect(page.locator("#fed-hub")).to_contain_text("as site site-a")
    expect(page.locator("#queue-empty")).to_be_visible()

    page.click("nav[aria-label=Federation] >> text=Policy")
    page.check(f"input[name=projects][value={PROJECT}]")
    page.check("input[name=allowed_outputs][value=sufficient_stats]")
    page.fill("input[name=min_cohort_size]", "abc")
    page.click("form.fed-policy button[type=submit]")
    expect(page.locator(".fed-problems")).to_contain_text("Minimum cohort size")
    page.fill("input[name=min_cohort_size]", "3")
    page.fill("input[name=min_cell_count]", "1")
    page.click("form.fed-policy button[type=submit]")
    expect(page.locator(".flash")).to_have_text("policy saved")

    page.click("nav[aria-label=Federation] >> text=Trusted keys")
    page.fill("input[name=name]", "publisher")
    page.fill("input[name=public_key]", encode_key(network.researcher.publisher.public))
    page.click("form.save button[type=submit]")
    expect(page.locator("table.fed-keys")).to_contain_text("publisher")

    with HubSession(network.home) as session:
        spec = submit_job(network.home, session, request)
        agent.cycle(wait_s=5)  # this site takes the job: it waits for its admin
        assert JobBook(runtime.engine).get(spec.id).state is SiteJobState.QUEUED

        page.click("nav[aria-label=Federation] >> text=Approval queue")
        job = page.locator(f"article[data-job='{spec.id}']")
        expect(job.locator(".trusted")).to_have_text("trusted as publisher")
        expect(job.locator("tr[data-output=age]")).to_contain_text("histogram")
        page.screenshot(path=str(screenshots / "federation-queue.png"), full_page=True)
        job.locator("button", has_text="Approve").click()
        expect(page.locator(".flash")).to_contain_text("approved")

        agent.cycle(wait_s=0)  # runs it, seals and posts the result
        assert JobBook(runtime.engine).get(spec.id).state is SiteJobState.DONE
        session.wait(spec.id, timeout_s=60)

    (released,) = AuditLog(runtime.engine).list(AuditFilter(action="fed.result.released"))
    page.click("nav[aria-label=Federation] >> text=Audit")
    row = page.locator("tr[data-action='fed.result.released']")
    expect(row.locator(".sha256")).to_have_text(released.detail["sha256"])
    expect(row.locator(".size")).to_have_text(str(released.detail["size"]))
    page.screenshot(path=str(screenshots / "federation-audit.png"), full_page=True)

    page.click("header nav >> text=Federated studies")
    page.click(f"tr[data-job='{spec.id}'] a")
    expect(page.locator("h1")).to_contain_text("Ages by zone")
    for site in ("site-a", "site-b", "site-c"):
        expect(page.locator(f"table.fed-sites tr[data-site={site}]")).to_contain_text("yes")
    pooled = page.locator("section[data-output=n] tr.pooled td")
    expect(pooled).to_have_text(str(10 + 8 + 8))
    expect(page.locator("svg.fed-plot rect.bar[data-site=site-a][data-bin='1']")).to_be_visible()
    expect(page.locator("section[data-output=adc] g.mean")).to_have_count(2 * 4)
    page.screenshot(path=str(screenshots / "federation-report.png"), full_page=True)
    page.close()
