"""`jip forward …` against a real site (uvicorn) with auth on, Orthanc 1.10 as the peer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tests.base.conftest import cheap_password_hashing  # noqa: F401  (autouse)
from tests.store.conftest import Orthanc, make_orthanc  # noqa: F401  (fixture)
from tests.store.test_forward_send import series_in
from tests.support.send_site import SendSite, send_site
from tests.support.servers import serve_in_thread

from jip.cli.main import _register, cli
from jip.flow.forwarding import enqueue, get_rule, items, mark_failed
from jip.flow.forwarding_schema import ForwardRule

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def orthanc(make_orthanc: Callable[..., Orthanc]) -> Orthanc:  # noqa: F811
    return make_orthanc({})


@pytest.fixture
def site(tmp_path: Path, orthanc: Orthanc) -> SendSite:
    return send_site(tmp_path / "data", peers={"pacs": orthanc.peer()})


@pytest.fixture
def jip(
    site: SendSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Result]]:
    """Runs `jip ARGS --url <site>` as ``user`` (their token in JIP_API_TOKEN)."""
    _register()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no stored login
    with serve_in_thread(site.client.app) as origin:  # type: ignore[arg-type]

        def run(*args: str, user: str = "root") -> Result:
            token = site.headers[user]["Authorization"].removeprefix("Bearer ")
            env = {"JIP_API_TOKEN": token, "JIP_DATA_DIR": str(tmp_path / "cli")}
            return CliRunner().invoke(cli, [*args, "--url", origin], env=env)

        yield run


def test_forward_send_puts_a_series_on_the_peer_with_progress(
    site: SendSite, orthanc: Orthanc, jip: Callable[..., Result]
) -> None:
    liver = site.series["liver"]
    result = jip("forward", "send", "pacs", "--series", liver.series)
    assert result.exit_code == 0, result.output
    assert liver.series in result.output and "Sending to pacs" in result.output
    assert len(series_in(orthanc, liver.series)) == len(liver.sops)
    refused = jip("forward", "send", "pacs", "--series", liver.series, user="alice")
    assert refused.exit_code == 1 and "may not send" in refused.output
    unnamed = jip("forward", "send", "pacs")
    assert unnamed.exit_code == 2 and "exactly one of --series, --cohort, --run" in unnamed.output


def test_forward_rules_and_dead_letters_from_the_command_line(
    site: SendSite, jip: Callable[..., Result]
) -> None:
    added = jip("forward", "rules", "add", "pt", "--peer", "pacs", "--query", '{"term": {"Modality": "PT"}}')  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "sends to pacs" in added.output
    bad = jip("forward", "rules", "add", "x", "--peer", "pacs", "--query", "{nope")
    assert bad.exit_code == 2 and "not valid JSON" in bad.output
    listed = jip("forward", "rules", "list")
    assert "pt" in listed.output and "Modality" in listed.output
    assert jip("forward", "rules", "list", user="sam").exit_code == 1  # admins only

    db = site.runtime.engine
    rule = get_rule(db, 1)
    enqueue(db, ForwardRule(id=rule.id, peer=rule.peer), [site.series["liver"].series])
    [item] = items(db)
    mark_failed(db, item, "cannot reach ORTHANC", max_attempts=1, backoff=timedelta(0))
    dead = jip("forward", "dead")
    assert site.series["liver"].series in dead.output and "cannot reach ORTHANC" in dead.output
    retried = jip("forward", "retry", str(item.id))
    assert retried.exit_code == 0 and "queued again" in retried.output
    assert jip("forward", "dead", "--json").output.strip() == "[]"
    removed = jip("forward", "rules", "remove", str(rule.id))
    assert removed.exit_code == 0 and "removed" in removed.output
