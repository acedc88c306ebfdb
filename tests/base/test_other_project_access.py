"""A member of another project reaches nothing of a project through any route of the API.

Project ``liver`` (A) holds one of everything the API can address: a study with its
series and instances, a DICOM result series, a saved cohort, a workflow run waiting at
its human step with a result file and a DICOM result, a rule that fired on A's series,
an index error, members. A researcher and an owner of ``lung`` (B) only then call every
route of the OpenAPI schema with A's identifiers in the path: data addressed by an
identifier of A is a 404 (its existence does not leak), site-admin routes are a 403, and
no answer names anything of A. Lists, searches and counts answer the same whether or not
A holds more data. Afterwards A is as it was.

The per-route matrix runs on SQLite: scoping is the same SQL through SQLAlchemy on both
catalogs, and ``test_project_scoping.py`` runs its checks on both. PostgreSQL runs a
smoke subset: the counts, and a few routes of each kind (:data:`POSTGRES_SMOKE`).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.base.support import (
    Site,
    Stored,
    add_user,
    auth_for,
    ingest_series,
    series_datasets,
)
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.store.dicomweb.support import part10

from jip.app import build_app
from jip.backends import storage_for
from jip.base.auth import is_public
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.flow import records, rules
from jip.flow.engine import RunState, TaskState
from jip.flow.result_keys import result_key
from jip.flow.service import FlowService
from jip.flow.worker.runner import operators_dir
from jip.meta import SeriesMatcher
from jip.runtime import build_runtime
from jip.store import SeriesProjects
from jip.store.dicomweb.multipart import Part, new_boundary, write_parts

A, B = "liver", "lung"
WORKFLOW = "annotate-review"
REVIEW_TASK = "annotate"
HTTP_METHODS = {"get", "put", "post", "patch", "delete", "options", "head"}
# B's members: a researcher and an owner, each of project B only.
CALLERS = {"researcher": "bob", "owner": "lena"}


def _schema_operations() -> list[tuple[str, str]]:
    """(METHOD, path template) of every protected operation in the OpenAPI schema."""
    root = Path(tempfile.mkdtemp(prefix="jip-access-"))
    runtime = build_runtime(Settings(data_dir=root / "data", auth={"enabled": False}))
    try:
        paths: dict[str, dict[str, Any]] = build_app(runtime).openapi()["paths"]
    finally:
        runtime.close()
        shutil.rmtree(root, ignore_errors=True)
    return sorted(
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if method in HTTP_METHODS and not is_public(path)
    )


OPERATIONS = _schema_operations()
# Routes the PostgreSQL catalog is checked on too: a DICOMweb read and store, a search, a
# cohort, a run's results.
POSTGRES_SMOKE = [
    ("GET", "/dicom-web/studies/{study}/series/{series}/metadata"),
    ("POST", "/dicom-web/studies/{study}"),
    ("POST", "/api/meta/search"),
    ("GET", "/api/meta/cohorts/{cohort_id}"),
    ("GET", "/api/flow/runs/{run_id}/results"),
]
ON_POSTGRES = [pytest.param("postgresql", marks=pytest.mark.postgres)]
ON_EVERY_CATALOG = ["sqlite", *ON_POSTGRES]

# Routes for site admins only: a 403 whatever the identifier, so it tells nothing.
ADMIN_ONLY = {
    ("GET", "/api/store/conflicts"),
    ("GET", "/api/admin/status"),
    ("GET", "/api/dicom/peers"),
    ("PUT", "/api/dicom/peers/{name}"),
    ("DELETE", "/api/dicom/peers/{name}"),
    ("POST", "/api/dicom/peers/{name}/echo"),
    ("POST", "/api/dicom/peers/{name}/find"),
    ("POST", "/api/dicom/peers/{name}/move"),
    ("POST", "/api/dicom/peers/{name}/studies"),
    ("POST", "/api/dicom/retrievals"),
    ("GET", "/api/dicom/retrievals"),
    ("GET", "/api/dicom/retrievals/{retrieval_id}"),
    ("GET", "/api/dicom/saved-queries"),
    ("POST", "/api/dicom/saved-queries"),
    ("DELETE", "/api/dicom/saved-queries/{query_id}"),
    ("POST", "/api/dicom/saved-queries/{query_id}/run"),
    ("GET", "/api/dicom/send/peers"),  # site admins and forward.senders (none by default)
    ("GET", "/api/flow/forwarding/rules"),
    ("POST", "/api/flow/forwarding/rules"),
    ("GET", "/api/flow/forwarding/rules/{rule_id}"),
    ("PATCH", "/api/flow/forwarding/rules/{rule_id}"),
    ("DELETE", "/api/flow/forwarding/rules/{rule_id}"),
    ("GET", "/api/flow/forwarding/items"),
    ("POST", "/api/flow/forwarding/items/{item_id}/retry"),
    ("POST", "/api/flow/forwarding/items/{item_id}/drop"),
    ("GET", "/api/projects/rules"),
    ("POST", "/api/projects/rules"),
    ("GET", "/api/projects/rules/{rule_id}"),
    ("PATCH", "/api/projects/rules/{rule_id}"),
    ("DELETE", "/api/projects/rules/{rule_id}"),
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("GET", "/api/users/{username}"),
    ("PATCH", "/api/users/{username}"),
    ("DELETE", "/api/users/{username}"),
    ("PUT", "/api/users/{username}/password"),
    ("POST", "/api/projects"),
    ("DELETE", "/api/projects/{name}"),
    ("GET", "/api/audit"),
    ("GET", "/api/audit/export"),
    ("POST", "/api/meta/reindex"),
    ("POST", "/api/flow/rules"),
    ("PATCH", "/api/flow/rules/{rule}"),
    ("DELETE", "/api/flow/rules/{rule}"),
}
# Routes that answer the caller about what they may see (lists, searches, counts, site
# descriptions) or act on their own things: any answer but a server error, naming
# nothing of A. Every other route addresses A's data by identifier: a 404.
OPEN = {
    ("GET", "/api/store/stats"),
    ("POST", "/api/store/upload"),
    ("GET", "/dicom-web"),
    ("OPTIONS", "/dicom-web"),
    ("GET", "/dicom-web/studies"),
    ("POST", "/dicom-web/studies"),
    ("GET", "/dicom-web/series"),
    ("GET", "/dicom-web/instances"),
    ("GET", "/dicom-web/studies/{study}/series"),
    ("GET", "/dicom-web/studies/{study}/instances"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances"),
    ("GET", "/api/projects"),
    ("GET", "/api/me"),
    ("PUT", "/api/me/password"),
    ("POST", "/api/meta/search"),
    ("POST", "/api/meta/aggregate"),
    ("GET", "/api/meta/fields"),
    ("GET", "/api/meta/fields/{name}/values"),
    ("GET", "/api/meta/status"),
    ("GET", "/api/meta/errors"),
    ("GET", "/api/meta/cohorts"),
    ("GET", "/api/flow/workflows"),
    ("GET", "/api/flow/workflows/{dag_id}"),
    ("GET", "/api/flow/runs"),
    ("GET", "/api/flow/rules"),
    ("GET", "/api/flow/rules/{rule}"),
    ("GET", "/api/flow/rules/{rule}/firings"),
}
# Other answers that tell nothing: a wrong current password is a 401 whoever asks; a new
# series into A's study is refused part by part, as into any study B sees no series of.
# Results are recorded only with a run's own token: every person gets 403 before any run is
# looked up, whether it exists or not.
EXPECTED = {
    ("PUT", "/api/me/password"): 401,
    ("POST", "/dicom-web/studies/{study}"): 409,
    ("POST", "/api/flow/runs/{run_id}/results"): 403,
    ("PUT", "/api/flow/runs/{run_id}/files/{name}"): 403,
    # Sending needs forward.senders (none by default): refused before any series is read.
    ("POST", "/api/dicom/send"): 403,
}
# A path parameter whose name means one thing on most routes and another on these.
PARAM_OVERRIDES = {
    ("/api/meta/fields/{name}/values", "name"): "field",
    **{
        (path, "name"): "peer"
        for path in (
            "/api/dicom/peers/{name}",
            "/api/dicom/peers/{name}/echo",
            "/api/dicom/peers/{name}/find",
            "/api/dicom/peers/{name}/move",
            "/api/dicom/peers/{name}/studies",
        )
    },
}


@dataclass
class World:
    """The site, A's identifiers by path parameter name, and what names A's data."""

    site: Site
    engine: FakeEngine
    a: Stored
    a_result: Stored
    params: dict[str, str]
    secrets: set[str]
    snapshot: dict[str, Any] = field(default_factory=dict)
    cohort_document: dict[str, Any] = field(default_factory=dict)

    def call(self, user: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.site.tokens[user], **kwargs.pop("headers", {})}
        return self.site.client.request(method, url, headers=headers, **kwargs)

    def as_a(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.call("alice", method, url, **kwargs)


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else None


def _stow(datasets: list[Any]) -> dict[str, Any]:
    boundary = new_boundary()
    parts = [Part("application/dicom", [part10(ds)]) for ds in datasets]
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return {
        "content": b"".join(write_parts(parts, boundary)),
        "headers": {"Content-Type": content_type},
    }


@pytest.fixture(params=["sqlite"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite unless a test names the catalogs (``ON_POSTGRES``, ``ON_EVERY_CATALOG``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def world(site: Site, tmp_path: Path) -> World:
    runtime, client = site.runtime, site.client
    engine = FakeEngine(series_workflow(WORKFLOW, "organ-seg", review=True))
    client.app.state.runtime.workflow_engine = engine  # type: ignore[attr-defined]
    add_user(runtime, CALLERS["owner"], projects={B: ProjectRole.OWNER})
    site.tokens[CALLERS["owner"]] = auth_for(client, CALLERS["owner"])
    a = site.series[A]
    a_result = ingest_series(runtime, tmp_path / "spool-a", series_datasets(4), "LIVER_CT")
    site.index()
    world = World(site, engine, a, a_result, {}, set())
    cohort = _ok(
        world.as_a("POST", "/api/meta/cohorts", json={
            "name": "liver secret cohort", "project": A, "query": None, "freeze": True}),
        201,
    )  # fmt: skip
    run_id = _waiting_run(world, cohort["id"])
    file_result, dicom_result = _results(world, run_id)
    flow_rule, rule_runs = _rule_fired_on_every_series(world)
    runtime.catalog.mark_indexed([a_result.sops[1]], error="liver header unreadable")
    project_rule = next(
        r for r in _ok(world.call("root", "GET", "/api/projects/rules")) if r["project"] == A
    )
    world.cohort_document = _ok(
        world.as_a("GET", f"/api/meta/cohorts/{cohort['id']}/export?include_series=true")
    )
    world.params = {
        "study": a.study,
        "series": a.series,
        "instance": a.sops[0],
        "frames": "1",
        "path": "7FE00010",
        "cohort_id": cohort["id"],
        "run_id": run_id,
        "result_id": file_result,
        "dicom_result_id": dicom_result,
        "series_uid": a.series,
        "task": REVIEW_TASK,
        "name": A,
        "field": "PatientName",
        "peer": "LIVER_CT",  # peers are site-wide: admins' business, whatever the name
        "username": "alice",
        "rule_id": str(project_rule["id"]),
        "rule": flow_rule,
        "dag_id": WORKFLOW,
        # Saved PACS queries and their retrievals are site-wide: admins' business.
        "query_id": "1",
        "retrieval_id": "1",
        "item_id": "1",  # forwarding's queue is site-wide too
    }
    runs_of_a = [run_id, rule_runs[a.series], rule_runs[a_result.series]]
    world.secrets = _secrets_of(world, cohort, runs_of_a)
    world.snapshot = _snapshot(world)
    return world


def _waiting_run(world: World, cohort_id: str) -> str:
    """A's run on its cohort, waiting for a person at its human step."""
    run = _ok(
        world.as_a("POST", f"/api/flow/workflows/{WORKFLOW}/runs", json={"cohort_id": cohort_id}),
        201,
    )
    run_id: str = run["run_id"]
    world.engine.set_run(run_id, RunState.RUNNING)
    world.engine.add_task(run_id, f"series.{REVIEW_TASK}", TaskState.WAITING, 0, world.a.series,
                          log="annotating the liver secret series")  # fmt: skip
    return run_id


def _results(world: World, run_id: str) -> tuple[str, str]:
    """A CSV file in the result store and a DICOM result series, recorded as the run's
    own tasks record them: with the run's token, under the run's folder."""
    a, settings = world.a, world.site.runtime.settings
    key = result_key(run_id, f"{a.series}/radiomics/features.csv")
    storage_for(settings.resolved_results_url, settings).put_bytes(key, b"liver,secret\n1,2\n")
    csv = {"series_instance_uid": a.series, "operator": "radiomics", "kind": "file",
           "key": key, "name": "features.csv", "size_bytes": 17}  # fmt: skip
    seg = {"series_instance_uid": a.series, "operator": "organ-seg", "kind": "dicom",
           "key": world.a_result.series, "name": "seg", "size_bytes": 1,
           "result_series_uid": world.a_result.series,
           "study_instance_uid": world.a_result.study, "modality": "SEG"}  # fmt: skip
    url = f"/api/flow/runs/{run_id}/results"
    run_token = {"Authorization": f"Bearer {world.engine.run_tokens[run_id]}"}
    recorded = _ok(
        world.site.client.post(url, json={"results": [csv, seg]}, headers=run_token), 201
    )
    return str(recorded[0]["id"]), str(recorded[1]["id"])


def _rule_fired_on_every_series(world: World) -> tuple[str, dict[str, str]]:
    """A site admin's rule that fired on every series, A's and B's: its id, the runs."""
    rule = {"name": "every-series", "dag_id": WORKFLOW, "query": {}}
    flow_rule = _ok(world.call("root", "POST", "/api/flow/rules", json=rule), 201)
    runs = _evaluate_rules(world)
    assert {world.a.series, world.site.series[B].series} <= set(runs), runs
    return str(flow_rule["id"]), runs


def _evaluate_rules(world: World) -> dict[str, str]:
    """One pass of the rule evaluator over the series complete by now: series -> run."""
    runtime = world.site.runtime
    service = FlowService(
        db=runtime.engine, engine=world.engine, operators_dir=operators_dir(runtime.settings)
    )
    fired = rules.RuleEvaluator(
        service=service,
        matcher=SeriesMatcher(catalog=runtime.catalog, storage=runtime.storage),
        quiet_period_s=0,
    ).evaluate(records.now() + timedelta(seconds=1))
    return {f.series_instance_uid: str(f.run_id) for f in fired if f.run_id is not None}


def _secrets_of(world: World, cohort: dict[str, Any], run_ids: list[str]) -> set[str]:
    """Every string that names A's data: UIDs, patients, the cohort, runs, result files."""
    secrets = {cohort["id"], cohort["name"], *run_ids, "liver secret", "features.csv"}
    for stored in (world.a, world.a_result):
        secrets |= {stored.study, stored.series, *stored.sops}
        metadata = _ok(world.as_a("GET", f"{stored.path}/metadata"))[0]
        secrets.add(metadata["00100020"]["Value"][0])  # PatientID
        secrets.add(metadata["00100010"]["Value"][0]["Alphabetic"])  # PatientName
    b = world.site.series[B]
    b_metadata = str(world.call("bob", "GET", f"{b.path}/metadata").json())
    assert not [s for s in secrets if s in b_metadata], "A's and B's names must differ"
    return secrets


def _snapshot(world: World) -> dict[str, Any]:
    """A's things as A's members and the site admin see them."""
    p = world.params
    return {
        "series": _ok(world.as_a("GET", f"{world.a.path}/metadata")),
        "projects": SeriesProjects(world.site.runtime.engine).projects_of([world.a.series]),
        "cohort": _ok(world.as_a("GET", f"/api/meta/cohorts/{p['cohort_id']}")),
        "cohort_series": _ok(world.as_a("GET", f"/api/meta/cohorts/{p['cohort_id']}/series")),
        "run": _ok(world.as_a("GET", f"/api/flow/runs/{p['run_id']}")),
        "results": _ok(world.as_a("GET", f"/api/flow/runs/{p['run_id']}/results")),
        "review": _ok(world.as_a("GET", f"/api/flow/runs/{p['run_id']}/reviews/{world.a.series}")),
        "members": _ok(world.call("olga", "GET", f"/api/projects/{A}/members")),
        "project": _ok(world.call("olga", "GET", f"/api/projects/{A}")),
        "alice": _ok(world.call("root", "GET", "/api/users/alice")),
        "project_rules": _ok(world.call("root", "GET", "/api/projects/rules")),
        "flow_rule": _ok(world.call("root", "GET", f"/api/flow/rules/{p['rule']}")),
    }


def _fill(path: str, params: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = PARAM_OVERRIDES.get((path, match[1]), match[1])
        if name not in params:
            pytest.fail(f"{path}: path parameter {{{match[1]}}} is not mapped to an object of A")
        return params[name]

    return re.sub(r"\{([^}]+)\}", value, path)


# -- what each route is sent beside its path: a body, query parameters -------------------
Extras = Callable[[World, str], dict[str, Any]]


def _json(payload: Callable[[World, str], Any]) -> Extras:
    return lambda world, user: {"json": payload(world, user)}


REQUESTS: dict[tuple[str, str], Extras] = {
    ("PUT", "/api/dicom/peers/{name}"): _json(
        lambda w, u: {"ae_title": "LIVER_CT", "host": "127.0.0.1", "port": 104, "projects": [A]}
    ),
    ("POST", "/api/dicom/peers/{name}/find"): _json(
        lambda w, u: {"keys": {"StudyInstanceUID": w.a.study, "PatientName": ""}}
    ),
    ("POST", "/api/dicom/peers/{name}/move"): _json(
        lambda w, u: {"keys": {"StudyInstanceUID": w.a.study}}
    ),
    ("GET", "/api/flow/results"): lambda w, u: {"params": {"series": w.a.series}},
    ("POST", "/api/dicom/peers/{name}/studies"): _json(lambda w, u: {"patient_id": "LIVER"}),
    ("POST", "/api/dicom/retrievals"): _json(
        lambda w, u: {"peer": "LIVER_CT", "project": A, "study_instance_uids": [w.a.study]}
    ),
    ("POST", "/api/dicom/saved-queries"): _json(
        lambda w, u: {"name": "nightly", "peer": "LIVER_CT", "project": A}
    ),
    ("POST", "/api/flow/forwarding/rules"): _json(
        lambda w, u: {"name": "to-pacs", "peer": "LIVER_CT", "query": {}}
    ),
    ("PATCH", "/api/flow/forwarding/rules/{rule_id}"): _json(lambda w, u: {"enabled": False}),
    ("POST", "/api/dicom/send"): _json(lambda w, u: {"peer": "LIVER_CT", "series": [w.a.series]}),
    ("POST", "/api/store/upload"): lambda w, u: {
        "files": [
            (
                "files",
                (
                    "a.dcm",
                    part10(_in_study(series_datasets(10)[0], w.a.study)),
                    "application/dicom",
                ),
            )
        ]
    },
    ("POST", "/api/projects/rules"): _json(lambda w, u: {"project": A, "calling_ae_title": "X"}),
    ("PATCH", "/api/projects/rules/{rule_id}"): _json(lambda w, u: {"enabled": False}),
    ("POST", "/dicom-web/studies"): lambda w, u: _stow(series_datasets(7)),
    ("POST", "/dicom-web/studies/{study}"): lambda w, u: _stow(
        [_in_study(ds, w.a.study) for ds in series_datasets(8)]
    ),
    ("POST", "/api/users"): _json(lambda w, u: {"username": "mallory", "password": "x" * 16}),
    ("PATCH", "/api/users/{username}"): _json(lambda w, u: {"disabled": True}),
    ("PUT", "/api/users/{username}/password"): _json(lambda w, u: {"password": "y" * 16}),
    ("POST", "/api/projects"): _json(lambda w, u: {"name": "liver2", "owner": u}),
    ("PATCH", "/api/projects/{name}"): _json(lambda w, u: {"description": "taken over"}),
    ("PUT", "/api/projects/{name}/members/{username}"): _json(lambda w, u: {"role": "viewer"}),
    ("PUT", "/api/me/password"): _json(
        lambda w, u: {"current_password": "not my password", "new_password": "z" * 16}
    ),
    ("POST", "/api/meta/search"): _json(
        lambda w, u: {"limit": 100, "aggs": {"n": {"terms": {"field": "PatientID"}}}}
    ),
    ("POST", "/api/meta/aggregate"): _json(
        lambda w, u: {"aggs": {"n": {"terms": {"field": "StudyInstanceUID"}}}}
    ),
    ("POST", "/api/meta/cohorts"): _json(lambda w, u: {"name": "mine", "project": A}),
    ("POST", "/api/meta/cohorts/import"): lambda w, u: {
        "json": w.cohort_document,
        "params": {"project": A},
    },
    ("PATCH", "/api/meta/cohorts/{cohort_id}"): _json(lambda w, u: {"name": "hijacked"}),
    ("POST", "/api/flow/workflows/{dag_id}/runs"): _json(lambda w, u: {"series": [w.a.series]}),
    ("POST", "/api/flow/runs/{run_id}/results"): _json(
        lambda w, u: {
            "results": [
                {
                    "series_instance_uid": w.a.series,
                    "operator": "x",
                    "kind": "file",
                    "key": "planted.csv",
                    "name": "planted.csv",
                    "size_bytes": 1,
                }
            ]
        }
    ),
    ("PUT", "/api/flow/runs/{run_id}/files/{name}"): lambda w, u: {
        "content": b"planted",
        "params": {"series": w.a.series, "operator": "x"},
        "headers": {"Content-Type": "application/octet-stream"},
    },
    ("POST", "/api/flow/runs/{run_id}/tasks/{task}/done"): _json(
        lambda w, u: {"series": [w.a.series]}
    ),
    ("POST", "/api/flow/runs/{run_id}/tasks/{task}/seg"): lambda w, u: {
        "files": [("files", ("seg.dcm", part10(series_datasets(9)[0]), "application/dicom"))]
    },
    ("POST", "/api/flow/rules"): _json(
        lambda w, u: {"name": "mine", "dag_id": WORKFLOW, "query": {}}
    ),
    ("PATCH", "/api/flow/rules/{rule}"): _json(lambda w, u: {"enabled": False}),
}
# Body-less POSTs (the action is the path).
NO_BODY = {
    ("PUT", "/api/projects/{name}/series/{series_uid}"),
    ("POST", "/api/meta/reindex"),
    ("POST", "/api/dicom/peers/{name}/echo"),
    ("POST", "/api/meta/cohorts/{cohort_id}/freeze"),
    ("POST", "/api/meta/cohorts/{cohort_id}/unfreeze"),
    ("POST", "/api/flow/runs/{run_id}/cancel"),
    ("POST", "/api/flow/runs/{run_id}/retry"),
    ("POST", "/api/dicom/saved-queries/{query_id}/run"),
    ("POST", "/api/flow/forwarding/items/{item_id}/retry"),
    ("POST", "/api/flow/forwarding/items/{item_id}/drop"),
}


def _in_study(ds: Any, study: str) -> Any:
    ds.StudyInstanceUID = study
    return ds


def _request(world: World, user: str, method: str, path: str) -> dict[str, Any]:
    if (method, path) in REQUESTS:
        return REQUESTS[(method, path)](world, user)
    if method in ("POST", "PUT", "PATCH") and (method, path) not in NO_BODY:
        pytest.fail(f"{method} {path}: no request body in REQUESTS (nor listed in NO_BODY)")
    return {}


# -- checks ------------------------------------------------------------------------------
def _names_of_a(world: World, response: httpx.Response, sent: str) -> list[str]:
    """A's names in the answer (body and headers) that the caller did not send."""
    answer = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    return sorted(s for s in world.secrets if s in answer and s not in sent)


def _assert_a_untouched(world: World) -> None:
    assert _snapshot(world) == world.snapshot
    assert world.engine.runs[world.params["run_id"]].state is RunState.RUNNING


def _expected(method: str, path: str) -> int | None:
    if (method, path) in EXPECTED:
        return EXPECTED[(method, path)]
    if (method, path) in ADMIN_ONLY:
        return 403
    if (method, path) in OPEN:
        return None
    return 404


def _check(world: World, user: str, method: str, path: str) -> None:
    url = _fill(path, world.params)
    kwargs = _request(world, user, method, path)
    response = world.call(user, method, url, follow_redirects=False, **kwargs)
    sent = url + repr(kwargs)
    expected = _expected(method, path)
    where = f"{method} {url} as {user}: {response.status_code} {response.text[:300]}"
    if expected is None:
        assert response.status_code < 500 and response.status_code != 401, where
    else:
        assert response.status_code == expected, where
    assert _names_of_a(world, response, sent) == [], where
    _assert_a_untouched(world)
    if method == "GET" and expected == 404:  # the identifiers are real: A's members see them
        own = world.as_a(method, url, follow_redirects=False, **kwargs)
        assert own.status_code != 404, f"{where}; as alice: {own.status_code} {own.text[:300]}"


def _case_id(operation: tuple[str, str]) -> str:
    return f"{operation[0]} {operation[1]}"


@pytest.mark.parametrize("role", sorted(CALLERS))
@pytest.mark.parametrize("operation", OPERATIONS, ids=_case_id)
def test_a_member_of_another_project_gets_nothing_of_a(
    world: World, operation: tuple[str, str], role: str
) -> None:
    method, path = operation
    _check(world, CALLERS[role], method, path)


@pytest.mark.parametrize("catalog_url", ON_POSTGRES, indirect=True)
@pytest.mark.parametrize("role", sorted(CALLERS))
@pytest.mark.parametrize("operation", POSTGRES_SMOKE, ids=_case_id)
def test_on_postgresql_a_member_of_another_project_gets_nothing_of_a(
    world: World, operation: tuple[str, str], role: str
) -> None:
    method, path = operation
    _check(world, CALLERS[role], method, path)


def test_the_route_tables_name_only_routes_of_the_schema() -> None:
    known = ADMIN_ONLY | OPEN | set(EXPECTED) | set(REQUESTS) | NO_BODY | set(POSTGRES_SMOKE)
    assert known - set(OPERATIONS) == set(), "routes listed here are gone from the schema"
    assert len(OPERATIONS) > 80


@pytest.mark.parametrize("role", sorted(CALLERS))
@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("GET", "/api/flow/runs/{run_id}/results/{result_id}", "dicom_result_id"),
        ("PUT", "/api/projects/{name}/series/{series_uid}", "lung_project"),
    ],
    ids=["GET DICOM result", "PUT A's series into B"],
)
def test_indirect_references_to_a_are_not_found(
    world: World, method: str, path: str, param: str, role: str
) -> None:
    p = world.params
    url = {
        "dicom_result_id": f"/api/flow/runs/{p['run_id']}/results/{p['dicom_result_id']}",
        "lung_project": f"/api/projects/{B}/series/{world.a.series}",
    }[param]
    user = CALLERS[role]
    response = world.call(user, method, url, follow_redirects=False)
    where = f"{method} {url} as {user}: {response.status_code} {response.text[:300]}"
    # A researcher may not assign series at all; an owner of B cannot see A's series.
    assert response.status_code in ((403, 404) if role == "researcher" else (404,)), where
    assert _names_of_a(world, response, url) == [], where
    _assert_a_untouched(world)


def test_a_cohort_imported_with_as_series_shows_and_runs_none_of_them(world: World) -> None:
    bob = CALLERS["researcher"]
    imported = _ok(
        world.call(bob, "POST", "/api/meta/cohorts/import", json=world.cohort_document), 201
    )
    assert imported["project"] == B
    page = world.call(bob, "GET", f"/api/meta/cohorts/{imported['id']}/series")
    assert page.status_code == 200, page.text
    known = {world.a.series, *world.cohort_document["series"]}
    assert _names_of_a(world, page, repr(known)) == []
    started = world.call(
        bob, "POST", f"/api/flow/workflows/{WORKFLOW}/runs", json={"cohort_id": imported["id"]}
    )
    assert started.status_code == 404, started.text
    _assert_a_untouched(world)


# -- counts -------------------------------------------------------------------------------
# Lists, searches, facets and counts as B sees them; each must answer the same whether A
# holds more data or not (a count that grows with A's data tells A's data exists).
LISTINGS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/dicom-web/studies", {"params": {"includefield": "all", "limit": 50}}),
    ("GET", "/dicom-web/studies", {"params": {"offset": 1, "limit": 1}}),
    ("GET", "/dicom-web/series", {"params": {"includefield": "all", "limit": 50}}),
    ("GET", "/dicom-web/series", {"params": {"offset": 1, "limit": 1}}),
    ("GET", "/dicom-web/instances", {"params": {"includefield": "all", "limit": 50}}),
    ("GET", "/dicom-web/instances", {"params": {"offset": 2, "limit": 1}}),
    ("GET", "/api/store/stats", {}),
    ("POST", "/api/meta/search", {"json": {"limit": 0, "offset": 0}}),
    ("POST", "/api/meta/search", {"json": {"limit": 1, "offset": 5}}),
    (
        "POST",
        "/api/meta/search",
        {
            "json": {
                "limit": 0,
                "aggs": {
                    "patients": {"cardinality": {"field": "PatientID"}},
                    "modality": {"terms": {"field": "Modality"}},
                    "dates": {
                        "date_histogram": {"field": "StudyDate", "calendar_interval": "year"}
                    },
                },
            }
        },
    ),
    (
        "POST",
        "/api/meta/aggregate",
        {
            "json": {
                "aggs": {
                    "studies": {"cardinality": {"field": "StudyInstanceUID"}},
                    "sex": {"terms": {"field": "PatientSex"}},
                }
            }
        },
    ),
    ("GET", "/api/meta/fields/PatientID/values", {}),
    ("GET", "/api/meta/status", {}),
    ("GET", "/api/meta/errors", {}),
    ("GET", "/api/meta/cohorts", {}),
    ("GET", "/api/flow/runs", {}),
    ("GET", "/api/flow/rules", {}),
    ("GET", "/api/flow/rules/every-series", {}),
    ("GET", "/api/flow/rules/every-series/firings", {}),
]


def _listings(world: World, user: str) -> list[Any]:
    answers = []
    for method, url, kwargs in LISTINGS:
        response = world.call(user, method, url, **kwargs)
        assert response.status_code in (200, 204), (url, response.text)
        answers.append((url, kwargs, response.json() if response.content else None))
    return answers


def _grow_a(world: World, tmp_path: Path) -> None:
    """More of A: a series of a new patient (one instance failing to index) that a rule
    fires on, a cohort, a run."""
    grown = ingest_series(world.site.runtime, tmp_path / "grow", series_datasets(5), "LIVER_CT")
    world.site.index()
    assert grown.series in _evaluate_rules(world)
    world.site.runtime.catalog.mark_indexed([grown.sops[0]], error="another unreadable header")
    _ok(world.as_a("POST", "/api/meta/cohorts", json={"name": "second", "project": A}), 201)
    _ok(
        world.as_a("POST", f"/api/flow/workflows/{WORKFLOW}/runs", json={"series": [grown.series]}),
        201,
    )


@pytest.mark.parametrize("catalog_url", ON_EVERY_CATALOG, indirect=True)
@pytest.mark.parametrize("role", sorted(CALLERS))
def test_lists_searches_and_counts_do_not_grow_with_the_other_projects_data(
    world: World, tmp_path: Path, role: str
) -> None:
    user = CALLERS[role]
    before = _listings(world, user)
    _grow_a(world, tmp_path)
    after = _listings(world, user)
    for was, now in zip(before, after, strict=True):
        assert was == now, (was, now)
    # A's members see the growth, so the listings do measure it.
    assert _listings(world, "alice") != _listings(world, "bob")
