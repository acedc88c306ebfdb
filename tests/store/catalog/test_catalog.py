"""The catalog on SQLite and PostgreSQL (``catalog_url``): rows, duplicates, deletion,
the META outbox, concurrent writers and the Alembic migrations."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError

from jip.db import Base, make_engine
from jip.errors import NotFound
from jip.migrations import alembic_config, upgrade
from jip.store.catalog.catalog import (
    AddOutcome,
    AddResult,
    Catalog,
    DuplicatePolicy,
    NewInstance,
)
from jip.store.catalog.group_commit import GroupCommitter
from jip.store.catalog.projects import SeriesProjects
from jip.store.catalog.tables import Instance, Patient, Series, Study
from jip.store.dicom_file import InstanceHeader

STUDY = "1.2.826.0.1.3680043.9.7433.1"
SERIES = f"{STUDY}.1"


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    upgrade(catalog_url)
    engine = make_engine(catalog_url)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(engine: Engine) -> Catalog:
    return Catalog(engine)


def header(
    sop: str,
    *,
    series: str = SERIES,
    study: str = STUDY,
    patient_id: str = "PAT-1",
    **fields: Any,
) -> InstanceHeader:
    return InstanceHeader(
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_instance_uid=series,
        study_instance_uid=study,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        patient_id=patient_id,
        **fields,
    )


def instance(h: InstanceHeader, content: bytes = b"first") -> NewInstance:
    sha = hashlib.sha256(h.sop_instance_uid.encode() + content).hexdigest()
    key = f"{h.study_instance_uid}/{h.series_instance_uid}/{h.sop_instance_uid}.{sha[:16]}.dcm"
    return NewInstance(header=h, size_bytes=len(content), sha256=sha, blob_key=key)


def sop(n: int) -> str:
    return f"{SERIES}.{n}"


# -- add -----------------------------------------------------------------------------------
def test_add_stores_patient_study_series_and_instance_rows(catalog: Catalog) -> None:
    first = header(
        sop(1),
        patient_name="Doe^Jane",
        patient_birth_date="19700101",
        patient_sex="F",
        study_date="20240131",
        accession_number="ACC1",
        study_description="CT Thorax",
        modality="CT",
        series_number=3,
        body_part_examined="CHEST",
        instance_number=1,
        rows=512,
        columns=512,
        bits_allocated=16,
        number_of_frames=1,
    )
    second = header(sop(2), series=f"{STUDY}.2", modality="SEG", instance_number=1)
    items = [instance(first), instance(second)]
    results = catalog.add(items)
    assert [r.outcome for r in results] == [AddOutcome.STORED, AddOutcome.STORED]
    assert all(r.displaced_blob_key is None for r in results)
    assert catalog.counts() == {
        "patients": 1,
        "studies": 1,
        "series": 2,
        "instances": 2,
        "conflicts": 0,
    }
    stored = catalog.instance(sop(1))
    assert stored.series_instance_uid == SERIES
    assert stored.study_instance_uid == STUDY
    assert stored.blob_key == items[0].blob_key
    assert stored.size_bytes == items[0].size_bytes
    assert stored.number_of_frames == 1
    with catalog.engine.connect() as conn:
        patient = conn.execute(select(Patient)).one()
        assert (patient.patient_id, patient.patient_name, patient.patient_sex) == (
            "PAT-1",
            "Doe^Jane",
            "F",
        )
        study = conn.execute(select(Study)).one()
        assert (study.patient_pk, study.study_date, study.accession_number) == (
            patient.pk,
            "20240131",
            "ACC1",
        )
        series = conn.execute(select(Series).order_by(Series.series_instance_uid)).all()
        assert [(s.modality, s.series_number) for s in series] == [("CT", 3), ("SEG", None)]
        row = conn.execute(select(Instance).where(Instance.sop_instance_uid == sop(1))).one()
        assert (row.rows, row.columns, row.bits_allocated, row.sha256) == (
            512,
            512,
            16,
            items[0].sha256,
        )
        assert row.indexed_at is None
    assert [i.sop_instance_uid for i in catalog.instances_of_study(STUDY)] == [sop(1), sop(2)]
    assert [i.sop_instance_uid for i in catalog.instances_of_series(SERIES)] == [sop(1)]


def test_unknown_uids_are_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match=r"9\.9\.9"):
        catalog.instance("9.9.9")
    with pytest.raises(NotFound):
        catalog.instances_of_series("9.9.9")
    with pytest.raises(NotFound):
        catalog.instances_of_study("9.9.9")


def test_a_second_instance_of_a_series_refreshes_its_updated_at(catalog: Catalog) -> None:
    catalog.add([instance(header(sop(1)))])
    with catalog.engine.connect() as conn:
        before = conn.execute(select(Series.updated_at)).scalar_one()
    time.sleep(0.01)
    catalog.add([instance(header(sop(2)))])
    with catalog.engine.connect() as conn:
        after = conn.execute(select(Series.updated_at)).scalar_one()
    assert after > before


def test_a_duplicate_leaves_its_series_updated_at_alone(catalog: Catalog) -> None:
    # A series is complete after a quiet period without new instances; a resent
    # instance is nothing new.
    item = instance(header(sop(1)))
    catalog.add([item])
    with catalog.engine.connect() as conn:
        before = conn.execute(select(Series.updated_at)).scalar_one()
    time.sleep(0.01)
    assert catalog.add([item]) == [AddResult(AddOutcome.DUPLICATE)]
    assert catalog.add([instance(header(sop(1)), b"other")])[0].outcome is AddOutcome.CONFLICT
    with catalog.engine.connect() as conn:
        assert conn.execute(select(Series.updated_at)).scalar_one() == before


def test_a_known_series_under_another_patient_id_records_the_patient_as_before(
    catalog: Catalog,
) -> None:
    catalog.add([instance(header(sop(1)))])
    catalog.add([instance(header(sop(2), patient_id="PAT-OTHER"))])
    assert catalog.counts() == {
        "patients": 2,
        "studies": 1,
        "series": 1,
        "instances": 2,
        "conflicts": 0,
    }


def test_duplicate_with_the_same_bytes_is_idempotent(catalog: Catalog) -> None:
    item = instance(header(sop(1)))
    assert catalog.add([item]) == [AddResult(AddOutcome.STORED)]
    assert catalog.add([item]) == [AddResult(AddOutcome.DUPLICATE)]
    assert catalog.add([item, item]) == [AddResult(AddOutcome.DUPLICATE)] * 2
    assert catalog.counts()["instances"] == 1
    assert catalog.counts()["conflicts"] == 0


def test_same_uid_twice_in_one_batch_is_stored_once(catalog: Catalog) -> None:
    item = instance(header(sop(1)))
    results = catalog.add([item, item])
    assert [r.outcome for r in results] == [AddOutcome.STORED, AddOutcome.DUPLICATE]
    assert catalog.counts()["instances"] == 1


def test_conflicting_bytes_keep_the_first_and_record_a_conflict(catalog: Catalog) -> None:
    first = instance(header(sop(1)), b"first")
    second = instance(header(sop(1)), b"second, different")
    catalog.add([first])
    [result] = catalog.add([second], DuplicatePolicy.KEEP_FIRST)
    assert result == AddResult(AddOutcome.CONFLICT, displaced_blob_key=second.blob_key)
    stored = catalog.instance(sop(1))
    assert (stored.blob_key, stored.size_bytes) == (first.blob_key, first.size_bytes)
    [conflict] = catalog.conflicts()
    assert conflict["sop_instance_uid"] == sop(1)
    assert conflict["stored_sha256"] == first.sha256
    assert conflict["received_sha256"] == second.sha256
    assert conflict["quarantine_key"] == second.blob_key
    assert conflict["resolution"] == "conflict"
    assert catalog.counts()["instances"] == 1


def test_overwrite_policy_replaces_the_instance_and_records_it(catalog: Catalog) -> None:
    first = instance(header(sop(1)), b"first")
    second = instance(header(sop(1)), b"second, different")
    catalog.add([first])
    catalog.mark_indexed([sop(1)])
    [result] = catalog.add([second], DuplicatePolicy.OVERWRITE)
    assert result == AddResult(AddOutcome.OVERWRITTEN, displaced_blob_key=first.blob_key)
    stored = catalog.instance(sop(1))
    assert (stored.blob_key, stored.size_bytes) == (second.blob_key, second.size_bytes)
    # The new bytes need indexing again.
    assert [i.sop_instance_uid for i in catalog.unindexed(10)] == [sop(1)]
    [conflict] = catalog.conflicts()
    assert conflict["resolution"] == "overwritten"
    assert conflict["quarantine_key"] == first.blob_key
    assert catalog.counts()["instances"] == 1


# -- deletion ------------------------------------------------------------------------------
def _two_patients(catalog: Catalog) -> dict[str, NewInstance]:
    items = {
        "a1": instance(header(sop(1))),
        "a2": instance(header(sop(2), series=f"{STUDY}.2")),
        "b1": instance(header("1.9.1.1.1", series="1.9.1.1", study="1.9.1", patient_id="PAT-2")),
    }
    catalog.add(list(items.values()))
    return items


def test_delete_study_removes_its_rows_returns_blob_keys_and_prunes_the_patient(
    catalog: Catalog,
) -> None:
    items = _two_patients(catalog)
    keys = catalog.delete_study(STUDY)
    assert sorted(keys) == sorted([items["a1"].blob_key, items["a2"].blob_key])
    assert catalog.counts() == {
        "patients": 1,
        "studies": 1,
        "series": 1,
        "instances": 1,
        "conflicts": 0,
    }
    with catalog.engine.connect() as conn:
        assert conn.execute(select(Patient.patient_id)).scalars().all() == ["PAT-2"]
    with pytest.raises(NotFound):
        catalog.instance(sop(1))
    with pytest.raises(NotFound):
        catalog.delete_study(STUDY)
    assert catalog.instance("1.9.1.1.1").blob_key == items["b1"].blob_key


def test_delete_study_keeps_a_patient_with_other_studies(catalog: Catalog) -> None:
    other_study = header("1.7.1.1", series="1.7.1", study="1.7")
    catalog.add([instance(header(sop(1))), instance(other_study)])
    catalog.delete_study(STUDY)
    assert catalog.counts()["patients"] == 1
    assert catalog.counts()["studies"] == 1


def test_delete_series_keeps_the_study_until_its_last_series_goes(catalog: Catalog) -> None:
    items = _two_patients(catalog)
    assert catalog.delete_series(SERIES) == [items["a1"].blob_key]
    assert catalog.counts() == {
        "patients": 2,
        "studies": 2,
        "series": 2,
        "instances": 2,
        "conflicts": 0,
    }
    assert catalog.delete_series(f"{STUDY}.2") == [items["a2"].blob_key]
    assert catalog.counts()["studies"] == 1
    assert catalog.counts()["patients"] == 1
    with pytest.raises(NotFound):
        catalog.instances_of_study(STUDY)
    with pytest.raises(NotFound):
        catalog.delete_series(SERIES)


def test_a_deleted_instance_can_be_received_again(catalog: Catalog) -> None:
    item = instance(header(sop(1)))
    catalog.add([item])
    catalog.delete_study(STUDY)
    assert catalog.add([item]) == [AddResult(AddOutcome.STORED)]
    assert catalog.counts()["instances"] == 1


# -- outbox --------------------------------------------------------------------------------
def test_outbox_hands_out_unindexed_instances_until_marked(catalog: Catalog) -> None:
    for n in range(1, 6):
        catalog.add([instance(header(sop(n)))])
    assert {i.sop_instance_uid for i in catalog.unindexed(3)} == {sop(1), sop(2), sop(3)}
    assert len(catalog.unindexed(100)) == 5
    catalog.mark_indexed([sop(1), sop(2)])
    catalog.mark_indexed([sop(3)], error="cannot parse header")
    assert {i.sop_instance_uid for i in catalog.unindexed(100)} == {sop(4), sop(5)}
    with catalog.engine.connect() as conn:
        rows = dict(conn.execute(select(Instance.sop_instance_uid, Instance.index_error)).all())
    assert rows[sop(3)] == "cannot parse header"
    assert rows[sop(1)] is None
    catalog.add([instance(header(sop(6)))])
    assert {i.sop_instance_uid for i in catalog.unindexed(100)} == {sop(4), sop(5), sop(6)}
    catalog.mark_indexed([sop(4), sop(5), sop(6)])
    assert catalog.unindexed(100) == []


# -- concurrency ---------------------------------------------------------------------------
def _run_threads(count: int, work: Callable[[int], None]) -> None:
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        start.wait()
        try:
            work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def test_concurrent_adds_through_the_group_committer_land_exactly_once(
    catalog: Catalog,
) -> None:
    batches: list[int] = []

    def commit(items: Sequence[NewInstance]) -> list[AddResult]:
        batches.append(len(items))
        return catalog.add(items)

    committer: GroupCommitter[NewInstance, AddResult] = GroupCommitter(commit)
    shared = [instance(header(sop(n))) for n in range(40)]
    outcomes: Counter[tuple[str, AddOutcome]] = Counter()
    lock = threading.Lock()

    def sender(index: int) -> None:
        own = [
            instance(header(f"1.5.{index}.{n}", series="1.5.0.1", study="1.5")) for n in range(10)
        ]
        for item in shared + own:
            result = committer.submit(item)
            with lock:
                outcomes[(item.header.sop_instance_uid, result.outcome)] += 1

    try:
        _run_threads(6, sender)
    finally:
        committer.close()
    assert sum(batches) == 6 * 50
    for item in shared:
        uid = item.header.sop_instance_uid
        assert outcomes[(uid, AddOutcome.STORED)] == 1
        assert outcomes[(uid, AddOutcome.DUPLICATE)] == 5
    assert catalog.counts() == {
        "patients": 1,
        "studies": 2,
        "series": 2,
        "instances": 40 + 6 * 10,
        "conflicts": 0,
    }


def test_racing_writers_record_each_uid_once_and_every_other_copy_as_conflict(
    catalog_url: str, engine: Engine
) -> None:
    # Separate engines stand for separate listener processes, each with its own writer.
    writers = [Catalog(make_engine(catalog_url)) for _ in range(4)]
    outcomes: Counter[AddOutcome] = Counter()
    lock = threading.Lock()

    def write(index: int) -> None:
        for n in range(30):
            [result] = writers[index].add([instance(header(sop(n)), f"writer {index}".encode())])
            with lock:
                outcomes[result.outcome] += 1

    try:
        _run_threads(len(writers), write)
    finally:
        for writer in writers:
            writer.engine.dispose()
    assert outcomes == {AddOutcome.STORED: 30, AddOutcome.CONFLICT: 90}
    catalog = Catalog(engine)
    assert catalog.counts()["instances"] == 30
    assert catalog.counts()["conflicts"] == 90


def test_a_series_deleted_by_another_process_is_catalogued_anew(
    catalog_url: str, engine: Engine
) -> None:
    listener, api = Catalog(engine), Catalog(make_engine(catalog_url))
    try:
        listener.add([instance(header(sop(1)))])
        assert api.delete_series(SERIES) == [instance(header(sop(1))).blob_key]
        assert SeriesProjects(engine).projects_of([SERIES]) == {SERIES: set()}
        assert listener.add([instance(header(sop(2)))]) == [AddResult(AddOutcome.STORED)]
        assert listener.add([instance(header(sop(3)))]) == [AddResult(AddOutcome.STORED)]
    finally:
        api.engine.dispose()
    assert [i.sop_instance_uid for i in listener.instances_of_series(SERIES)] == [sop(2), sop(3)]
    assert listener.counts() == {
        "patients": 1,
        "studies": 1,
        "series": 1,
        "instances": 2,
        "conflicts": 0,
    }
    # Assigned again, as any new series is.
    assert SeriesProjects(engine).projects_of([SERIES]) == {SERIES: {"default"}}
    assert [i.sop_instance_uid for i in listener.unindexed(10)] == [sop(2), sop(3)]


def test_two_processes_filling_one_new_series_catalogue_it_once(
    catalog_url: str, engine: Engine
) -> None:
    writers = [Catalog(make_engine(catalog_url)) for _ in range(2)]
    outcomes: Counter[AddOutcome] = Counter()
    lock = threading.Lock()

    def write(index: int) -> None:
        for n in range(25):
            item = instance(header(sop(100 * index + n)))
            [result] = writers[index].add([item])
            with lock:
                outcomes[result.outcome] += 1

    try:
        _run_threads(len(writers), write)
    finally:
        for writer in writers:
            writer.engine.dispose()
    assert outcomes == {AddOutcome.STORED: 50}
    catalog = Catalog(engine)
    assert catalog.counts() == {
        "patients": 1,
        "studies": 1,
        "series": 1,
        "instances": 50,
        "conflicts": 0,
    }
    assert SeriesProjects(engine).projects_of([SERIES]) == {SERIES: {"default"}}
    assert len(catalog.unindexed(100)) == 50


def test_a_lone_sender_commits_on_its_own_thread(catalog: Catalog) -> None:
    threads: list[int] = []

    def commit(items: Sequence[NewInstance]) -> list[AddResult]:
        threads.append(threading.get_ident())
        return catalog.add(items)

    committer: GroupCommitter[NewInstance, AddResult] = GroupCommitter(commit)
    for n in range(3):
        assert committer.submit(instance(header(sop(n)))) == AddResult(AddOutcome.STORED)
    committer.close()
    assert threads == [threading.get_ident()] * 3


def test_closing_the_group_committer_waits_for_the_commit_in_progress(catalog: Catalog) -> None:
    entered, release = threading.Event(), threading.Event()
    committed: list[bool] = []

    def commit(items: Sequence[NewInstance]) -> list[AddResult]:
        entered.set()
        release.wait(timeout=30)
        results = catalog.add(items)
        committed.append(True)
        return results

    committer: GroupCommitter[NewInstance, AddResult] = GroupCommitter(commit)
    sender = threading.Thread(target=committer.submit, args=(instance(header(sop(1))),))
    sender.start()
    assert entered.wait(timeout=30)
    seen_at_close: list[bool] = []

    def close() -> None:
        committer.close()
        seen_at_close.append(bool(committed))

    closer = threading.Thread(target=close)
    closer.start()
    time.sleep(0.05)  # let close() start waiting (it must not return before the commit)
    release.set()
    for thread in (sender, closer):
        thread.join(timeout=60)
    assert seen_at_close == [True]
    assert catalog.counts()["instances"] == 1


def test_a_bad_row_fails_only_its_own_sender(catalog: Catalog) -> None:
    entered, release = threading.Event(), threading.Event()
    batches: list[int] = []

    def commit(items: Sequence[NewInstance]) -> list[AddResult]:
        entered.set()
        release.wait(timeout=30)  # hold the writer so that the next senders share a batch
        batches.append(len(items))
        return catalog.add(items)

    committer: GroupCommitter[NewInstance, AddResult] = GroupCommitter(commit)
    good = [instance(header(sop(n))) for n in range(3)]
    bad = NewInstance(header(sop(99)), size_bytes=1, sha256=None, blob_key="x")  # type: ignore[arg-type]
    results: dict[str, AddResult | BaseException] = {}

    def send(item: NewInstance) -> None:
        try:
            results[item.header.sop_instance_uid] = committer.submit(item)
        except BaseException as exc:
            results[item.header.sop_instance_uid] = exc

    first = threading.Thread(target=send, args=(good[0],))
    first.start()
    assert entered.wait(timeout=30)
    others = [threading.Thread(target=send, args=(item,)) for item in (good[1], bad, good[2])]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 30
    while committer.pending() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in [first, *others]:
        thread.join(timeout=60)
    committer.close()
    assert 3 in batches, "the three later items were offered as one batch"
    assert isinstance(results[sop(99)], IntegrityError)
    for item in good:
        assert results[item.header.sop_instance_uid] == AddResult(AddOutcome.STORED)
    assert catalog.counts()["instances"] == 3


def test_a_closed_group_committer_refuses_new_items(catalog: Catalog) -> None:
    committer: GroupCommitter[NewInstance, AddResult] = GroupCommitter(catalog.add)
    committer.close()
    with pytest.raises(RuntimeError, match="closed"):
        committer.submit(instance(header(sop(1))))


# -- migrations ----------------------------------------------------------------------------
def test_alembic_upgrade_is_idempotent_and_matches_the_orm(catalog_url: str) -> None:
    upgrade(catalog_url)
    upgrade(catalog_url)  # a second run (every `jip up`) changes nothing
    head = ScriptDirectory.from_config(alembic_config(catalog_url)).get_current_head()
    engine = make_engine(catalog_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            assert [v[0] for v in versions] == [head]

            def ours(obj: Any, name: str | None, kind: str, reflected: bool, _: Any) -> bool:
                # Tables of models this process has not imported are another test's job.
                table = name if kind == "table" else getattr(obj, "table", None)
                table_name = getattr(table, "name", table)
                return table_name in Base.metadata.tables

            context = MigrationContext.configure(
                conn, opts={"include_object": ours, "compare_type": True}
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_a_driver_statement_stores_what_sqlalchemy_would_and_raises_its_errors(
    engine: Engine,
) -> None:
    """The ingest path's statements skip SQLAlchemy's compiler, not its types or errors."""
    from datetime import UTC, datetime

    from sqlalchemy import bindparam, insert

    from jip.db import DriverStatement

    table = Patient.__table__
    statement = insert(table).values(
        patient_id=bindparam("patient_id"), patient_name=bindparam("name"),
        patient_birth_date="", patient_sex="", created_at=bindparam("at", type_=table.c.created_at.type),
    )  # fmt: skip
    when = datetime(2026, 12, 6, 17, 45, 1, 123456, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(statement, {"patient_id": "BY-SQLALCHEMY", "name": "A^B", "at": when})
        driver = DriverStatement(statement)
        assert driver.execute(conn, {"patient_id": "BY-DRIVER", "name": "A^B", "at": when}) == 1
        rows = dict(conn.execute(select(Patient.patient_id, Patient.created_at)).tuples().all())
    assert rows["BY-DRIVER"] == rows["BY-SQLALCHEMY"]
    assert rows["BY-DRIVER"].replace(tzinfo=UTC) == when
    with pytest.raises(IntegrityError), engine.begin() as conn:  # the same id again
        driver.execute(conn, {"patient_id": "BY-DRIVER", "name": "A^B", "at": when})


def test_the_ingest_writer_survives_losing_its_connection(engine: Engine, catalog: Catalog) -> None:
    """It holds one connection between batches; a database restart must not fail a sender."""
    from jip.store.catalog.add import CatalogWriter

    writer = CatalogWriter(engine, DuplicatePolicy.KEEP_FIRST, "default")
    try:
        assert writer.add([instance(header(sop(1)))])[0].outcome is AddOutcome.STORED
        if engine.dialect.name == "postgresql":
            with engine.connect() as other:  # what a server restart does to the session
                other.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
        else:
            writer._conn.connection.dbapi_connection.close()  # type: ignore[union-attr]
        assert writer.add([instance(header(sop(2)))])[0].outcome is AddOutcome.STORED
    finally:
        writer.close()
    assert catalog.counts()["instances"] == 2
