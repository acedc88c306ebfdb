"""``PUT /api/flow/runs/{run}/files/{name}`` with authentication on: only the run's own
token stores a result file (streamed into the result store and recorded in one call);
everyone else is refused and nothing is stored; bad names are a 400, bodies over
``flow.api.max_file_bytes`` a 413; the same name again replaces the file cleanly."""

# The tests take test_access's ``site`` fixture (a site with auth on and a fake engine).
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
from tests.base.support import auth_for, bearer
from tests.flow.test_access import Site, _started, site  # noqa: F401

from jip.base import AuditFilter, AuditLog
from jip.flow import records

OCTETS = {"Content-Type": "application/octet-stream"}


def _root(site: Site) -> Path:
    return Path(site.runtime.settings.resolved_results_url.removeprefix("file://"))


def _stored_files(site: Site, run_id: str) -> list[Path]:
    folder = _root(site) / "runs" / run_id
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _put(
    site: Site, run_id: str, name: str, body: bytes | Iterator[bytes], headers: dict[str, str]
) -> httpx.Response:
    return site.client.put(
        f"/api/flow/runs/{run_id}/files/{name}",
        content=body,
        params={"series": site.ct.series_instance_uid, "operator": "radiomics"},
        headers={**OCTETS, **headers},
    )


def test_only_the_runs_own_token_stores_a_file(site: Site) -> None:
    run_id = _started(site, "rita", site.ct)
    other_run = _started(site, "rita", site.ct)
    name = f"{site.ct.series_instance_uid}/radiomics.csv"
    refused = {
        "no token": {},
        "another run's token": bearer(site.fake.run_tokens[other_run]),
        "a viewer": auth_for(site.client, "vera"),
        "a researcher of the project": auth_for(site.client, "rita"),
        "a site admin": auth_for(site.client, "admin"),
    }
    for who, headers in refused.items():
        answer = _put(site, run_id, name, b"planted", headers)
        assert answer.status_code in (401, 403), (who, answer.status_code, answer.text)
    assert _stored_files(site, run_id) == []
    assert records.list_results(site.runtime.engine, run_id) == []

    token = bearer(site.fake.run_tokens[run_id])
    answer = _put(site, run_id, name, b"feature,value\nvolume,12\n", token)
    assert answer.status_code == 201, answer.text
    stored = answer.json()
    assert stored["kind"] == "file" and stored["name"] == name
    assert stored["key"] == f"runs/{run_id}/{name}" and stored["size_bytes"] == 24
    assert stored["series_instance_uid"] == site.ct.series_instance_uid
    rita = auth_for(site.client, "rita")
    download = site.client.get(stored["url"], headers=rita)
    assert download.status_code == 200 and download.content == b"feature,value\nvolume,12\n"
    entries = AuditLog(site.runtime.engine).list(AuditFilter(action="flow.result.file"))
    assert [(e.target, e.detail["name"]) for e in entries] == [(f"run:{run_id}", name)]

    # A retried task sends the same name again: the file and its size are replaced, the
    # record is the same one, and nothing is left behind in the spool.
    again = _put(site, run_id, name, b"feature,value\nvolume,13.5\n", token)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == stored["id"] and again.json()["size_bytes"] == 26
    (only,) = records.list_results(site.runtime.engine, run_id)
    assert only.size_bytes == 26
    assert site.client.get(stored["url"], headers=rita).content == b"feature,value\nvolume,13.5\n"
    assert _stored_files(site, run_id) == [_root(site) / stored["key"]]
    assert not list((site.runtime.settings.data_dir / "tmp").glob("result-*"))


def test_bad_names_are_refused_and_store_nothing(site: Site) -> None:
    run_id = _started(site, "rita", site.ct)
    token = bearer(site.fake.run_tokens[run_id])
    for name in ("%2E%2E/x.csv", "a/%2E%2E/%2E%2E/x.csv", ".hidden.csv", "a/.git/x", "a//b.csv",
                 "%2Fetc/passwd", "a%5Cb.csv", "x" * 300):  # fmt: skip
        answer = _put(site, run_id, name, b"x", token)
        assert answer.status_code == 400, (name, answer.status_code, answer.text)
        assert "relative path" in answer.json()["detail"]
    foreign = site.client.put(
        f"/api/flow/runs/{run_id}/files/x.csv",
        content=b"x",
        params={"series": site.other.series_instance_uid, "operator": "radiomics"},
        headers={**OCTETS, **token},
    )
    assert foreign.status_code in (400, 404), foreign.text
    assert _stored_files(site, run_id) == []
    assert records.list_results(site.runtime.engine, run_id) == []


def test_a_file_over_the_limit_is_413_and_stores_nothing(site: Site) -> None:
    site.runtime.settings.flow.api.max_file_bytes = 1000
    run_id = _started(site, "rita", site.ct)
    token = bearer(site.fake.run_tokens[run_id])
    name = f"{site.ct.series_instance_uid}/big.bin"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b"y" * 400

    for body in (b"x" * 1001, chunked()):
        answer = _put(site, run_id, name, body, token)
        assert answer.status_code == 413, answer.text
        assert "flow.api.max_file_bytes" in answer.json()["detail"]
    assert _stored_files(site, run_id) == []
    assert records.list_results(site.runtime.engine, run_id) == []
    assert not list((site.runtime.settings.data_dir / "tmp").glob("result-*"))
    assert _put(site, run_id, name, b"x" * 1000, token).status_code == 201


def test_a_file_over_the_json_body_cap_streams_through_but_only_on_this_route(
    site: Site,
) -> None:
    """``http.max_json_body_bytes`` (1 MiB) caps small bodies; a result file is raw bytes
    that the route spools under its own limit, so only this route lets them through."""
    run_id = _started(site, "rita", site.ct)
    token = bearer(site.fake.run_tokens[run_id])
    big = b"z" * (2 * 1024 * 1024)
    answer = _put(site, run_id, f"{site.ct.series_instance_uid}/map.nii.gz", big, token)
    assert answer.status_code == 201, answer.text
    assert answer.json()["size_bytes"] == len(big)
    elsewhere = site.client.post(
        f"/api/flow/runs/{run_id}/results", content=big, headers={**OCTETS, **token}
    )
    assert elsewhere.status_code == 413, elsewhere.text
