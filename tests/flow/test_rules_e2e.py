"""An auto-rule end to end: a series arrives, goes quiet, starts its workflow exactly once.

The rule de-identifies thin-slice abdominal CT. Its results are de-identified CT series
that match the rule's query just as their source did; they must not start it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from jip_sdk.phantom import build_abdomen_phantom
from tests.flow.conftest import Site
from tests.flow.support import ingest_phantom, wait_for, wait_for_run

from jip.embedded import rule_component
from jip.flow.component import RuleComponent
from jip.meta import SeriesMatcher

pytestmark = pytest.mark.slow

RULE = "thin-ct-deid"
QUERY = {
    "bool": {
        "filter": [
            {"term": {"Modality": "CT"}},
            {"term": {"BodyPartExamined": "ABDOMEN"}},
            {"range": {"SliceThickness": {"lte": 4}}},
        ]
    }
}


@pytest.fixture
def rules_running(site: Site) -> Iterator[RuleComponent]:
    component = rule_component(site.settings)
    component.start()
    yield component
    component.stop()


def _firings(site: Site) -> list[dict[str, Any]]:
    answer = site.api.get(f"/api/flow/rules/{RULE}/firings")
    assert answer.status_code == 200, answer.text
    firings: list[dict[str, Any]] = answer.json()
    return firings


def test_quiet_series_starts_the_rule_once_and_its_results_do_not(
    site: Site, rules_running: RuleComponent, tmp_path_factory: pytest.TempPathFactory
) -> None:
    added = site.api.post(
        "/api/flow/rules", json={"name": RULE, "dag_id": "deidentify", "query": QUERY}
    )
    assert added.status_code == 201, added.text
    phantom = build_abdomen_phantom(shape=(12, 64, 64), spacing_mm=(6.0, 6.0, 4.0))
    source = ingest_phantom(site.runtime, phantom, tmp_path_factory.mktemp("rule") / "ct")

    fired = wait_for("the rule to fire", lambda: [f for f in _firings(site) if f["run_id"]] or None)
    assert [f["series_instance_uid"] for f in fired] == [source.series_instance_uid]
    run_id = fired[0]["run_id"]
    assert wait_for_run(site.api, run_id)["state"] == "success"
    run = site.api.get(f"/api/flow/runs/{run_id}").json()
    assert run["rule_id"] == added.json()["id"]

    (result,) = [r for r in site.api.get(f"/api/flow/runs/{run_id}/results").json()]
    copy_uid = result["result_series_uid"]
    assert result["modality"] == "CT" and copy_uid != source.series_instance_uid
    matcher = SeriesMatcher(catalog=site.runtime.catalog, storage=site.runtime.storage)
    assert matcher.matching(QUERY, [copy_uid]) == {copy_uid}  # it would match ...

    # ... and had every chance: quiet period plus several evaluation passes.
    settle_s = site.settings.meta.series_quiet_period_s + 5 * site.settings.flow.rule_interval_s
    time.sleep(settle_s + 2)
    assert rules_running.last_error is None
    assert len(_firings(site)) == 1
    rule_runs = [r for r in site.api.get("/api/flow/runs", params={"dag_id": "deidentify"}).json()
                 if r["rule_id"] == added.json()["id"]]  # fmt: skip
    assert [r["run_id"] for r in rule_runs] == [run_id]
    listed = {r["name"]: r for r in site.api.get("/api/flow/rules").json()}
    assert listed[RULE]["firings"] == 1
