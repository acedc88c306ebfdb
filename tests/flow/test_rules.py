"""Auto-rules on a fake workflow engine: completeness, matching, once per series, provenance."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from jip_sdk.phantom import build_abdomen_phantom
from sqlalchemy import update
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.flow.support import ingest_phantom

from jip.config import AuthSettings, Settings
from jip.errors import Invalid
from jip.flow import records, rules
from jip.flow.models import RuleIn
from jip.flow.schema import ResultKind
from jip.flow.service import FlowService
from jip.flow.worker.runner import repository_operators_dir
from jip.meta import SeriesMatcher
from jip.runtime import Runtime, build_runtime
from jip.store.catalog.tables import Series

QUIET_S = 60.0
CT_QUERY = {"bool": {"filter": [{"term": {"Modality": "CT"}}, {"term": {"BodyPartExamined": "ABDOMEN"}}]}}


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(Settings(data_dir=tmp_path / "site", auth=AuthSettings(enabled=False)))
    yield runtime
    runtime.close()


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine(series_workflow("deidentify", "deidentify"))


@pytest.fixture
def evaluator(runtime: Runtime, fake: FakeEngine) -> rules.RuleEvaluator:
    service = FlowService(db=runtime.engine, engine=fake, operators_dir=repository_operators_dir())
    matcher = SeriesMatcher(catalog=runtime.catalog, storage=runtime.storage)
    return rules.RuleEvaluator(service=service, matcher=matcher, quiet_period_s=QUIET_S)


def ingest(runtime: Runtime, tmp_path: Path, name: str, **kwargs: Any) -> str:
    series = ingest_phantom(runtime, build_abdomen_phantom(shape=(4, 64, 64)), tmp_path / name, **kwargs)
    return series.series_instance_uid


def later(seconds: float) -> Any:
    return records.now() + timedelta(seconds=seconds)


def add(runtime: Runtime, **kwargs: Any) -> int:
    rule = RuleIn(name=kwargs.pop("name", "ct-deid"), dag_id="deidentify", **kwargs)
    return rules.add_rule(runtime.engine, rule, user="admin").id


def test_series_fires_once_it_is_quiet_and_only_once(
    runtime: Runtime, evaluator: rules.RuleEvaluator, fake: FakeEngine, tmp_path: Path
) -> None:
    rule_id = add(runtime, query=CT_QUERY)
    uid = ingest(runtime, tmp_path, "a")
    assert evaluator.evaluate() == []  # still arriving: not complete yet
    fired = evaluator.evaluate(now=later(QUIET_S + 1))
    assert [(f.series_instance_uid, f.outcome) for f in fired] == [(uid, "started")]
    (run,) = fake.runs.values()
    assert run.conf["series"] == [uid]
    assert records.find_run(runtime.engine, run.run_id).rule_id == rule_id  # type: ignore[union-attr]
    # New instances make the series "updated" again; it still fired once.
    with runtime.engine.begin() as conn:
        conn.execute(update(Series).values(updated_at=later(5)))
    assert evaluator.evaluate(now=later(QUIET_S + 10)) == []
    assert len(fake.runs) == 1
    assert rules.get_rule(runtime.engine, rule_id).firings == 1


def test_series_that_do_not_match_do_not_fire(
    runtime: Runtime, evaluator: rules.RuleEvaluator, fake: FakeEngine, tmp_path: Path
) -> None:
    add(runtime, query={"term": {"Modality": "MR"}})
    ingest(runtime, tmp_path, "a")
    assert evaluator.evaluate(now=later(QUIET_S + 1)) == []
    assert fake.runs == {}


def test_results_of_the_rules_runs_never_fire_it_again(
    runtime: Runtime, evaluator: rules.RuleEvaluator, fake: FakeEngine, tmp_path: Path
) -> None:
    add(runtime, query=CT_QUERY)
    source = ingest(runtime, tmp_path, "a")
    (fired,) = evaluator.evaluate(now=later(QUIET_S + 1))
    # The run's result: a CT series matching the query just as its source did.
    result = ingest(runtime, tmp_path, "b")
    records.add_results(
        runtime.engine,
        [records.ResultRecord(id=None, run_id=fired.run_id or "", series_instance_uid=source,
                              operator="deidentify", kind=ResultKind.DICOM, key=result,
                              name=result, size_bytes=1, result_series_uid=result)],
    )  # fmt: skip
    assert evaluator.matcher.matching(CT_QUERY, [result]) == {result}
    assert evaluator.evaluate(now=later(2 * QUIET_S)) == []
    assert len(fake.runs) == 1
    # Another rule is free to act on it.
    add(runtime, name="other", query=CT_QUERY)
    with runtime.engine.begin() as conn:  # created before the result arrived
        conn.execute(update(Series).values(updated_at=later(10)))
    fired_other = evaluator.evaluate(now=later(3 * QUIET_S))
    assert {f.series_instance_uid for f in fired_other} == {source, result}


def test_a_down_engine_postpones_instead_of_failing(
    runtime: Runtime, evaluator: rules.RuleEvaluator, fake: FakeEngine, tmp_path: Path
) -> None:
    add(runtime, query=CT_QUERY)
    uid = ingest(runtime, tmp_path, "a")
    fake.available = False
    assert evaluator.evaluate(now=later(QUIET_S + 1)) == []
    fake.available = True
    fired = evaluator.evaluate(now=later(QUIET_S + 2))
    assert [f.series_instance_uid for f in fired] == [uid]


def test_disabled_rules_do_not_fire(
    runtime: Runtime, evaluator: rules.RuleEvaluator, fake: FakeEngine, tmp_path: Path
) -> None:
    rule_id = add(runtime, query=CT_QUERY, enabled=False)
    ingest(runtime, tmp_path, "a")
    assert evaluator.evaluate(now=later(QUIET_S + 1)) == []
    rules.set_enabled(runtime.engine, rule_id, True)
    assert rules.get_rule(runtime.engine, rule_id).enabled


def test_rule_queries_use_the_cohort_language(runtime: Runtime) -> None:
    with pytest.raises(Invalid, match="unknown query clause 'sql'"):
        add(runtime, query={"sql": "SELECT 1"})


def test_matching_reads_the_sites_index_once_it_holds_the_whole_series(
    runtime: Runtime, tmp_path: Path
) -> None:
    from jip.meta.index_sqlite import SqliteIndex

    uid = ingest(runtime, tmp_path, "a")
    index = SqliteIndex(":memory:")
    # The index says MR (as if re-labelled); the headers say CT.
    index.upsert([{"SeriesInstanceUID": uid, "Modality": "MR"}])
    matcher = SeriesMatcher(catalog=runtime.catalog, storage=runtime.storage, index=index)
    mr = {"term": {"Modality": "MR"}}
    assert matcher.matching(mr, [uid]) == set()  # instances not indexed yet: headers
    instances = [i.sop_instance_uid for i in runtime.catalog.instances_of_series(uid)]
    runtime.catalog.mark_indexed(instances)
    assert matcher.matching(mr, [uid]) == {uid}  # fully indexed: the index answers
    index.close()
